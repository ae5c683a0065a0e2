"""Flashing: parameter.txt, device lists, the real tools' command sequences (through
stand-ins on PATH, since no physical board exists here) and the virtual board."""

from __future__ import annotations

import io
import itertools
import json
import os
import sys
import tarfile
from pathlib import Path

import pytest

from rk3576_build.board import flash as fl
from rk3576_build.cli import flash as flash_command
from rk3576_build.core.errors import UserError

STANDINS = Path(__file__).parent / "standins"

MTDPARTS = (
    "mtdparts=rk29xxnand:0x00002000@0x00004000(uboot),0x00002000@0x00006000(misc),"
    "0x00020000@0x00008000(boot),0x00040000@0x00028000(recovery),"
    "0x00010000@0x00068000(backup),-@0x00078000(rootfs:grow)"
)
# Shaped like the parameter.txt of Rockchip's RK3576 Linux SDK (GPT flavour).
PARAMETER_GPT = f"""FIRMWARE_VER: 1.0
MACHINE_MODEL: RK3576
MACHINE_ID: 007
MANUFACTURER: RK3576
MAGIC: 0x5041524B
ATAG: 0x00200800
MACHINE: 0xffffffff
CHECK_MASK: 0x80
PWR_HLD: 0,0,A,0,1
TYPE: GPT
GROW_ALIGN: 1
CMDLINE: {MTDPARTS}
uuid:rootfs=614e0000-0000-4b53-8000-1d28000054a9
"""
EXPECTED_TABLE = [
    fl.Partition("uboot", 0x4000, 0x2000),
    fl.Partition("misc", 0x6000, 0x2000),
    fl.Partition("boot", 0x8000, 0x20000),
    fl.Partition("recovery", 0x28000, 0x40000),
    fl.Partition("backup", 0x68000, 0x10000),
    fl.Partition("rootfs", 0x78000, None),
]


# ---------------------------------------------------------------- fixtures


class Bus:
    """The stand-ins' fake USB bus: board state via env, calls read from their log."""

    def __init__(self, monkeypatch, log: Path):
        self.monkeypatch, self.log = monkeypatch, log

    def board(self, kind: str) -> None:
        self.monkeypatch.setenv("FLASH_STANDIN_BOARD", kind)

    def fail(self, spec: str, rc: int | None = None) -> None:
        self.monkeypatch.setenv("FLASH_STANDIN_FAIL", spec)
        if rc is not None:
            self.monkeypatch.setenv("FLASH_STANDIN_FAIL_RC", str(rc))

    def calls(self, tool: str = "rkdeveloptool") -> list[list[str]]:
        if not self.log.exists():
            return []
        rows = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [row["argv"] for row in rows if row["tool"] == tool]


@pytest.fixture
def bus(tmp_path, monkeypatch) -> Bus:
    monkeypatch.setenv("PATH", f"{STANDINS}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FLASH_STANDIN_LOG", str(tmp_path / "usb-calls.jsonl"))
    for name in ("FLASH_STANDIN_BOARD", "FLASH_STANDIN_FAIL", "FLASH_STANDIN_FAIL_RC"):
        monkeypatch.delenv(name, raising=False)
    return Bus(monkeypatch, tmp_path / "usb-calls.jsonl")


@pytest.fixture
def rockdev(tmp_path) -> Path:
    """An SDK rockdev/: loader, parameter.txt and images for uboot, boot, rootfs (no misc)."""
    d = tmp_path / "sdk" / "rockdev"
    d.mkdir(parents=True)
    (d / "MiniLoaderAll.bin").write_bytes(b"BOOT" + os.urandom(2000))
    (d / "parameter.txt").write_text(PARAMETER_GPT)
    (d / "uboot.img").write_bytes(os.urandom(4096))
    (d / "boot.img").write_bytes(os.urandom(300_000))
    (d / "rootfs.img").write_bytes(os.urandom(200_000))
    return d


