"""The sample SDK: layout, reproducible tarball, and its build framework run directly on the host.

The sample behaves like Rockchip's Linux SDK framework (domain.md): these tests run
its bash scripts as a user would (no container), so they stay fast. The kernel step
needs the board kit and the arm64 cross compiler.
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from helpers import unavailable
from rk3576_build.build import container
from rk3576_build.build.container import Mount
from rk3576_build.demo.board_kit import find_kit
from rk3576_build.demo.sample_sdk import make_sample_sdk_tarball, write_sample_sdk

WANTED = "rockchip_rk3576_myd_lr3576_defconfig"
DEBIAN = "rockchip_rk3576_myd_lr3576_debian_defconfig"
HASH = "$6$saltsalt$ZnVua3lfaGFzaF9mb3JfdGVzdHNfb25seQ"
# `./build.sh <WANTED>` means `defconfig:<WANTED>`, matched by substring: the menu offers
# 1. bak_<WANTED>, 2. <WANTED> (as Rockchip's framework does), answered on stdin.
PICK = "2\n"
# The names `./build.sh help` lists (not `lunch`: accepted, but the usage text never shows it).
UPSTREAM = ("chip", "defconfig", "loader", "uboot", "kernel", "modules", "rootfs", "buildroot", "debian",
            "recovery", "firmware", "updateimg", "all", "save", "shell", "kernel-config", "kconfig", "cleanall",
            "clean")
MYIR = ("u-boot", "module", "ubuntu")
SCRIPTS = Path("device/rockchip/common/scripts")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
USAGE_LINE = re.compile(r"^(\S[^\t]*?)\s*\t(\S.*)$")


def _run(sdk: Path, *args: str, stdin: str | None = "", env: dict | None = None, path: str = "") -> \
        subprocess.CompletedProcess:
    """Run build.sh in `sdk`, stdout and stderr merged in order (stdin None: no input at all)."""
    return subprocess.run(["./build.sh", *args], cwd=sdk, input=stdin, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL if stdin is None else None,
                          env={"PATH": f"{path}/usr/bin:/bin", "HOME": str(sdk), **(env or {})}, timeout=120)


def _out(result: subprocess.CompletedProcess) -> str:
    return ANSI.sub("", result.stdout)


def _config(sdk: Path) -> dict[str, str]:
    values = {}
    for line in (sdk / "output" / ".config").read_text().splitlines():
        if line.startswith("RK_") and "=" in line:
            key, value = line.split("=", 1)
            values[key] = value.strip('"')
    return values


def _selected(sdk: Path) -> str:
    """The defconfig read back from output/defconfig, checked against RK_DEFCONFIG in output/.config."""
    link = sdk / "output" / "defconfig"
    target = Path(os.readlink(link))
    assert target.is_absolute() and target.is_file()
    assert _config(sdk)["RK_DEFCONFIG"] == str(target)
    return target.name


def _fake_tool(tmp_path: Path, name: str, script: str) -> str:
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text(f"#!/bin/sh\n{script}\n")
    (bin_dir / name).chmod(0o755)
    return f"{bin_dir}:"


@pytest.fixture
def sdk(tmp_path):
    return write_sample_sdk(tmp_path / "sdk", driver_version="0.9.8", root_password_hash=HASH)


@pytest.fixture
def upstream(tmp_path):
    return write_sample_sdk(tmp_path / "up", driver_version="0.9.8", flavor="upstream")


@pytest.fixture
def kit():
    """The board kit and cross compiler the kernel step builds with (scripts/setup-host.sh)."""
    found = find_kit()
    if found is None or not shutil.which("aarch64-linux-gnu-gcc"):
        unavailable("board kit or aarch64-linux-gnu-gcc missing (run scripts/setup-host.sh)")
    return found


# --- the tree and the tarball ----------------------------------------------------------------

def test_tree_looks_like_a_rockchip_sdk(sdk):
    assert os.readlink(sdk / "build.sh") == "device/rockchip/common/scripts/build.sh"
    hooks = sdk / "device/rockchip/common/build-hooks"
    assert os.readlink(hooks / "00-config.sh") == "../scripts/mk-config.sh"
    assert os.readlink(hooks / "95-myir.sh") == "../scripts/mk-myir.sh"
    assert all((hooks / link).resolve().is_file() for link in os.listdir(hooks)), "no dangling hook"
    assert os.readlink(sdk / "device/rockchip/.chip") == ".chips/rk3576"
    assert os.readlink(sdk / "rockdev") == "output/firmware"
    assert (sdk / SCRIPTS / "build.sh").stat().st_mode & 0o111
    for script in ("mk-config.sh", "mk-kernel.sh", "mk-loader.sh", "mk-rootfs.sh", "mk-updateimg.sh",
                   "check-kernel.sh", "check-debian.sh", "mk-myir.sh"):
        assert (sdk / SCRIPTS / script).stat().st_mode & 0o111, script
    chip = sdk / "device/rockchip/.chips/rk3576"
    names = sorted(p.name for p in chip.glob("*_defconfig"))
    assert {"rockchip_defconfig", "rockchip_rk3576_evb1_v10_defconfig", WANTED, DEBIAN} <= set(names)
    assert names[0] != WANTED and sum(WANTED in name for name in names) > 1, "neither first nor a unique substring"
    assert (chip / "parameter.txt").read_text().startswith("FIRMWARE_VER:")
    defconfig = (chip / WANTED).read_text()
    assert 'RK_KERNEL_CFG="rockchip_linux_defconfig"' in defconfig and 'RK_ROOTFS_SYSTEM="debian"' in defconfig
    fragments = re.search(r'RK_KERNEL_CFG_FRAGMENTS="([^"]+)"', defconfig).group(1)
    configs = sdk / "kernel/arch/arm64/configs"
    kernel = (configs / "rockchip_linux_defconfig").read_text()
    for option in ("CONFIG_ROCKCHIP_RKNPU=y", "CONFIG_ROCKCHIP_RKNPU_DEBUG_FS=y", "CONFIG_DEBUG_FS=y",
                   "CONFIG_ROCKCHIP_IOMMU=y"):
        assert option + "\n" in kernel
    assert (configs / fragments).is_file()
    makefile = (sdk / "kernel/drivers/rknpu/Makefile").read_text()
    assert "obj-$(CONFIG_ROCKCHIP_RKNPU) += rknpu.o" in makefile and "-Werror" in makefile
    assert "config ROCKCHIP_RKNPU_DEBUG_FS" in (sdk / "kernel/drivers/rknpu/Kconfig").read_text()
    assert "#include <locale.h>" in (sdk / "device/rockchip/common/kconfig/conf.c").read_text()
    gcc = next((sdk / "prebuilts/gcc/linux-x86/aarch64").glob("*/bin/aarch64-none-linux-gnu-gcc"))
    assert gcc.stat().st_mode & 0o111 and os.readlink(gcc.parent / "aarch64-none-linux-gnu-ld") == gcc.name
    assert (chip / "board/root-password-hash").read_text().strip() == HASH
    assert (chip / "board/mkrootfs.sh").stat().st_mode & 0o111
    assert "VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 75\n" in (sdk / "kernel/Makefile").read_text()
    assert "#define DRIVER_PATCHLEVEL 8" in (sdk / "kernel/drivers/rknpu/include/rknpu_drv.h").read_text()


def test_variants_fresh_upstream_and_without_rknpu(tmp_path):
    sdk = write_sample_sdk(tmp_path / "v", flavor="upstream", fresh=True, rknpu_config=False)
    assert not (sdk / "device/rockchip/.chip").exists() and not (sdk / SCRIPTS / "mk-myir.sh").exists()
    assert not os.path.lexists(sdk / "device/rockchip/common/build-hooks/95-myir.sh")
    kernel = (sdk / "kernel/arch/arm64/configs/rockchip_linux_defconfig").read_text()
    assert "# CONFIG_ROCKCHIP_RKNPU is not set\n" in kernel and "CONFIG_ROCKCHIP_RKNPU=y" not in kernel
    with pytest.raises(ValueError, match="flavor"):
        write_sample_sdk(tmp_path / "x", flavor="vendor")


def test_plaintext_password_is_refused(tmp_path):
    with pytest.raises(ValueError, match="crypt hash"):
        write_sample_sdk(tmp_path / "sdk", root_password_hash="hunter2")
    assert not (tmp_path / "sdk").exists() or "hunter2" not in "".join(
        p.read_text(errors="replace") for p in (tmp_path / "sdk").rglob("*") if p.is_file())


def test_tarball_is_reproducible_with_links_and_modes(tmp_path):
    first = make_sample_sdk_tarball(tmp_path / "a" / "sdk.tar.gz", driver_version="0.9.7")
    second = make_sample_sdk_tarball(tmp_path / "b" / "sdk.tar.gz", driver_version="0.9.7")
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes()[4:8] == b"\0\0\0\0", "gzip header mtime is 0"
    for other in (dict(driver_version="0.9.8"), dict(flavor="upstream"), dict(fresh=True),
                  dict(rknpu_config=False)):
        assert make_sample_sdk_tarball(tmp_path / "c.tar.gz", **other).read_bytes() != first.read_bytes(), other
    top = "MYD-LR3576-Sample-SDK"
    with tarfile.open(first) as tar:
        members = tar.getmembers()
        assert {m.name.split("/")[0] for m in members} == {top}
        assert {(m.uid, m.gid) for m in members} == {(0, 0)} and len({m.mtime for m in members}) == 1
        links = {m.name.removeprefix(top + "/"): m.linkname for m in members if m.issym()}
        assert links["build.sh"] == "device/rockchip/common/scripts/build.sh"
        assert links["rockdev"] == "output/firmware" and links["device/rockchip/.chip"] == ".chips/rk3576"
        assert tar.getmember(f"{top}/{SCRIPTS}/build.sh").mode == 0o755
        tar.extractall(tmp_path / "x", filter="tar")
    result = _run(tmp_path / "x" / top, "help")
    assert result.returncode == 0 and "uboot[:cmds]" in result.stdout
    with tarfile.open(make_sample_sdk_tarball(tmp_path / "f.tar.gz", fresh=True)) as tar:
        assert f"{top}/device/rockchip/.chip" not in tar.getnames()


# --- usage and unknown commands ----------------------------------------------------------------

def _usage_names(text: str) -> list[str]:
    names = []
    for line in ANSI.sub("", text).splitlines():
        match = USAGE_LINE.match(line)
        if match:
            names.append(re.split(r"[\[:<\s]", match.group(1).strip(), maxsplit=1)[0])
    return names


def test_help_prints_usage_lines_per_flavor(sdk, upstream):
    result = _run(upstream, "help")
    assert result.returncode == 0
    assert "uboot[:cmds]                     \tbuild u-boot\n" in result.stdout
    names = _usage_names(result.stdout)
    assert set(UPSTREAM) <= set(names) and not set(MYIR) & set(names)
    assert "lunch" not in names, "the real usage text does not list lunch (it is accepted all the same)"
    assert _run(upstream, "-h").stdout == result.stdout
    myir = _usage_names(_run(sdk, "help").stdout)
    assert set(UPSTREAM) | set(MYIR) <= set(myir)
    assert not (upstream / "output" / "sessions").exists(), "help starts no session"


def test_unknown_command_prints_error_and_usage_and_exits_0(sdk, upstream):
    result = _run(upstream, "u-boot")
    assert result.returncode == 0
    assert "\x1b[91mERROR: Unhandled option: u-boot\x1b[0m" in result.stdout
    assert result.stdout.index("Unhandled option") < result.stdout.index("Usage: build.sh [OPTIONS]")
    assert not (upstream / "rockdev" / "uboot.img").exists()
    assert "Unhandled option" in _run(sdk, "frobnicate").stdout
    assert "Unhandled option" not in _run(sdk, "u-boot").stdout
    assert "Unhandled option: clean" in _run(sdk, "clean").stdout, "bare clean is not a hook's command"
    combined = _run(sdk, "shell", "uboot")
    assert combined.returncode == 0 and "ERROR: shell cannot combine with other options!" in _out(combined)
    assert _run(sdk, "lunch:" + DEBIAN).returncode == 0
    unmodelled = _run(sdk, "wifibt", stdin=None)
    assert unmodelled.returncode != 0 and "wifibt: not modelled by the sample SDK" in _out(unmodelled)


# --- lunch ------------------------------------------------------------------------------------

def _pty_run(sdk: Path, args: list[str], answer: str, env: dict) -> tuple[str, int]:
    """Run build.sh on a terminal; answer once the prompt shows; return (output, exit code)."""
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(sdk)
        os.execve("./build.sh", ["./build.sh", *args], env)
    output, answered, deadline = b"", False, time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
        if not answered and output.endswith(b"Which would you like? [1]: "):
            os.write(fd, answer.encode() + b"\n")
            answered = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return output.decode(), os.waitstatus_to_exitcode(status)


def test_lunch_menu_on_a_terminal(sdk):
    output, code = _pty_run(sdk, ["lunch"], "7", {"PATH": "/usr/bin:/bin", "HOME": str(sdk), "TERM": "dumb"})
    assert code == 0, output
    assert "\x1b[36mPick a defconfig:" in output
    menu = [line for line in ANSI.sub("", output).replace("\r", "").splitlines() if re.match(r"^\d+\. ", line)]
    chip = sdk / "device/rockchip/.chips/rk3576"
    others = sorted(p.name for p in chip.glob("*_defconfig") if p.name != "rockchip_defconfig")
    assert menu == [f"{i}. {name}" for i, name in enumerate(["rockchip_defconfig", *others], 1)]
    assert menu[6] == f"7. {WANTED}"
    assert "Which would you like? [1]: 7" in output.replace("\r", ""), "the prompt has no newline"
    assert _selected(sdk) == WANTED
    config = _config(sdk)
    assert config["RK_CHIP"] == "rk3576" and config["RK_KERNEL_CFG"] == "rockchip_linux_defconfig"
    assert config["RK_ROOTFS_SYSTEM"] == "debian"


def test_lunch_modes_select_the_right_entry(sdk):
    direct = _run(sdk, "lunch:" + DEBIAN, stdin=None)  # the first match: no menu
    assert direct.returncode == 0 and "Pick a defconfig" not in direct.stdout and _selected(sdk) == DEBIAN
    filtered = _run(sdk, "lunch:" + WANTED, stdin="2\n")  # not the first match: the filtered menu
    menu = re.findall(r"^\d+\. .*$", filtered.stdout, re.M)
    assert menu == [f"1. bak_{WANTED}", f"2. {WANTED}"] and _selected(sdk) == WANTED
    assert _run(sdk, "rockchip_rk3576_evb1_v10_defconfig", stdin=None).returncode == 0
    assert _selected(sdk) == "rockchip_rk3576_evb1_v10_defconfig"
    # <name>_defconfig is defconfig:<name>, a substring match like lunch's: bak_<wanted> brings the menu.
    by_name = _run(sdk, WANTED, stdin="2\n")
    assert re.findall(r"^\d+\. .*$", by_name.stdout, re.M) == [f"1. bak_{WANTED}", f"2. {WANTED}"]
    assert by_name.returncode == 0 and _selected(sdk) == WANTED
    assert _run(sdk, "lunch", stdin="").returncode != 0, "no answer: read fails and the trap stops it"
    bad = _run(sdk, "lunch", stdin="99\n")
    assert bad.returncode != 0 and "Invalid choice: 99" in _out(bad)
    missing = _run(sdk, "rockchip_rk3576_myd_lr3576_ubuntu_defconfig")
    assert missing.returncode != 0
    assert "No available defconfigs for: rockchip_rk3576_myd_lr3576_ubuntu_defconfig" in _out(missing)


def test_fresh_tree_needs_chip_and_defconfig(tmp_path):
    sdk = write_sample_sdk(tmp_path / "fresh", flavor="upstream", fresh=True)
    for args in (["lunch"], [WANTED]):
        result = _run(sdk, *args)
        assert result.returncode != 0 and "No available defconfigs" in _out(result), args
    chip = _run(sdk, "chip", stdin="")
    assert "Pick a chip:" in _out(chip) and re.search(r"^1\. rk3576$", _out(chip), re.M)
    both = _run(sdk, f"rk3576:{WANTED}", stdin="2\n")  # 1. bak_<wanted>, 2. <wanted>
    assert both.returncode == 0, _out(both)
    assert os.readlink(sdk / "device/rockchip/.chip") == ".chips/rk3576" and _selected(sdk) == WANTED


def test_kconfig_is_compiled_with_the_host_libc_headers(sdk, tmp_path):
    # A gcc without the C library's headers, as in an image without libc6-dev.
    empty = tmp_path / "no-headers"
    empty.mkdir()
    path = _fake_tool(tmp_path, "gcc", f'exec /usr/bin/gcc -nostdinc -isystem {empty} "$@"')
    result = _run(sdk, WANTED, path=path, stdin=PICK)
    out = _out(result)
    assert result.returncode != 0
    assert "fatal error: locale.h: No such file or directory" in out
    assert out.index("fatal error:") < out.index("ERROR: Running")
    assert re.search(r"ERROR: exit code \d+ from line \d+:", out)


def test_rk_variables_pause_and_stop_without_a_terminal(sdk):
    assert _run(sdk, WANTED, env={"RK_KERNEL_DTS_NAME": "x"}, stdin=PICK).returncode == 0, "lunch does not check"
    stopped = _run(sdk, "uboot", stdin=None, env={"RK_KERNEL_DTS_NAME": "x"})
    out = _out(stopped)
    assert stopped.returncode != 0 and "WARN: Found custom environments:" in out and "RK_KERNEL_DTS_NAME" in out
    assert re.search(r"ERROR: exit code 1 from line \d+:\n\s+read -t 10 -p \"Press enter to continue.\"", out)
    assert not (sdk / "rockdev" / "uboot.img").exists()
    same = _run(sdk, "uboot", stdin=None, env={"RK_ROOTFS_SYSTEM": "debian"})
    assert same.returncode == 0 and "custom" not in _out(same), "a value equal to .config is not custom"
    answered = _run(sdk, "uboot", stdin="\n", env={"RK_KERNEL_DTS_NAME": "x"})
    assert answered.returncode == 0 and (sdk / "rockdev" / "uboot.img").is_file()


def test_sessions_logs_and_a_moved_sdk(sdk, tmp_path):
    sessions = sdk / "output" / "sessions"
    for i in range(12):
        (sessions / f"2020-01-01_00-00-{i:02d}").mkdir(parents=True)
    result = _run(sdk, WANTED, "uboot", stdin=PICK)
    assert result.returncode == 0, _out(result)
    latest = sessions / os.readlink(sessions / "latest")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", latest.name)
    assert "Start building uboot" in (latest / "uboot.log").read_text()
    assert (sdk / "output" / "log").resolve() == sessions.resolve()
    assert len([p for p in sessions.iterdir() if p.name != "latest"]) == 10 and latest.is_dir()
    assert {p.name for p in (sdk / "rockdev").iterdir()} == {"MiniLoaderAll.bin", "uboot.img", "parameter.txt"}
    assert "(uboot)" in (sdk / "rockdev" / "parameter.txt").read_text()

    moved = sdk.rename(tmp_path / "moved")
    again = _run(moved, "uboot")
    assert again.returncode == 0 and f"RK_DEFCONFIG {sdk}/" in _out(again) and "does not exist" in _out(again)
    assert _selected(moved) == WANTED and _config(moved)["RK_DEFCONFIG"].startswith(f"{moved}/")


def test_steps_need_the_prebuilt_toolchain(sdk):
    shutil.rmtree(sdk / "prebuilts")
    result = _run(sdk, WANTED, "uboot", stdin=PICK)
    assert result.returncode != 0 and "No prebuilt GCC toolchain for uboot!" in _out(result)


def test_check_scripts_run_standalone(sdk, tmp_path):
    scripts = sdk / SCRIPTS
    lz4 = _fake_tool(tmp_path, "lz4", 'echo "Usage : lz4 [arg] [input] [output]"; echo " --favor-decSpeed: ${V}"')
    assert subprocess.run([scripts / "check-kernel.sh"], cwd=tmp_path, env={"PATH": lz4 + "/usr/bin:/bin"}
                          ).returncode == 0, "runs from anywhere"
    old_lz4 = _fake_tool(tmp_path, "lz4", 'echo "Usage : lz4 [arg] [input] [output]"; echo "v1.9.3"')
    result = subprocess.run([scripts / "check-kernel.sh"], env={"PATH": old_lz4 + "/usr/bin:/bin"},
                            capture_output=True, text=True)
    assert result.returncode == 1 and "Your lz4 is too old for kernel" in result.stdout and "v1.9.4" in result.stdout

    headers = tmp_path / "headers"
    headers.mkdir()
    (headers / "openssl").mkdir()
    for name in ("openssl/ssl.h", "gmp.h", "mpc.h"):  # the host may lack the -dev packages; gcc finds these first
        (headers / name).write_text("")
    conf = tmp_path / "mke2fs.conf"
    conf.write_text("[defaults]\n\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index\n")
    qemu = _fake_tool(tmp_path, "qemu-aarch64-static", 'echo "qemu-aarch64 version ${QEMU_V:-7.2.9}"')
    debian_env = {"PATH": qemu + "/usr/bin:/bin", "C_INCLUDE_PATH": str(headers), "MKE2FS_CONFIG": str(conf)}

    def check_debian(**extra):
        return subprocess.run([scripts / "check-debian.sh"], env={**debian_env, **extra}, capture_output=True,
                              text=True)

    assert check_debian().returncode == 0, check_debian().stdout
    old_qemu = check_debian(QEMU_V="4.2")
    assert old_qemu.returncode == 1 and "too old" in old_qemu.stdout and "qemu-user-static" in old_qemu.stdout
    conf.write_text("[defaults]\n\tbase_features = sparse_super,metadata_csum_seed,orphan_file\n")
    new_mke2fs = check_debian()
    assert new_mke2fs.returncode == 1 and "metadata_csum_seed" in new_mke2fs.stdout
    conf.write_text("")
    (headers / "mpc.h").unlink()
    no_mpc = check_debian(C_INCLUDE_PATH=str(headers), CPATH="")
    if no_mpc.returncode:  # a host with libmpc-dev passes this one
        assert "mpc.h" in no_mpc.stdout and "libmpc-dev" in no_mpc.stdout


def test_updateimg_packs_rockdev(sdk):
    assert _run(sdk, WANTED, stdin=PICK).returncode == 0
    assert _run(sdk, "uboot").returncode == 0
    missing = _run(sdk, "updateimg")
    assert missing.returncode != 0 and "rockdev/boot.img is missing" in _out(missing)
    for name in ("boot.img", "rootfs.img", "modules.img"):
        (sdk / "rockdev" / name).write_bytes(name.encode())
    assert _run(sdk, "updateimg").returncode == 0
    image = sdk / "output/update/Image/update.img"
    with tarfile.open(image) as tar:
        assert sorted(tar.getnames()) == sorted(["parameter.txt", "MiniLoaderAll.bin", "uboot.img", "boot.img",
                                                 "rootfs.img", "modules.img"])
    assert (sdk / "output/update/update.img").resolve() == image.resolve()
    assert (sdk / "rockdev/update.img").resolve() == image.resolve()
    skipped = _run(sdk, "recovery")
    assert skipped.returncode == 0 and "Skipping 40-recovery.sh" in _out(skipped)
    assert _run(sdk, "clean:updateimg").returncode == 0 and not image.exists()


# --- the kernel step (board kit and cross compiler) --------------------------------------------

def test_kernel_and_modules_follow_the_kernel_config(tmp_path, kit):
    env = {"BOARD_KIT": str(kit.root)}
    on = write_sample_sdk(tmp_path / "on", driver_version="0.9.8", flavor="upstream")
    off = write_sample_sdk(tmp_path / "off", driver_version="0.9.8", flavor="upstream", rknpu_config=False)
    for sdk in (on, off):
        result = _run(sdk, WANTED, "kernel", "modules", env=env, stdin=PICK)
        assert result.returncode == 0, _out(result)[-3000:]
        assert (sdk / "rockdev/boot.img").read_bytes() == kit.vmlinuz.read_bytes()
    ko = on / "output/modules/rknpu.ko"
    data = ko.read_bytes()
    assert data[:4] == b"\x7fELF" and int.from_bytes(data[18:20], "little") == 183, "an arm64 module"
    assert b"RKNPU driver" in data and b"version" in data, "debugfs files built in"
    assert not (on / "kernel/drivers/rknpu/rknpu_drv.o").exists(), "the kernel tree stays clean"
    # Unset: kbuild compiles nothing and succeeds, exactly like the real driver.
    assert not list((off / "output").rglob("*.ko")) and not list((off / "output/kernel-build").rglob("*.o"))
    assert "CONFIG_ROCKCHIP_RKNPU=(not set)" in (off / "output/sessions/latest/kernel.log").read_text()
    for sdk, expected in ((on, True), (off, False)):
        listing = subprocess.run(f"zcat {sdk}/rockdev/modules.img | cpio -t", shell=True, capture_output=True,
                                 text=True).stdout
        assert ("extra/rknpu.ko" in listing) is expected


def test_a_compiler_error_comes_before_the_trap(sdk, kit):
    header = sdk / "kernel/drivers/rknpu/include/rknpu_drv.h"
    header.write_text(header.read_text().replace("#define DRIVER_MAJOR 0", "#define DRIVER_MAJOR"))
    result = _run(sdk, WANTED, "kernel", env={"BOARD_KIT": str(kit.root)}, stdin=PICK)
    out = _out(result)
    assert result.returncode != 0
    assert re.search(r"rknpu_drv\.c:\d+:\d+: error:", out)
    assert out.index(" error:") < out.index("ERROR: Running") and "ERROR: call stack:" in out
    assert not (sdk / "rockdev/boot.img").exists()


# --- in the builder container -----------------------------------------------------------------

@pytest.mark.docker
def test_in_the_builder_the_config_names_the_mount_path(builder_image, tmp_path):
    sdk = write_sample_sdk(tmp_path / "fresh", flavor="upstream", fresh=True)
    log = tmp_path / "builder.log"
    script = (f"./build.sh help && echo 2 | ./build.sh rk3576:{WANTED} && ./build.sh uboot && "
              f"{SCRIPTS}/check-kernel.sh && {SCRIPTS}/check-debian.sh && echo CHECKS-PASSED")

    def in_builder(target: str) -> str:
        container.run_step(builder_image.tag, ["bash", "-c", script], name="sample-sdk", workdir=target,
                           mounts=[Mount(sdk, target)], env={}, log_path=log, ccache_volume=None, echo=None)
        return ANSI.sub("", log.read_text())

    out = in_builder(str(sdk))  # the SDK at its host path, as the build path mounts it
    assert "CHECKS-PASSED" in out and set(UPSTREAM) <= set(_usage_names(out))
    assert _selected(sdk) == WANTED and _config(sdk)["RK_DEFCONFIG"].startswith(f"{sdk}/")
    on_host = _run(sdk, "uboot")
    assert on_host.returncode == 0 and "WARN" not in _out(on_host), "valid on the host as it is"

    in_builder("/sdk")  # mounted elsewhere: the recorded path is the container's
    assert _config(sdk)["RK_DEFCONFIG"].startswith("/sdk/")
    again = _run(sdk, "uboot")
    assert again.returncode == 0 and "RK_DEFCONFIG /sdk/" in _out(again) and "does not exist" in _out(again)
    assert _config(sdk)["RK_DEFCONFIG"].startswith(f"{sdk}/")
