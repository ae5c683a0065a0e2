"""The virtual MYD-LR3576: a QEMU arm64 board with the sample RKNPU driver and a serial login.

Host side only: builds the board's initramfs from the board kit and boots it in
`qemu-system-aarch64`, its serial console on a loopback TCP port or a pty. At boot
the board gets the RKLLM stand-in (`llm_demo` and a stand-in model, see sample/rkllm/)
as one more initramfs archive, so verify's rkllm check has a program to run on a board
booted without a build (the tests' fixtures). A flashed image carries it itself, through
the recipe's rootfs_overlays, and the verify task boots it with `rkllm_standin=False`.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO

from rk3576_build.core.errors import UserError
from rk3576_build.demo.board_kit import Kit, default_cache_dir, ensure_kit
from rk3576_build.demo.sample_driver import driver_files, write_driver_tree

BOARD_SCRIPTS = resources.files("rk3576_build.demo") / "sample" / "board"
RKLLM_SOURCE = resources.files("rk3576_build.demo") / "sample" / "rkllm"
# Where the RKLLM stand-in lands on the board (the rkllm check's defaults point here).
LLM_DEMO_PATH = "usr/bin/llm_demo"
STANDIN_MODEL_PATH = "usr/share/rkllm/standin.rkllm"
CROSS_COMPILE = "aarch64-linux-gnu-"
DRIVER_CONFIG = ("CONFIG_ROCKCHIP_RKNPU=m", "CONFIG_ROCKCHIP_RKNPU_DEBUG_FS=y", "CONFIG_ROCKCHIP_RKNPU_DRM_GEM=y")
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_PTY_LINE = re.compile(r"char device redirected to (/dev/pts/\d+)")


@dataclass(frozen=True)
class BoardImage:
    """What the virtual board boots: a kernel and an initrd."""

    kernel: Path
    initrd: Path


def password_hash(password: str) -> str:
    """sha512-crypt hash of `password` (via `openssl passwd -6 -stdin`: never on argv)."""
    try:
        result = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password + "\n",
                                capture_output=True, text=True, check=True)
    except FileNotFoundError as exc:
        raise UserError("openssl not found: install it (scripts/setup-host.sh does)") from exc
    except subprocess.CalledProcessError as exc:
        raise UserError(f"openssl passwd failed: {exc.stderr.strip()}") from exc
    return result.stdout.strip()


def board_image_from_dir(board_dir: Path) -> BoardImage:
    """The image in `<board_dir>/boot/{vmlinuz,initrd.img}` (the flash helper's virtual layout)."""
    image = BoardImage(kernel=board_dir / "boot" / "vmlinuz", initrd=board_dir / "boot" / "initrd.img")
    for path in (image.kernel, image.initrd):
        if not path.is_file():
            raise UserError(f"virtual board: {path} is missing; flash an image to {board_dir} first")
    return image


def _script(name: str) -> str:
    return str(BOARD_SCRIPTS / name)


def _inputs_key(kit: Kit, driver_version: str, password_hash_: str, mount_debugfs: bool) -> str:
    """A digest of everything the image is made from (cheap: no kernel tree involved)."""
    digest = hashlib.sha256()
    for part in (kit.kernel_release, driver_version, password_hash_, str(mount_debugfs)):
        digest.update(part.encode() + b"\0")
    for rel, content in sorted(driver_files(driver_version).items()):
        digest.update(rel.encode() + b"\0" + content)
    for name in ("init", "mkrootfs.sh", "mkmodules.sh"):
        digest.update((BOARD_SCRIPTS / name).read_bytes())
    return digest.hexdigest()


def _run(cmd: list[str], what: str, **kwargs) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip()[-1500:]
        raise UserError(f"virtual board: {what} failed:\n{tail}")


def build_module(src_dir: Path, kit: Kit) -> Path:
    """Cross-build the driver in `src_dir` against the kit's headers; return the .ko."""
    if not shutil.which(CROSS_COMPILE + "gcc"):
        raise UserError(f"{CROSS_COMPILE}gcc not found: run scripts/setup-host.sh")
    # Out of tree there is no kernel .config: give the driver's switches as the board's would set them.
    _run(["make", "-C", str(kit.headers_dir), f"M={src_dir}", "ARCH=arm64",
          f"CROSS_COMPILE={CROSS_COMPILE}", *DRIVER_CONFIG, "modules"], f"building the driver in {src_dir}")
    return src_dir / "rknpu.ko"


def build_llm_demo(out: Path) -> Path:
    """Cross-compile the llm_demo stand-in (static arm64) to `out`."""
    if not shutil.which(CROSS_COMPILE + "gcc"):
        raise UserError(f"{CROSS_COMPILE}gcc not found: run scripts/setup-host.sh")
    out.parent.mkdir(parents=True, exist_ok=True)
    _run([CROSS_COMPILE + "gcc", "-static", "-O2", "-Wall", "-o", str(out), str(RKLLM_SOURCE / "llm_demo.c")],
         "building the llm_demo stand-in (needs libc6-dev-arm64-cross: run scripts/setup-host.sh)")
    return out


def write_rkllm_overlay(dest: Path) -> Path:
    """A rootfs overlay tree with the RKLLM stand-in: llm_demo and its model, at their board paths."""
    build_llm_demo(dest / LLM_DEMO_PATH).chmod(0o755)
    model = dest / STANDIN_MODEL_PATH
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_bytes((RKLLM_SOURCE / "standin.rkllm").read_bytes())
    model.chmod(0o644)
    return dest


def pack_overlay(tree: Path, out: Path) -> Path:
    """A gzip'd newc cpio of `tree` (owned by root), to append to an initramfs."""
    _run(["sh", "-c", 'cd "$1" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 | gzip -n -6 >"$2"',
          "pack", str(tree), str(out.resolve())], f"packing {tree}")
    return out


def rkllm_standin_archive(cache_dir: Path | None = None) -> Path:
    """The RKLLM stand-in overlay as an initramfs archive, built once per source version and cached."""
    digest = hashlib.sha256()
    for name in ("llm_demo.c", "standin.rkllm"):
        digest.update((RKLLM_SOURCE / name).read_bytes())
    cache_dir = cache_dir or default_cache_dir().parent / "rkllm-standin"
    archive = cache_dir / f"{digest.hexdigest()[:16]}.cpio.gz"
    if not archive.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".build-") as tmp:
            pack_overlay(write_rkllm_overlay(Path(tmp) / "tree"), Path(tmp) / "standin.cpio.gz")
            os.replace(Path(tmp) / "standin.cpio.gz", archive)
    return archive