class Lines(list):
    def __call__(self, line: str) -> None:
        self.append(line)


# ---------------------------------------------------------------- parameter.txt


def test_parse_parameter_reads_rk3576_table():
    assert fl.parse_parameter(PARAMETER_GPT) == EXPECTED_TABLE


def test_parse_parameter_tolerates_crlf_and_other_kernel_args():
    text = "TYPE: GPT\r\nCMDLINE: console=ttyFIQ0 " + MTDPARTS + " rootwait\r\n"
    assert fl.parse_parameter(text) == EXPECTED_TABLE


def test_parse_parameter_without_mtdparts_is_a_user_error():
    with pytest.raises(UserError, match="no `CMDLINE: mtdparts="):
        fl.parse_parameter("FIRMWARE_VER: 1.0\nMACHINE_MODEL: RK3576\n")


def test_parse_parameter_names_a_broken_entry():
    with pytest.raises(UserError, match=r"0x2000\(boot"):
        fl.parse_parameter("CMDLINE: mtdparts=rk29xxnand:0x2000@0x4000(uboot),0x2000(boot)\n")


# ---------------------------------------------------------------- device lists


@pytest.mark.parametrize("tool", ["rkdeveloptool", "upgrade_tool"])
@pytest.mark.parametrize("kind,mode", [("maskrom", "Maskrom"), ("loader", "Loader")])
def test_find_devices_parses_both_tools(bus, tool, kind, mode):
    bus.board(kind)
    assert fl.find_devices(tool) == [fl.Device(1, 0x2207, 0x350E, "104", mode)]


def test_find_devices_counts_only_rk3576(bus):
    bus.board("other")  # an RK3588 (2207:350b) in MaskROM
    assert fl.find_devices() == []
    bus.board("none")
    assert fl.find_devices("upgrade_tool") == []


def test_parse_device_list_reads_older_upgrade_tool_format():
    old = "List of rockusb connected\nDevNo=1 Vid=0x2207,Pid=0x350e,LocationID=106    Loader\n"
    assert fl.parse_device_list(old) == [fl.Device(1, 0x2207, 0x350E, "106", "Loader")]


# ---------------------------------------------------------------- rkdeveloptool


def test_rkdeveloptool_full_flash_in_maskrom(bus, rockdev):
    echo = Lines()
    fl.flash_rkdeveloptool(rockdev, echo=echo)
    assert bus.calls() == [
        ["ld"],
        ["db", str(rockdev / "MiniLoaderAll.bin")],
        ["gpt", str(rockdev / "parameter.txt")],
        ["wl", "0x4000", str(rockdev / "uboot.img")],
        ["wl", "0x8000", str(rockdev / "boot.img")],
        ["wl", "0x78000", str(rockdev / "rootfs.img")],
        ["rd"],
    ]
    for expected in ("Downloading bootloader succeeded.", "Write LBA from file (100%)", "Reset Device OK."):
        assert expected in echo
    assert not any("\x1b" in line or "\r" in line for line in echo)
    # Progress repeats per 64 KiB; only changes reach the user.
    assert all(a != b for a, b in itertools.pairwise(echo))


def test_rkdeveloptool_loader_mode_writes_only_chosen_partitions(bus, rockdev):
    bus.board("loader")
    fl.flash_rkdeveloptool(rockdev, partitions=["boot", "rootfs"], echo=Lines())
    assert bus.calls() == [
        ["ld"],
        ["wl", "0x8000", str(rockdev / "boot.img")],
        ["wl", "0x78000", str(rockdev / "rootfs.img")],
        ["rd"],
    ]


def test_rkdeveloptool_legacy_parameter_uses_prm(bus, rockdev):
    (rockdev / "parameter.txt").write_text(PARAMETER_GPT.replace("TYPE: GPT\n", ""))
    fl.flash_rkdeveloptool(rockdev, echo=Lines())
    assert bus.calls()[1:3] == [["db", str(rockdev / "MiniLoaderAll.bin")], ["prm", str(rockdev / "parameter.txt")]]


