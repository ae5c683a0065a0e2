"""The sample SDK: tree layout, reproducible tarball, and build.sh's behaviour run directly on the host."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from rk3576_build.demo.sample_sdk import make_sample_sdk_tarball, write_sample_sdk

WANTED = "rockchip_rk3576_myd_lr3576_defconfig"
HASH = "$6$saltsalt$ZnVua3lfaGFzaF9mb3JfdGVzdHNfb25seQ"


def _run(sdk: Path, *args: str, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "./build.sh", *args], cwd=sdk, input=stdin, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", **(env or {})}, timeout=30)


def test_tree_looks_like_a_rockchip_sdk(tmp_path):
    sdk = write_sample_sdk(tmp_path / "sdk", driver_version="0.9.7", root_password_hash=HASH)
    assert (sdk / "build.sh").stat().st_mode & 0o111
    makefile = (sdk / "kernel" / "Makefile").read_text()
    assert "VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 75\n" in makefile
    header = (sdk / "kernel" / "drivers" / "rknpu" / "include" / "rknpu_drv.h").read_text()
    assert "#define DRIVER_PATCHLEVEL 7" in header
    compat = (sdk / "kernel" / "include" / "linux" / "version_compat_defs.h").read_text()
    assert "vm_flags_set" in compat and "vm_flags_clear" in compat
    soc = sdk / "kernel" / "include" / "soc" / "rockchip"
    assert "rockchip_opp_set_low_length" in (soc / "rockchip_opp_select.h").read_text()
    assert "MONITOR_TYPE_DEV" in (soc / "rockchip_system_monitor.h").read_text()
    assert (sdk / "rockdev").is_symlink() and str((sdk / "rockdev").readlink()) == "output/firmware"
    board = sdk / "device" / "rockchip" / "rk3576" / "board"
    assert (board / "mkrootfs.sh").stat().st_mode & 0o111 and (board / "mkmodules.sh").stat().st_mode & 0o111
    assert (board / "root-password-hash").read_text().strip() == HASH
    assert (sdk / "u-boot").is_dir()


def test_plaintext_password_is_refused(tmp_path):
    with pytest.raises(ValueError, match="crypt hash"):
        write_sample_sdk(tmp_path / "sdk", root_password_hash="hunter2")
    assert not (tmp_path / "sdk").exists() or "hunter2" not in "".join(
        p.read_text(errors="replace") for p in (tmp_path / "sdk").rglob("*") if p.is_file())


def test_tarball_is_reproducible_with_one_top_directory(tmp_path):
    first = make_sample_sdk_tarball(tmp_path / "a" / "sdk.tar.gz", driver_version="0.9.7")
    second = make_sample_sdk_tarball(tmp_path / "b" / "sdk.tar.gz", driver_version="0.9.7")
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes()[4:8] == b"\0\0\0\0", "gzip header mtime is 0"
    other = make_sample_sdk_tarball(tmp_path / "c.tar.gz", driver_version="0.9.8")
    assert other.read_bytes() != first.read_bytes()
    with tarfile.open(first) as tar:
        members = tar.getmembers()
        assert {m.name.split("/")[0] for m in members} == {"MYD-LR3576-Sample-SDK"}
        assert {(m.uid, m.gid) for m in members} == {(0, 0)} and len({m.mtime for m in members}) == 1
        link = tar.getmember("MYD-LR3576-Sample-SDK/rockdev")
        assert link.issym() and link.linkname == "output/firmware"
        assert tar.getmember("MYD-LR3576-Sample-SDK/build.sh").mode == 0o755
        tar.extractall(tmp_path / "x")
    assert (tmp_path / "x" / "MYD-LR3576-Sample-SDK" / "kernel" / "drivers" / "rknpu" / "rknpu_drv.c").is_file()


def test_lunch_menu_and_choice(tmp_path):
    sdk = write_sample_sdk(tmp_path / "sdk")
    result = _run(sdk, "lunch", stdin="7\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Pick a defconfig:"
    entries = [line for line in lines if line[:1].isdigit()]
    assert entries[0] == "1. rockchip_defconfig"
    assert entries[5] == "6. rockchip_rk3576_myd_lr3576_debian_defconfig" and entries[6] == f"7. {WANTED}"
    assert (sdk / "output" / ".defconfig").read_text().strip() == WANTED
    assert _run(sdk, "lunch", stdin="99\n").returncode != 0


def test_direct_defconfig_and_steps_need_a_choice(tmp_path):
    sdk = write_sample_sdk(tmp_path / "sdk")
    refused = _run(sdk, "u-boot")
    assert refused.returncode == 1 and "run ./build.sh lunch first" in refused.stderr
    assert _run(sdk, "rockchip_nonexistent_defconfig").returncode != 0
    assert _run(sdk, WANTED).returncode == 0
    assert _run(sdk, "uboot").returncode == 0
    assert {p.name for p in (sdk / "rockdev").iterdir()} == {"MiniLoaderAll.bin", "uboot.img", "parameter.txt"}


def test_unknown_step_prints_usage_and_exits_2(tmp_path):
    sdk = write_sample_sdk(tmp_path / "sdk")
    result = _run(sdk, "frobnicate")
    assert result.returncode == 2 and "Usage: build.sh" in result.stdout and "frobnicate" in result.stderr


def test_rk_variables_make_it_pause(tmp_path):
    sdk = write_sample_sdk(tmp_path / "sdk")
    result = _run(sdk, "help", env={"RK_ROOTFS_SYSTEM": "ubuntu"}, stdin="\n")
    assert "Press enter to continue." in result.stdout
    assert "Press enter" not in _run(sdk, "help").stdout


def test_kernel_step_without_kit_fails_clearly(tmp_path):
    sdk = write_sample_sdk(tmp_path / "sdk")
    _run(sdk, WANTED)
    result = _run(sdk, "kernel")
    assert result.returncode == 1 and "no board kit" in result.stderr


def test_updateimg_needs_all_images(tmp_path):
    sdk = write_sample_sdk(tmp_path / "sdk")
    _run(sdk, WANTED)
    _run(sdk, "u-boot")
    result = _run(sdk, "updateimg")
    assert result.returncode == 1 and "rockdev/boot.img is missing" in result.stderr
