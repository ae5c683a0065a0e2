"""The demo's image is bit-identical across two fresh work directories built from the same sources,
and the rebuild check catches a deliberately non-deterministic SDK with diffoscope's report kept.

Real parts: `rk3576-build demo` builds in Docker (the sample SDK cross-compiles the RKNPU driver,
packs the initramfs and update.img), diffoscope compares what differs."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from helpers import rk, unavailable
from rk3576_build.core.errors import UserError
from rk3576_build.demo import command as demo
from rk3576_build.demo.board_kit import find_kit
from rk3576_build.release import reproducible
from rk3576_build.release.rebuild import compare_work_dirs

UPDATE = "output/update/Image/update.img"
MKROOTFS = "device/rockchip/.chips/rk3576/board/mkrootfs.sh"
FIXED_TIMES = 'find . -exec touch -h -d "@${SOURCE_DATE_EPOCH:-0}" {} +'
# What a careless SDK does: stamps the build into the image (and leaves the files' own times).
STAMPED = "date -u +%s%N > etc/build-id"


@pytest.fixture(autouse=True)
def _needs_diffoscope():
    if not shutil.which("diffoscope"):
        unavailable("diffoscope is not installed (run scripts/setup-host.sh)")


def build_demo(workdir: Path, sources: Path) -> None:
    """One fresh demo build (no flash, no build cache): what rebuild-check does for a second work dir."""
    result = rk("--no-cache", "demo", "--workdir", str(workdir), "--sources", str(sources), "--no-verify",
                timeout=1800)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]


def careless_sources(sources: Path, dest: Path) -> Path:
    """A copy of the demo's sources whose SDK stamps the build time into its root file system."""
    shutil.copytree(sources, dest, symlinks=True)
    tarball = dest / demo.SDK_TARBALL
    raw = io.BytesIO()
    with tarfile.open(tarball, "r:gz") as old, tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as new:
        for member in old.getmembers():
            data = old.extractfile(member).read() if member.isfile() else None
            if member.name.endswith(MKROOTFS):
                text = data.decode()
                assert FIXED_TIMES in text
                data = text.replace(FIXED_TIMES, STAMPED).encode()
                member.size = len(data)
            new.addfile(member, io.BytesIO(data) if data is not None else None)
    with tarball.open("wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gz:
        gz.write(raw.getvalue())
    return dest


@pytest.mark.docker
@pytest.mark.timeout(2400)
def test_the_demo_image_is_bit_identical_and_a_careless_sdk_is_caught(tmp_path):
    if find_kit() is None:
        unavailable("the arm64 board kit is not prepared (run scripts/setup-host.sh)")
    sources = tmp_path / "sources"
    build_demo(tmp_path / "one", sources)
    build_demo(tmp_path / "two", sources)
    result = compare_work_dirs(tmp_path / "one", tmp_path / "two", tmp_path / "check")
    assert result.ok and result.exit_status == 0, result.summary()
    assert result.identical == [UPDATE]
    assert (tmp_path / "one/sdk" / UPDATE).read_bytes() == (tmp_path / "two/sdk" / UPDATE).read_bytes()
    # The times inside are the SDK tarball's newest member time, as the builder set SOURCE_DATE_EPOCH.
    epoch = json.loads((tmp_path / "one/state" / reproducible.CACHE).read_text())["epoch"]
    assert epoch == reproducible.newest_mtime(sources / demo.SDK_TARBALL) > 0
    with tarfile.open(tmp_path / "one/sdk" / UPDATE) as image:
        assert {m.mtime for m in image.getmembers()} == {epoch}
        assert "rootfs.img" in image.getnames() and "modules.img" in image.getnames()

    # The same recipe from an SDK that stamps its build time: its rootfs step run twice gives two
    # different images, and the check says where, keeping diffoscope's report.
    careless = careless_sources(sources, tmp_path / "careless-sources")
    build_demo(tmp_path / "three", careless)
    first = tmp_path / "three-first"  # what the first run made, as a work directory holds it
    (first / "sdk" / UPDATE).parent.mkdir(parents=True)
    shutil.copy2(tmp_path / "three/manifest.json", first / "manifest.json")
    shutil.copy2(tmp_path / "three/sdk" / UPDATE, first / "sdk" / UPDATE)
    # The rootfs step, update.img and the manifest run again (a step's dependents follow its
    # inputs, not its bytes: a reproducible SDK is assumed, which is what this check is for).
    forgotten = rk("--recipe", "demo", "--workdir", str(tmp_path / "three"), "forget", "step:ubuntu",
                   "step:updateimg", "manifest")
    assert forgotten.returncode == 0, forgotten.stdout + forgotten.stderr
    build_demo(tmp_path / "three", careless)
    result = compare_work_dirs(first, tmp_path / "three", tmp_path / "check2")
    assert not result.ok and result.exit_status == 1
    assert [d.path for d in result.differing] == [UPDATE]
    differing = result.differing[0]
    assert differing.first_sha256 != differing.second_sha256
    assert differing.reports == ["diffoscope/output_update_Image_update.img.txt",
                                 "diffoscope/output_update_Image_update.img.html"]
    report = (tmp_path / "check2" / differing.reports[0]).read_text()
    # diffoscope looked through update.img (tar) -> rootfs.img (gzip) -> the cpio, to the stamp
    assert "rootfs.img" in report and "etc/build-id" in report
    assert "├── modules.img" not in report  # the driver's part is still identical
    summary = json.loads((tmp_path / "check2" / "rebuild-check.json").read_text())
    assert summary["status"] == "failed" and summary["differing"][0]["reports"] == differing.reports
    assert "rebuild check failed: 1 artifact(s) differ: output/update/Image/update.img" in result.summary()


def test_the_step_environment(tmp_path):
    """SOURCE_DATE_EPOCH from the recipe wins; else the SDK tarball's newest member time, once per tarball."""
    assert reproducible.kbuild_timestamp(1728432000) == "Wed Oct  9 00:00:00 UTC 2024"
    env = reproducible.step_env({"BOARD_KIT": "/opt/board-kit", "SOURCE_DATE_EPOCH": "1700000000"}, None)
    assert env == {"BOARD_KIT": "/opt/board-kit", "SOURCE_DATE_EPOCH": "1700000000",
                   "KBUILD_BUILD_TIMESTAMP": "Tue Nov 14 22:13:20 UTC 2023",
                   "KBUILD_BUILD_USER": "rk3576-build", "KBUILD_BUILD_HOST": "rk3576-build"}
    with pytest.raises(UserError, match="whole seconds since 1970"):
        reproducible.step_env({"SOURCE_DATE_EPOCH": "2024-10-09"}, None)

    class FakeLayout:  # the two places the step environment reads: the fetch stamp and state/
        state = tmp_path / "state"

        def stamp(self, name):
            return self.state / f"{name}.json"

    tarball = tmp_path / "sdk.tar.xz"
    with tarfile.open(tarball, "w:xz") as tar:
        for name, mtime in (("sdk/", 1_600_000_000), ("sdk/build.sh", 1_700_000_123), ("sdk/old", 5)):
            info = tarfile.TarInfo(name)
            info.mtime, info.type = mtime, tarfile.DIRTYPE if name.endswith("/") else tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(b""))
    layout = FakeLayout()
    layout.state.mkdir()
    with pytest.raises(UserError, match="rerun `rk3576-build run fetch`"):
        reproducible.step_env({}, layout)
    layout.stamp("fetch-sdk").write_text(json.dumps({"path": str(tarball), "sha256": "f" * 64}))
    assert reproducible.step_env({}, layout)["SOURCE_DATE_EPOCH"] == "1700000123"
    tarball.unlink()  # remembered per sha256: the tarball is not read again
    assert reproducible.step_env({}, layout)["KBUILD_BUILD_TIMESTAMP"] == "Tue Nov 14 22:15:23 UTC 2023"