def test_no_board_says_how_to_connect_it(bus, rockdev):
    bus.board("none")
    with pytest.raises(UserError) as err:
        fl.flash_rkdeveloptool(rockdev, echo=Lines())
    message = str(err.value)
    assert fl.UDEV_RULE in message
    assert 'ATTR{idProduct}=="350e"' in message
    assert "udevadm control --reload && sudo udevadm trigger" in message
    assert "MaskROM" in message and "reboot loader" in message and "OTG" in message
    assert bus.calls() == [["ld"]]  # nothing written


def test_no_board_with_upgrade_tool_and_other_chip_named(bus, tmp_path):
    bus.board("other")
    img = tmp_path / "update.img"
    img.write_bytes(b"RKFW" + os.urandom(1000))
    with pytest.raises(UserError, match=r"2207:350b \(Maskrom\)") as err:
        fl.flash_upgrade_tool(img, echo=Lines())
    assert fl.UDEV_RULE in str(err.value)
    assert bus.calls("upgrade_tool") == [["ld"]]


def test_two_boards_are_refused(bus, rockdev):
    bus.board("two")
    with pytest.raises(UserError, match="unplug the others"):
        fl.flash_rkdeveloptool(rockdev, echo=Lines())
    assert bus.calls() == [["ld"]]


def test_failing_write_reports_the_tools_last_lines(bus, rockdev):
    bus.fail("wl@0x8000")
    with pytest.raises(UserError) as err:
        fl.flash_rkdeveloptool(rockdev, echo=Lines())
    message = str(err.value)
    assert f"wl 0x8000 {rockdev / 'boot.img'}" in message
    assert "Write LBA failed!" in message and "exit status 1" in message
    assert bus.calls()[-1] == ["wl", "0x8000", str(rockdev / "boot.img")]  # stopped: no rootfs, no rd


def test_failing_db_stops_before_any_write(bus, rockdev):
    bus.fail("db")
    with pytest.raises(UserError, match="Downloading bootloader failed!"):
        fl.flash_rkdeveloptool(rockdev, echo=Lines())
    assert [c[0] for c in bus.calls()] == ["ld", "db"]


def test_image_larger_than_partition_is_refused_before_flashing(bus, rockdev):
    (rockdev / "uboot.img").write_bytes(b"\0" * (0x2000 * 512 + 1))
    with pytest.raises(UserError, match="uboot.img .* larger than partition uboot"):
        fl.flash_rkdeveloptool(rockdev, echo=Lines())
    assert bus.calls() == []


def test_unknown_or_missing_partition_is_refused(bus, rockdev):
    with pytest.raises(UserError, match="no partition 'kernel'.*uboot, misc, boot"):
        fl.flash_rkdeveloptool(rockdev, partitions=["kernel"], echo=Lines())
    with pytest.raises(UserError, match="misc.img does not exist"):
        fl.flash_rkdeveloptool(rockdev, partitions=["misc"], echo=Lines())
    assert bus.calls() == []


def test_missing_loader_names_the_file(bus, rockdev):
    (rockdev / "MiniLoaderAll.bin").unlink()
    with pytest.raises(UserError, match="MiniLoaderAll.bin does not exist"):
        fl.flash_rkdeveloptool(rockdev, echo=Lines())


@pytest.mark.parametrize(
    "tool,hint", [("rkdeveloptool", "Debian's package `rkdeveloptool`"), ("upgrade_tool", "Linux_Upgrade_Tool")]
)
def test_missing_tool_says_how_to_get_it(tmp_path, monkeypatch, tool, hint):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="not found") as err:
        fl.find_devices(tool)
    assert hint in str(err.value)


# ---------------------------------------------------------------- upgrade_tool


@pytest.fixture
def rkfw(tmp_path) -> Path:
    img = tmp_path / "update.img"
    img.write_bytes(b"RKFW" + os.urandom(5000))
    return img