def build_board_image(out_dir: Path, *, driver_version: str = "0.9.8", password_hash: str,
                      mount_debugfs: bool = True, kit: Kit | None = None) -> BoardImage:
    """Build (or reuse, when its inputs are unchanged) a bootable image in `out_dir/boot`."""
    kit = kit or ensure_kit()
    boot = out_dir / "boot"
    stamp = boot / ".inputs"
    key = _inputs_key(kit, driver_version, password_hash, mount_debugfs)
    if stamp.is_file() and stamp.read_text() == key:
        try:
            return board_image_from_dir(out_dir)
        except UserError:
            pass  # half-deleted output: rebuild
    boot.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".build-") as tmp:
        work = Path(tmp)
        ko = build_module(write_driver_tree(work / "rknpu", driver_version), kit)
        env = {**os.environ, "ROOT_PASSWORD_HASH": password_hash,
               "MOUNT_DEBUGFS": "1" if mount_debugfs else "0"}
        _run(["sh", _script("mkrootfs.sh"), str(kit.root), str(work / "rootfs.cpio.gz")],
             "mkrootfs.sh", env=env)
        _run(["sh", _script("mkmodules.sh"), kit.kernel_release, str(work / "modules.cpio.gz"),
              str(ko)], "mkmodules.sh")
        with open(work / "initrd.img", "wb") as initrd:
            for part in ("rootfs.cpio.gz", "modules.cpio.gz"):
                initrd.write((work / part).read_bytes())
        shutil.copyfile(kit.vmlinuz, boot / "vmlinuz")
        os.replace(work / "initrd.img", boot / "initrd.img")
    stamp.write_text(key)
    return board_image_from_dir(out_dir)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class VirtualBoard:
    """A running QEMU board; use as a context manager so QEMU always stops."""

    def __init__(self, image: BoardImage, *, serial: str = "socket", port: int | None = None,
                 extra_append: str = "", memory_mb: int = 512, log_path: Path | None = None,
                 rkllm_standin: bool = True):
        if serial not in ("socket", "pty"):
            raise ValueError(f"serial must be 'socket' or 'pty', not {serial!r}")
        self.image = image
        self.serial = serial
        self.port = port
        self.extra_append = extra_append
        self.memory_mb = memory_mb
        self.log_path = log_path
        self.rkllm_standin = rkllm_standin
        self.initrd = image.initrd  # what QEMU loads: the image's, plus the RKLLM stand-in when wanted
        self.url = ""
        self._proc: subprocess.Popen | None = None
        self._log_file: IO[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._own_log = False

    def command(self) -> list[str]:
        """The qemu-system-aarch64 command line."""
        append = " ".join(filter(None, ["console=ttyAMA0,115200", self.extra_append]))
        if self.serial == "socket":
            serial = f"tcp:127.0.0.1:{self.port},server=on,wait=off"
        else:
            serial = "pty"
        return ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-m", str(self.memory_mb),
                "-nographic", "-monitor", "none", "-nic", "none",
                "-kernel", str(self.image.kernel), "-initrd", str(self.initrd),
                "-append", append, "-serial", serial]

    def start(self) -> VirtualBoard:
        """Boot QEMU and wait until its serial end is ready to connect to."""
        if not shutil.which("qemu-system-aarch64"):
            raise UserError("qemu-system-aarch64 not found: run scripts/setup-host.sh")
        if self.serial == "socket" and self.port is None:
            self.port = _free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="rk3576-vboard-")
        self._own_log = self.log_path is None
        if self.log_path is None:
            self.log_path = Path(self._tmp.name) / "qemu.log"
        log_path = self.log_path
        if self.rkllm_standin:
            self.initrd = Path(self._tmp.name) / "initrd-rkllm.img"
            self.initrd.write_bytes(self.image.initrd.read_bytes() + rkllm_standin_archive().read_bytes())
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(log_path, "wb")
        # Its own session (a terminal's Ctrl-C reaches only the CLI, which stops it cleanly), and killed
        # by the kernel when this process dies, whatever ends it (SIGKILL included).
        self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._log_file,
                                      stderr=subprocess.STDOUT, start_new_session=True,
                                      preexec_fn=functools.partial(_die_with_parent, os.getpid()))
        try:
            self.url = self._wait_serial_ready(self._proc, log_path, timeout=30)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_serial_ready(self, proc: subprocess.Popen, log_path: Path, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise UserError(f"virtual board: QEMU exited ({proc.returncode}): "
                                f"{log_path.read_text(errors='replace')[-800:]}")
            if self.serial == "pty":
                match = _PTY_LINE.search(log_path.read_text(errors="replace"))
                if match:
                    return match.group(1)
            elif self.port is not None and _listening(self.port):
                return f"socket://127.0.0.1:{self.port}"
            time.sleep(0.05)
        raise UserError(f"virtual board: QEMU's serial port not ready after {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        """Stop QEMU (terminate, then kill) and release its files."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self.initrd = self.image.initrd
            if self._own_log:
                self.log_path = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> VirtualBoard:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _die_with_parent(parent: int) -> None:
    """In the child before exec: SIGKILL when the parent dies (Linux's PR_SET_PDEATHSIG, kept across exec).

    The kernel sends it when the thread that started the child ends, so boards are started from
    a thread that lives as long as they do (the main thread, in the CLI).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(127)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(127)


def _listening(port: int) -> bool:
    """Is something listening on 127.0.0.1:port? Read /proc, since a probe connection
    would take QEMU's one client slot for a moment and lose console output."""
    needle = f"0100007F:{port:04X} 00000000:0000 0A"
    try:
        return needle in Path("/proc/net/tcp").read_text()
    except OSError:
        return True  # no /proc: let the console's own connect decide
