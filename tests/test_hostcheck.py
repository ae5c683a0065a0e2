"""hostcheck: the requirement table, its report parsing, the host's binfmt probe, and real builder runs."""

from __future__ import annotations

import hashlib
import io
import tarfile
import textwrap
from pathlib import Path

import pytest

from helpers import BASE_IMAGE as BASE
from helpers import REPO
from rk3576_build.build import hostcheck as hc
from rk3576_build.build.container import Mount, run_step
from rk3576_build.core.errors import UserError
from rk3576_build.demo.sample_sdk import write_sample_sdk

AARCH64_ENTRY = ("enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: F\noffset 0\n"
                 "magic 7f454c460201010000000000000000000200b700\n"
                 "mask ffffffffffffff00fffffffffffffffffeffffff\n")


def binfmt_dir(root: Path, entry: str | None = AARCH64_ENTRY) -> Path:
    """A stand-in for /proc/sys/fs/binfmt_misc with the kernel's file format."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "status").write_text("enabled\n")
    (root / "register").write_text("")
    if entry is not None:
        (root / "qemu-aarch64").write_text(entry)
    return root


def ids(problems) -> list[str]:
    return [p.id for p in problems]


# --- no engine needed -----------------------------------------------------------------

def test_table_is_complete_and_consistent():
    by_id = {r.id: r for r in hc.REQUIREMENTS}
    assert len(by_id) == len(hc.REQUIREMENTS)
    assert {"python3", "libc6-dev", "lz4-favor-decspeed", "openssl-headers", "gmp-headers", "mpc-headers",
            "mke2fs-metadata-csum-seed", "qemu-aarch64-static", "binfmt-aarch64"} <= set(by_id)
    for req in hc.REQUIREMENTS:
        assert req.needed_by in (hc.ALL, hc.KERNEL, hc.ROOTFS) and req.where in (hc.BUILDER, hc.HOST)
        assert req.fix and req.title and req.probe
    assert by_id["binfmt-aarch64"].where == hc.HOST and "update-binfmts --enable qemu-aarch64" in \
        by_id["binfmt-aarch64"].fix
    assert "LZ4_SOURCE" in by_id["lz4-favor-decspeed"].fix


def test_parse_report_frames_each_probe():
    mark = hc._MARK
    log = (f"noise before\n{mark} begin a\nline 1\r\nline 2\n{mark} end a 0\n"
           f"{mark} begin sdk:check-kernel.sh\nYour lz4 is too old\n{mark} end sdk:check-kernel.sh 1\n"
           f"between\n{mark} begin b\npartial output\n")
    assert hc.parse_report(log) == {
        "a": (0, "line 1\nline 2"),
        "sdk:check-kernel.sh": (1, "Your lz4 is too old"),
        "b": (None, "partial output"),
    }
    problems = hc._problems(hc.parse_report(log), [hc.Requirement("b", hc.ALL, "B", "true", "fix b")],
                            [("check-kernel.sh", hc.KERNEL)], Path("/logs/x.log"))
    assert ids(problems) == ["b", "sdk-check-kernel"]
    assert "did not finish; see /logs/x.log" in problems[0].evidence
    assert problems[1].evidence == "Your lz4 is too old" and "exited 1" in problems[1].title


def test_script_frames_every_probe_and_sdk_script(tmp_path):
    scripts_dir = tmp_path / hc.SDK_SCRIPTS
    scripts_dir.mkdir(parents=True)
    for name in ("check-sdk.sh", "check-kernel.sh", "check-debian.sh", "check-package.sh"):
        (scripts_dir / name).write_text("#!/bin/bash\n")
    assert hc.sdk_check_scripts(tmp_path, needs_rootfs=False) == [
        ("check-sdk.sh", hc.ALL), ("check-kernel.sh", hc.KERNEL)]
    scripts = hc.sdk_check_scripts(tmp_path, needs_rootfs=True)
    assert scripts == [("check-sdk.sh", hc.ALL), ("check-kernel.sh", hc.KERNEL), ("check-debian.sh", hc.ROOTFS)]
    text = hc.probe_script(hc.REQUIREMENTS, tmp_path, scripts)
    for probe_id in [r.id for r in hc.REQUIREMENTS] + [f"sdk:{name}" for name, _ in scripts]:
        assert f"echo '{hc._MARK} begin {probe_id}'" in text
    assert "check-package.sh" not in text  # a helper that takes arguments, not a host check
    # By the rootfs targets the build runs: MYIR's ubuntu and upstream's rootfs use the Debian checks.
    for targets in (["ubuntu"], ["rootfs"], ["debian"]):
        assert hc.sdk_check_scripts(tmp_path, needs_rootfs=True, rootfs_systems=targets)[-1] == \
            ("check-debian.sh", hc.ROOTFS)
    assert hc.sdk_check_scripts(tmp_path, needs_rootfs=True, rootfs_systems=["buildroot"]) == [
        ("check-sdk.sh", hc.ALL), ("check-kernel.sh", hc.KERNEL)]


def test_host_binfmt_probe(tmp_path):
    assert hc.check_host(needs_rootfs=True, binfmt_dir=binfmt_dir(tmp_path / "ok")) == []
    assert hc.check_host(needs_rootfs=False, binfmt_dir=tmp_path / "absent") == []
    problems = hc.check_host(needs_rootfs=True, binfmt_dir=tmp_path / "absent")
    assert ids(problems) == ["binfmt-aarch64"] and "not mounted" in problems[0].evidence
    problems = hc.check_host(needs_rootfs=True, binfmt_dir=binfmt_dir(tmp_path / "none", entry=None))
    assert "no binfmt_misc entry for aarch64" in problems[0].evidence
    problems = hc.check_host(needs_rootfs=True, binfmt_dir=binfmt_dir(
        tmp_path / "off", entry=AARCH64_ENTRY.replace("enabled", "disabled")))
    assert "registered but disabled" in problems[0].evidence


def test_enforce_lists_each_fix_and_honours_accept(caplog):
    problems = [hc.HostProblem("lz4-favor-decspeed", hc.KERNEL, "lz4 title", "lz4 1.9.3", "fix lz4"),
                hc.HostProblem("sdk-check-debian", hc.ROOTFS, "debian title", "live-build too old", "fix it")]
    hc.enforce([], accepted=())
    with pytest.raises(UserError) as error:
        hc.enforce(problems)
    message = str(error.value)
    assert "lacks 2 requirement(s)" in message
    assert "[lz4-favor-decspeed] lz4 title" in message and "fix: fix lz4" in message
    assert "live-build too old" in message
    hc.enforce(problems, accepted=["lz4-favor-decspeed", "sdk-check-debian"])
    assert any(r.levelname == "WARNING" and "accepted by the recipe" in r.getMessage() for r in caplog.records)
    with pytest.raises(UserError, match="unknown id.*lz4"):
        hc.enforce(problems, accepted=["lz4"])


# --- in the real builder ----------------------------------------------------------------

def _sdk(root: Path) -> Path:
    """An SDK with the framework's check scripts: check-sdk.sh passes, check-kernel.sh fails,
    check-debian.sh (not executable: run with bash) verifies it runs as build.sh would run it."""
    scripts = root / hc.SDK_SCRIPTS
    scripts.mkdir(parents=True)
    (root / "output").mkdir()
    (root / "output/.config").write_text('RK_CHIP="rk3576"\nRK_DEBIAN_VERSION="bookworm"\n')
    (scripts / "check-sdk.sh").write_text("#!/bin/bash -e\necho sdk ok\n")
    (scripts / "check-kernel.sh").write_text(textwrap.dedent("""\
        #!/bin/bash -e
        echo -e "\\e[35m"
        echo "Your lz4 is too old for kernel: v1.9.3"
        echo "Please update it:"
        echo -e "\\e[0m"
        exit 1
        """))
    (scripts / "check-debian.sh").write_text(textwrap.dedent(f"""\
        [ "$(pwd)" = "{root}" ] || {{ echo "ran in $(pwd)"; exit 3; }}
        [ "$RK_DEBIAN_VERSION" = bookworm ] || {{ echo "no RK_DEBIAN_VERSION"; exit 4; }}
        [ -e /usr/share/live/build/data/debian-cd/$RK_DEBIAN_VERSION ] || exit 5
        touch output/probe 2>/dev/null && {{ echo "the SDK is writable"; exit 6; }}
        echo debian ok
        """))
    for name in ("check-sdk.sh", "check-kernel.sh"):
        (scripts / name).chmod(0o755)
    return root


@pytest.mark.docker
def test_curated_builder_meets_the_table_and_runs_sdk_scripts(builder_image, tmp_path):
    sdk = _sdk(tmp_path / "sdk")
    log = tmp_path / "logs/check.log"
    problems = hc.check_builder(builder_image.tag, sdk, needs_rootfs=True, log_path=log,
                                binfmt_dir=binfmt_dir(tmp_path / "binfmt"))
    # Every requirement of the table is met; only the SDK's failing script is reported, with its output.
    assert ids(problems) == ["sdk-check-kernel"], hc.format_problems(problems)
    assert "Your lz4 is too old for kernel: v1.9.3\nPlease update it:" in problems[0].evidence
    assert "\x1b" not in problems[0].evidence and problems[0].needed_by == hc.KERNEL
    text = log.read_text()
    assert "sdk ok" in text and "debian ok" in text and "qemu-aarch64 version" in text
    assert "python3 3." in text and "gcc builds a program that includes locale.h" in text
    with pytest.raises(UserError) as error:
        hc.enforce(problems)
    assert f"{hc.SDK_SCRIPTS}/check-kernel.sh failed (exited 1)" in str(error.value)
    assert not (sdk / "output/probe").exists()


@pytest.mark.docker
def test_curated_builder_passes_the_sample_sdks_checks(builder_image, tmp_path):
    sdk = write_sample_sdk(tmp_path / "sdk", driver_version="0.9.8")
    problems = hc.check_builder(builder_image.tag, sdk, needs_rootfs=True, log_path=tmp_path / "check.log",
                                binfmt_dir=binfmt_dir(tmp_path / "binfmt"))
    assert problems == [], hc.format_problems(problems)
    assert f"{hc._MARK} end sdk:check-debian.sh 0" in (tmp_path / "check.log").read_text()


@pytest.mark.docker
def test_bare_base_fails_each_requirement_with_its_fix(tmp_path):
    sdk = write_sample_sdk(tmp_path / "sdk", driver_version="0.9.8")
    conf = tmp_path / "mke2fs.conf"
    conf.write_text("[fs_types]\n\text4 = {\n\t\tfeatures = has_journal,extent,metadata_csum_seed,64bit\n\t}\n")
    problems = hc.check_builder(BASE, sdk, needs_rootfs=True, log_path=tmp_path / "check.log",
                                mounts=[Mount(conf, "/etc/mke2fs.conf", read_only=True)],
                                binfmt_dir=tmp_path / "no-binfmt")
    assert ids(problems) == ([r.id for r in hc.REQUIREMENTS if r.where == hc.BUILDER]
                             + ["sdk-check-kernel", "sdk-check-debian", "binfmt-aarch64"])
    by_id = {p.id: p for p in problems}
    # The sample SDK's own scripts are reported with what they printed (their fix included).
    assert "Your python3 is missing or too old for kernel" in by_id["sdk-check-kernel"].evidence
    assert "Your mke2fs is too new" in by_id["sdk-check-debian"].evidence
    assert by_id["python3"].evidence == "python3: not installed"
    assert "lz4: not installed" in by_id["lz4-favor-decspeed"].evidence
    assert "metadata_csum_seed" in by_id["mke2fs-metadata-csum-seed"].evidence
    assert "qemu-aarch64-static: not installed" in by_id["qemu-aarch64-static"].evidence
    with pytest.raises(UserError) as error:
        hc.enforce(problems)
    message = str(error.value)
    for req in hc.REQUIREMENTS:
        assert f"[{req.id}]" in message and req.fix in message
    # Without rootfs steps only the kernel's and every step's requirements count.
    problems = hc.check_builder(BASE, None, needs_rootfs=False, log_path=tmp_path / "check2.log",
                                binfmt_dir=tmp_path / "no-binfmt")
    assert ids(problems) == ["python3", "libc6-dev", "lz4-favor-decspeed", "openssl-headers"]


@pytest.mark.docker
def test_old_lz4_is_rebuilt_from_the_bases_archive(builder_image, tmp_path):
    """builder/install-lz4.sh (Ubuntu 22.04's case): an lz4 without --favor-decSpeed is replaced by
    the release tarball from the base's own apt archive, pinned by sha256."""
    # A stand-in release tarball whose `make install` puts a new enough lz4 in PREFIX/bin.
    makefile = (b"install:\n\tmkdir -p $(PREFIX)/bin\n"
                b"\tprintf '#!/bin/sh\\necho \"lz4 v1.9.4 --favor-decSpeed\"\\n' > $(PREFIX)/bin/lz4\n"
                b"\tchmod 755 $(PREFIX)/bin/lz4\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("lz4-1.9.4/Makefile")
        info.size = len(makefile)
        tar.addfile(info, io.BytesIO(makefile))
    pool = tmp_path / "archive/pool/main/l/lz4"
    pool.mkdir(parents=True)
    (pool / "lz4_1.9.4.orig.tar.gz").write_bytes(buf.getvalue())
    sha = hashlib.sha256(buf.getvalue()).hexdigest()
    script = textwrap.dedent(f"""\
        printf '#!/bin/sh\\necho "lz4 v1.9.3"\\n' > /usr/bin/lz4
        rm -f /etc/apt/sources.list.d/*
        echo 'deb [trusted=yes] file:///archive bookworm main' > /etc/apt/sources.list
        run() {{ sh /b/install-lz4.sh; echo "rc=$? lz4=$(command -v lz4): $(lz4 -h)"; rm -f /usr/local/bin/lz4; }}
        LZ4_SOURCE= run
        LZ4_SOURCE=pool/main/l/lz4/lz4_1.9.4.orig.tar.gz LZ4_SOURCE_SHA256={sha} run
        LZ4_SOURCE=file:///archive/pool/main/l/lz4/lz4_1.9.4.orig.tar.gz LZ4_SOURCE_SHA256={'0' * 64} run
        LZ4_SOURCE=pool/main/l/lz4/lz4_1.9.4.orig.tar.gz run
        """)
    log = tmp_path / "lz4.log"
    run_step(builder_image.tag, ["sh", "-c", script], name="lz4", workdir="/", env={}, log_path=log, uid=0, gid=0,
             mounts=[Mount(REPO / "builder", "/b", read_only=True), Mount(tmp_path / "archive", "/archive",
                                                                       read_only=True)],
             ccache_volume=None, echo=None)
    results = [line for line in log.read_text().splitlines() if line.startswith("rc=")]
    assert results == [
        "rc=0 lz4=/usr/bin/lz4: lz4 v1.9.3",  # LZ4_SOURCE="": left as it is (builder:check reports it)
        "rc=0 lz4=/usr/local/bin/lz4: lz4 v1.9.4 --favor-decSpeed",  # from file:///archive/pool/...
        "rc=1 lz4=/usr/bin/lz4: lz4 v1.9.3",  # a tarball that does not match its sha256
        "rc=1 lz4=/usr/bin/lz4: lz4 v1.9.3",  # no sha256 to pin it
    ]
    text = log.read_text()
    assert "building it from file:///archive/pool/main/l/lz4/lz4_1.9.4.orig.tar.gz" in text
    assert "FAILED" in text and "LZ4_SOURCE_SHA256 is not" in text