def test_upgrade_tool_flashes_whole_image(bus, rkfw):
    echo = Lines()
    fl.flash_upgrade_tool(rkfw, echo=echo)
    assert bus.calls("upgrade_tool") == [["ld"], ["uf", str(rkfw)]]
    assert "Download Image... (50%)" in echo  # \r-separated progress arrives as lines
    assert "Download Image... (100%)" in echo
    assert echo[-1] == "Upgrade firmware ok."


@pytest.mark.parametrize("rc", [1, 0])
def test_upgrade_tool_failure_is_reported_even_with_exit_0(bus, rkfw, rc):
    bus.fail("uf", rc=rc)
    with pytest.raises(UserError) as err:
        fl.flash_upgrade_tool(rkfw, echo=Lines())
    assert "Download Firmware Fail" in str(err.value)
    assert "Download Image... (45%)" in str(err.value)


def test_upgrade_tool_refuses_the_demo_tar(bus, tmp_path):
    img = _demo_image(tmp_path / "update.img")
    with pytest.raises(UserError, match="--method virtual"):
        fl.flash_upgrade_tool(img, echo=Lines())
    assert bus.calls("upgrade_tool") == []


def test_output_streams_while_the_tool_runs(tmp_path, monkeypatch):
    # The child prints (no flush) then waits for a file that only the echo callback
    # creates: it finishes only if its line reached us while it was running, which
    # a pipe would prevent (stdio buffers a pipe's output until exit, like C tools).
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    go = tmp_path / "go"
    child = (
        "import os, time\n"
        "print('ready')\n"
        "t = time.time() + 5\n"
        f"while not os.path.exists({str(go)!r}) and time.time() < t: time.sleep(0.01)\n"
        f"print('done' if os.path.exists({str(go)!r}) else 'timeout')\n"
    )
    seen = []

    def echo(line):
        seen.append(line)
        if line == "ready":
            go.touch()

    rc, tail = fl._run_streaming([sys.executable, "-c", child], echo)
    assert rc == 0 and seen == ["ready", "done"] and tail == seen


# ---------------------------------------------------------------- the virtual board


def _demo_image(path: Path, extra: dict[str, bytes] | None = None, hostile: tarfile.TarInfo | None = None) -> Path:
    members = {
        "parameter.txt": PARAMETER_GPT.encode(),
        "MiniLoaderAll.bin": b"BOOT" + b"\0" * 100,
        "uboot.img": b"uboot",
        "boot.img": b"ARM64-KERNEL" * 1000,
        "rootfs.img": b"\x1f\x8brootfs-cpio",
        "modules.img": b"\x1f\x8bmodules-cpio",
    }
    members.update(extra or {})
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if hostile is not None:
            tar.addfile(hostile, io.BytesIO(b"x" * hostile.size) if hostile.isfile() else None)
    return path


def test_flash_virtual_writes_kernel_and_initrd(tmp_path):
    board = tmp_path / "board"
    boot = fl.flash_virtual(_demo_image(tmp_path / "update.img"), board)
    assert boot == board / "boot"
    assert (boot / "vmlinuz").read_bytes() == b"ARM64-KERNEL" * 1000
    assert (boot / "initrd.img").read_bytes() == b"\x1f\x8brootfs-cpio\x1f\x8bmodules-cpio"
    # A second flash replaces the boot files whole and leaves no staging behind.
    fl.flash_virtual(_demo_image(tmp_path / "update2.img", {"boot.img": b"NEW"}), board)
    assert (boot / "vmlinuz").read_bytes() == b"NEW"
    assert sorted(p.name for p in board.iterdir()) == ["boot"]


def _assert_board_untouched(board: Path) -> None:
    assert (board / "boot" / "vmlinuz").read_bytes() == b"OLD"
    assert sorted(p.name for p in board.iterdir()) == ["boot"]


