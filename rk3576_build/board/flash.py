"""Putting a built image on a board: Rockchip's upgrade_tool, the open rkdeveloptool,
and the virtual (QEMU) board of the demo."""

from __future__ import annotations

import collections
import errno
import os
import pty
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rk3576_build.config.model import FLASH_METHODS
from rk3576_build.core import logs
from rk3576_build.core.errors import UserError
from rk3576_build.core.text import strip_ansi

_log = logs.get(__name__)

RK_VID = 0x2207
RK3576_PID = 0x350E
UDEV_RULE = 'SUBSYSTEM=="usb", ATTR{idVendor}=="2207", ATTR{idProduct}=="350e", MODE="0666"'
UDEV_RULE_FILE = "/etc/udev/rules.d/99-rk3576-rockusb.rules"

_TOOL_HINTS = {
    "rkdeveloptool": "install Debian's package `rkdeveloptool` (apt-get install rkdeveloptool) "
    "or build it from https://github.com/rockchip-linux/rkdeveloptool, "
    "or pass --tool /path/to/rkdeveloptool",
    "upgrade_tool": "it ships in Rockchip's SDK under tools/linux/Linux_Upgrade_Tool/ "
    "(put upgrade_tool on PATH or pass --tool /path/to/upgrade_tool)",
}

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Partition:
    """One parameter.txt partition; offset and size in 512-byte sectors (size None = grows)."""

    name: str
    offset: int
    size: int | None


@dataclass(frozen=True)
class Device:
    """One rockusb device from `<tool> ld`; mode is "Maskrom" or "Loader"."""

    devno: int
    vid: int
    pid: int
    location: str
    mode: str


# ---------------------------------------------------------------- parameter.txt

_PART_RE = re.compile(r"^\s*(-|[0-9A-Fa-fxX]+)\s*@\s*([0-9A-Fa-fxX]+)\s*\(([^)]*)\)\s*$")