@pytest.fixture
def old_board(tmp_path) -> Path:
    board = tmp_path / "board"
    (board / "boot").mkdir(parents=True)
    (board / "boot" / "vmlinuz").write_bytes(b"OLD")
    return board


def test_flash_virtual_refuses_rkfw(tmp_path, old_board, rkfw):
    with pytest.raises(UserError, match="RKFW.*--method upgrade_tool"):
        fl.flash_virtual(rkfw, old_board)
    _assert_board_untouched(old_board)


def test_flash_virtual_refuses_what_is_not_a_tar(tmp_path, old_board):
    junk = tmp_path / "update.img"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(UserError, match="not the virtual board's image"):
        fl.flash_virtual(junk, old_board)
    _assert_board_untouched(old_board)


def _info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 1, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, (size if kind == tarfile.REGTYPE else 0), link
    return info


@pytest.mark.parametrize(
    "hostile",
    [
        _info("../escape.img"),
        _info("/etc/evil.img"),
        _info("sub/boot.img"),
        _info("vmlinuz", tarfile.SYMTYPE, link="/etc/passwd"),
        _info("dev.img", tarfile.CHRTYPE),
    ],
    ids=["dotdot", "absolute", "nested", "symlink", "device"],
)
def test_flash_virtual_refuses_hostile_tar(tmp_path, old_board, hostile):
    img = _demo_image(tmp_path / "update.img", hostile=hostile)
    with pytest.raises(UserError, match="refusing it"):
        fl.flash_virtual(img, old_board)
    _assert_board_untouched(old_board)
    assert not (tmp_path / "escape.img").exists()


def test_flash_virtual_needs_kernel_and_rootfs(tmp_path, old_board):
    img = tmp_path / "update.img"
    with tarfile.open(img, "w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("parameter.txt")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(UserError, match="lacks boot.img, rootfs.img"):
        fl.flash_virtual(img, old_board)
    _assert_board_untouched(old_board)


# ---------------------------------------------------------------- dispatch and command line


def test_main_virtual_from_recipe_defaults(tmp_path, capsys):
    sdk = tmp_path / "sdk"
    image = sdk / "output" / "update" / "Image" / "update.img"
    image.parent.mkdir(parents=True)
    _demo_image(image)
    assert flash_command.main([], {"method": "virtual"}, sdk_dir=sdk, work_dir=tmp_path / "work") == 0
    assert (tmp_path / "work" / "board" / "boot" / "vmlinuz").read_bytes() == b"ARM64-KERNEL" * 1000
    assert "virtual board updated" in capsys.readouterr().out


def test_main_rkdeveloptool_defaults_to_sdk_rockdev(bus, rockdev, capsys):
    rc = flash_command.main(["--partition", "boot"], {"method": "rkdeveloptool"}, sdk_dir=rockdev.parent)
    assert rc == 0
    assert bus.calls() == [["ld"], ["db", str(rockdev / "MiniLoaderAll.bin")],
                           ["wl", "0x8000", str(rockdev / "boot.img")], ["rd"]]


def test_main_user_errors_exit_2_with_one_message(tmp_path, capsys):
    rc = flash_command.main(["--method", "virtual", "--image", str(tmp_path / "nope.img"),
                             "--board-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("rk3576-build: error: flash: the image") and "nope.img does not exist" in err
    assert "Traceback" not in err
    assert flash_command.main(["--method", "usb-magic"]) == 2
    assert flash_command.main([], {"method": "dfu"}) == 2
    assert "recipe flash.method is 'dfu'" in capsys.readouterr().err


def test_flash_dispatch_needs_its_inputs():
    with pytest.raises(UserError, match="needs the update.img"):
        fl.flash("upgrade_tool", update_img=None, image_dir=None, board_dir=None)
    with pytest.raises(UserError, match="unknown method 'jtag'"):
        fl.flash("jtag", update_img=None, image_dir=None, board_dir=None)