def _number(text: str, what: str, entry: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise UserError(
            f"parameter.txt: bad {what} {text!r} in partition entry {entry!r}; "
            "expected hex like 0x00002000@0x00004000(uboot)"
        ) from None


def parse_parameter(text: str) -> list[Partition]:
    """Partitions from a Rockchip parameter.txt's `CMDLINE: mtdparts=...` line."""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or "mtdparts" not in line:
            continue
        # Like rkdeveloptool: the list starts after the first ':' following "mtdparts".
        after = line[line.index("mtdparts"):]
        colon = after.find(":")
        if colon < 0:
            continue
        # The list ends at the first blank: other kernel arguments may follow it.
        spec = (after[colon + 1:].split() or [""])[0]
        partitions = []
        for entry in filter(None, (e.strip() for e in spec.split(","))):
            match = _PART_RE.match(entry)
            if not match:
                raise UserError(
                    f"parameter.txt: cannot read partition entry {entry!r}; "
                    "expected size@offset(name), e.g. 0x00002000@0x00004000(uboot) or -@0x00078000(rootfs:grow)"
                )
            size_text, offset_text, name = match.groups()
            # Flags after ':' (grow, bootable) are not part of the partition's name.
            name = name.split(":", 1)[0].strip()
            size = None if size_text == "-" else _number(size_text, "size", entry)
            partitions.append(Partition(name, _number(offset_text, "offset", entry), size))
        if partitions:
            return partitions
    raise UserError(
        "parameter.txt has no `CMDLINE: mtdparts=rk29xxnand:...` partition list; "
        "use the parameter.txt that the SDK's build put in rockdev/ (output/firmware/)"
    )


def _is_gpt(text: str) -> bool:
    return any(re.match(r"\s*TYPE\s*:\s*GPT\b", line, re.I) for line in text.splitlines())


# ---------------------------------------------------------------- running the tools


def _resolve_tool(tool: str) -> str:
    found = shutil.which(tool)
    if found:
        return found
    hint = _TOOL_HINTS.get(Path(tool).name, "check the path given with --tool")
    raise UserError(f"flash: the tool {tool!r} was not found; {hint}")


def _run_streaming(cmd: Sequence[str], echo: Echo, keep: int = 15) -> tuple[int, list[str]]:
    """Run cmd, echo each output line as it comes (\\r or \\n ends a line); return (rc, last lines)."""
    tail: collections.deque[str] = collections.deque(maxlen=keep)
    last_echoed = None
    pending = b""

    def emit(raw: bytes) -> None:
        nonlocal last_echoed
        line = strip_ansi(raw.decode("utf-8", "replace")).strip()
        # Progress is reprinted per 64 KiB with the same percentage: echo only changes.
        if line and line != last_echoed:
            echo(line)
            last_echoed = line
            tail.append(line)

    # A pty, not a pipe: the tools' stdio would hold a pipe's output back in 4 KiB blocks.
    try:
        master, slave = pty.openpty()
    except OSError:  # no pty on this host: a pipe still works, only less live
        master, slave = os.pipe()
    try:
        proc = subprocess.Popen(cmd, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL)
    except OSError as exc:
        os.close(master)
        raise UserError(f"flash: cannot run {cmd[0]}: {exc.strerror}; check the tool (--tool)") from None
    finally:
        os.close(slave)
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError as exc:  # EIO: every writer has closed the pty
                if exc.errno != errno.EIO:
                    raise
                chunk = b""
            if not chunk:
                break
            parts = re.split(rb"[\r\n]", pending + chunk)
            pending = parts.pop()
            for part in parts:
                emit(part)
        emit(pending)
        rc = proc.wait()
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return rc, list(tail)


def _tool_failed(cmd: Sequence[str], rc: int, tail: list[str]) -> UserError:
    text = "\n  ".join(tail) or "(no output)"
    hint = ""
    if any("Creating Comm Object failed" in line or "LIBUSB_ERROR_ACCESS" in line for line in tail):
        hint = f"\nNo permission on the USB device: run as root or add the udev rule {UDEV_RULE}"
    return UserError(
        f"flash: `{' '.join(cmd)}` failed (exit status {rc}); its last lines:\n  {text}{hint}\n"
        "Nothing is lost: put the board back in MaskROM/Loader mode and run flash again."
    )


def _run_tool(cmd: Sequence[str], echo: Echo) -> list[str]:
    echo("$ " + " ".join(cmd))
    rc, tail = _run_streaming(cmd, echo)
    if rc != 0:
        raise _tool_failed(cmd, rc, tail)
    return tail


# ---------------------------------------------------------------- finding the board

_DEV_RE = re.compile(
    r"DevNo=(\d+)\s+Vid=0x([0-9A-Fa-f]+)\s*,\s*Pid=0x([0-9A-Fa-f]+)\s*,\s*LocationID=(\w+)\s+(?:Mode=)?(\w+)"
)


def parse_device_list(text: str) -> list[Device]:
    """Every device line of rkdeveloptool's or upgrade_tool's `ld` output (any chip)."""
    return [
        Device(int(m[1]), int(m[2], 16), int(m[3], 16), m[4], m[5])
        for m in _DEV_RE.finditer(strip_ansi(text))
    ]


def _is_rk3576(device: Device) -> bool:
    return (device.vid, device.pid) == (RK_VID, RK3576_PID)


def find_devices(tool: str = "rkdeveloptool") -> list[Device]:
    """The RK3576 boards (USB 2207:350e) that `<tool> ld` lists."""
    return [d for d in _list_all(tool) if _is_rk3576(d)]


def _list_all(tool: str) -> list[Device]:
    cmd = [_resolve_tool(tool), "ld"]
    try:
        result = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    except subprocess.TimeoutExpired:
        raise UserError(f"flash: `{' '.join(cmd)}` did not answer within 60 s; replug the board and retry") from None
    except OSError as exc:
        raise UserError(f"flash: cannot run {cmd[0]}: {exc.strerror}; check the tool (--tool)") from None
    out = (result.stdout + result.stderr).decode("utf-8", "replace")
    devices = parse_device_list(out)
    # Both tools exit 0 with an empty list; anything else unreadable is the tool's failure.
    listing = devices or "not found any devices" in out or "List of rockusb" in out
    if result.returncode != 0 and not listing:
        raise _tool_failed(cmd, result.returncode, out.strip().splitlines()[-15:])
    return devices


def no_board_message(others: Iterable[Device] = ()) -> str:
    """What to do when no RK3576 is on USB."""
    seen = ", ".join(f"{d.vid:04x}:{d.pid:04x} ({d.mode})" for d in others)
    return (
        "flash: no RK3576 board (USB 2207:350e) in MaskROM or Loader mode was found"
        + (f" (other Rockchip devices seen: {seen})" if seen else "")
        + ".\nTo fix:\n"
        "  1. Put the board in flash mode: hold the MaskROM (or Recovery) key while powering it on, "
        "or run `reboot loader` on the board.\n"
        "  2. Connect the board's USB-C OTG port (not the debug port) to this machine with a data cable.\n"
        f"  3. Let your user reach the device: put this line in {UDEV_RULE_FILE}\n"
        f"       {UDEV_RULE}\n"
        "     then run `sudo udevadm control --reload && sudo udevadm trigger` and replug the board.\n"
        "Then run flash again."
    )


def _the_board(tool: str) -> Device:
    everything = _list_all(tool)
    boards = [d for d in everything if _is_rk3576(d)]
    if not boards:
        raise UserError(no_board_message(everything))
    if len(boards) > 1:
        raise UserError(
            f"flash: {len(boards)} RK3576 boards are connected in flash mode; "
            "the tools flash exactly one: unplug the others and run flash again"
        )
    return boards[0]


# ---------------------------------------------------------------- real boards


def _is_plain_tar(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(257)
        return f.read(5) == b"ustar"


def _need_file(path: Path, what: str, fix: str) -> None:
    if not path.is_file():
        raise UserError(f"flash: {what} {path} does not exist; {fix}")


def flash_upgrade_tool(update_img: Path, *, tool: str = "upgrade_tool", echo: Echo = _log.info) -> None:
    """Flash the whole update.img with Rockchip's `upgrade_tool uf`."""
    update_img = Path(update_img)
    _need_file(update_img, "the image", "build it first (./build.sh updateimg) or pass --image")
    if _is_plain_tar(update_img):
        raise UserError(
            f"flash: {update_img} is the demo's virtual-board image (a plain tar), not a Rockchip update.img; "
            "flash it with --method virtual"
        )
    resolved = _resolve_tool(tool)
    board = _the_board(tool)
    echo(f"board found: DevNo={board.devno} LocationID={board.location} mode={board.mode}")
    cmd = [resolved, "uf", str(update_img)]
    tail = _run_tool(cmd, echo)
    # upgrade_tool's exit status is not documented: trust its words too.
    ok = any("upgrade firmware ok" in line.lower() for line in tail)
    if not ok and any("fail" in line.lower() for line in tail):
        raise _tool_failed(cmd, 0, tail)


def _partition_file(image_dir: Path, name: str) -> Path:
    return image_dir / f"{name}.img"


def flash_rkdeveloptool(
    image_dir: Path,
    *,
    tool: str = "rkdeveloptool",
    partitions: Sequence[str] | None = None,
    echo: Echo = _log.info,
) -> None:
    """Flash the SDK's rockdev/ images: db loader, partition table, wl <offset> per image, rd.

    partitions=None writes the partition table and every partition that has an image;
    a list writes only those partitions (e.g. ["boot", "rootfs"] after a driver bump).
    """
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise UserError(f"flash: image directory {image_dir} does not exist; build first or pass --image-dir")
    loader = image_dir / "MiniLoaderAll.bin"
    param_file = image_dir / "parameter.txt"
    fix = "run the SDK build (./build.sh u-boot, ./build.sh kernel, ...) or pass --image-dir"
    _need_file(loader, "the loader", fix)
    _need_file(param_file, "the partition table", fix)
    param_text = param_file.read_text(errors="replace")
    table = {p.name: p for p in parse_parameter(param_text)}

    plan = _write_plan(image_dir, table, partitions)
    resolved = _resolve_tool(tool)
    board = _the_board(tool)
    echo(f"board found: DevNo={board.devno} LocationID={board.location} mode={board.mode}")
    maskrom = board.mode.lower() == "maskrom"

    # In MaskROM only the boot ROM runs: db starts the loader in RAM. A board in
    # Loader mode already runs it, and rkdeveloptool refuses db there.
    if maskrom:
        _run_tool([resolved, "db", str(loader)], echo)
    if partitions is None:
        if not _is_gpt(param_text):
            _run_tool([resolved, "prm", str(param_file)], echo)
        elif maskrom:
            _run_tool([resolved, "gpt", str(param_file)], echo)
        else:
            echo("board is in Loader mode: keeping its GPT (rkdeveloptool writes a GPT in MaskROM mode only)")
    for part, path in plan:
        echo(f"writing {part.name} ({path.name}) at sector {part.offset:#x}")
        _run_tool([resolved, "wl", f"{part.offset:#x}", str(path)], echo)
    _run_tool([resolved, "rd"], echo)


def _write_plan(
    image_dir: Path, table: Mapping[str, Partition], wanted: Sequence[str] | None
) -> list[tuple[Partition, Path]]:
    """(partition, image) pairs to write; checks names and sizes before anything is written."""
    if wanted is None:
        plan = [(p, _partition_file(image_dir, p.name)) for p in table.values()]
        plan = [(p, f) for p, f in plan if f.is_file()]
        if not plan:
            raise UserError(
                f"flash: {image_dir} has no image for any partition of parameter.txt "
                f"({', '.join(table)}); expected files like boot.img"
            )
    else:
        plan = []
        for name in wanted:
            if name not in table:
                raise UserError(
                    f"flash: parameter.txt has no partition {name!r}; its partitions: {', '.join(table)}"
                )
            path = _partition_file(image_dir, name)
            _need_file(path, f"the image for partition {name!r},", "build it or drop the partition")
            plan.append((table[name], path))
    for part, path in plan:
        if part.size is not None and path.stat().st_size > part.size * 512:
            raise UserError(
                f"flash: {path.name} ({path.stat().st_size} bytes) is larger than partition "
                f"{part.name} ({part.size * 512} bytes); fix parameter.txt or the image"
            )
    return plan


# ---------------------------------------------------------------- the virtual board

_VIRTUAL_REQUIRED = ("boot.img", "rootfs.img")
_VIRTUAL_KNOWN = {"parameter.txt", "MiniLoaderAll.bin", "uboot.img", "boot.img", "rootfs.img", "modules.img"}


def _virtual_members(tar: tarfile.TarFile, update_img: Path) -> dict[str, tarfile.TarInfo]:
    members: dict[str, tarfile.TarInfo] = {}
    for info in tar.getmembers():
        name = info.name
        while name.startswith("./"):
            name = name[2:]
        if name in ("", "."):
            continue
        if name.startswith("/") or "/" in name or name == ".." or "\\" in name:
            raise UserError(
                f"flash: {update_img} holds the entry {info.name!r} (a path, not a plain file name); "
                "refusing it: rebuild update.img with ./build.sh updateimg"
            )
        if not info.isfile():
            raise UserError(
                f"flash: {update_img} holds {info.name!r}, which is not a regular file; "
                "refusing it: rebuild update.img with ./build.sh updateimg"
            )
        members[name] = info
    return members


def flash_virtual(update_img: Path, board_dir: Path) -> Path:
    """Install the demo update.img (a plain tar) on the virtual board; returns <board_dir>/boot.

    Writes boot/vmlinuz (= boot.img) and boot/initrd.img (= rootfs.img + modules.img)
    into a fresh directory and swaps it in, so the board never sees a half-written boot.
    """
    update_img, board_dir = Path(update_img), Path(board_dir)
    _need_file(update_img, "the image", "build it first (./build.sh updateimg) or pass --image")
    with open(update_img, "rb") as f:
        magic = f.read(4)
    if magic == b"RKFW":
        raise UserError(
            f"flash: {update_img} is a Rockchip RKFW firmware for a real board; "
            "flash it with --method upgrade_tool (or --method rkdeveloptool with the rockdev/ images)"
        )
    if not _is_plain_tar(update_img):
        raise UserError(
            f"flash: {update_img} is not the virtual board's image (a plain POSIX tar of "
            "parameter.txt, MiniLoaderAll.bin, uboot.img, boot.img, rootfs.img, modules.img); "
            "rebuild it with the demo recipe"
        )
    board_dir.mkdir(parents=True, exist_ok=True)
    final = board_dir / "boot"
    stage = Path(tempfile.mkdtemp(prefix=".boot-new-", dir=board_dir))
    try:
        with tarfile.open(update_img, "r:") as tar:
            members = _virtual_members(tar, update_img)
            missing = [n for n in _VIRTUAL_REQUIRED if n not in members]
            if missing:
                raise UserError(
                    f"flash: {update_img} lacks {', '.join(missing)}; rebuild it (./build.sh updateimg)"
                )
            _copy_members(tar, [members["boot.img"]], stage / "vmlinuz")
            parts = [members["rootfs.img"]] + ([members["modules.img"]] if "modules.img" in members else [])
            _copy_members(tar, parts, stage / "initrd.img")
        os.chmod(stage, 0o755)
        _swap_dir(stage, final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return final


def _copy_members(tar: tarfile.TarFile, members: list[tarfile.TarInfo], dest: Path) -> None:
    with open(dest, "wb") as out:
        for info in members:
            src = tar.extractfile(info)
            assert src is not None  # regular files only (checked)
            shutil.copyfileobj(src, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())


def _swap_dir(new: Path, final: Path) -> None:
    """Replace final with new; readers see the old or the new directory, never a mix."""
    old = None
    if final.exists() or final.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=".boot-old-", dir=final.parent))
        os.rename(final, old / "boot")
    os.rename(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- dispatch


def flash(
    method: str,
    *,
    update_img: Path | None,
    image_dir: Path | None,
    board_dir: Path | None,
    echo: Echo = _log.info,
    tool: str | None = None,
    partitions: Sequence[str] | None = None,
) -> str:
    """Flash with one method: "upgrade_tool" | "rkdeveloptool" | "virtual"; `echo` gets the progress.

    Returns what was done, in one line (the flash command's output).
    """
    if method == "upgrade_tool":
        if update_img is None:
            raise UserError("flash: --method upgrade_tool needs the update.img (--image)")
        flash_upgrade_tool(update_img, tool=tool or "upgrade_tool", echo=echo)
        return f"flashed {update_img} with upgrade_tool"
    if method == "rkdeveloptool":
        if image_dir is None:
            raise UserError("flash: --method rkdeveloptool needs the SDK's rockdev/ directory (--image-dir)")
        flash_rkdeveloptool(image_dir, tool=tool or "rkdeveloptool", partitions=partitions, echo=echo)
        return f"flashed {image_dir} with rkdeveloptool" + (f" ({', '.join(partitions)})" if partitions else "")
    if method == "virtual":
        if update_img is None or board_dir is None:
            raise UserError("flash: --method virtual needs the update.img (--image) and the board directory "
                            "(--board-dir)")
        boot = flash_virtual(update_img, board_dir)
        return f"virtual board updated: {boot / 'vmlinuz'}, {boot / 'initrd.img'}"
    raise UserError(f"flash: unknown method {method!r}; choose one of {', '.join(FLASH_METHODS)}")
