"""Seconds from a login prompt to a verdict on the virtual board, vs a bare pyserial baseline.

Run: python3 bench/bench_verify.py [--runs N]. Boots the QEMU board once (socket console,
115200 set on the line), then times verify_board() N times from a login prompt, and the
same for a plain script (login, cat the version file, nothing else: no framing, no
checks, no reports). QEMU's PL011 is not throttled to 115200; the bytes on the wire
are also printed with the time they would take at 115200 8N1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import serial  # noqa: E402  (the baseline talks to the port directly)

from rk3576_build.board.console import BoardState, Console  # noqa: E402
from rk3576_build.board.verify import TRANSCRIPT_NAME, VerifySettings, verify_board  # noqa: E402
from rk3576_build.demo.vboard import VirtualBoard, build_board_image, password_hash  # noqa: E402

PASSWORD = "bench-pw-1"
BAUD = 115200


def wait_login_prompt(url: str) -> None:
    with Console(url) as console:
        for _ in range(60):
            if console.detect_state(1) is BoardState.LOGIN_PROMPT:
                return
    raise SystemExit("no login prompt")


def baseline(url: str) -> float:
    """Login and one cat, with the least code that works: the floor for any tool."""
    started = time.monotonic()
    port = serial.serial_for_url(url, baudrate=BAUD, timeout=0.05)
    buf = b""

    def until(token: bytes) -> None:
        nonlocal buf
        while token not in buf:
            buf += port.read(4096)
        buf = b""

    port.write(b"\n")
    until(b"login: ")
    port.write(b"root\n")
    until(b"Password: ")
    port.write(PASSWORD.encode() + b"\n")
    until(b"# ")
    port.write(b"cat /sys/kernel/debug/rknpu/version\n")
    until(b"RKNPU driver: v0.9.8\r\n")
    elapsed = time.monotonic() - started
    port.write(b"exit\n")
    time.sleep(0.3)
    port.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        tmp = Path(tmp)
        t0 = time.monotonic()
        image = build_board_image(tmp / "board", password_hash=password_hash(PASSWORD))
        print(f"image build (module + initramfs): {time.monotonic() - t0:.2f} s")
        with VirtualBoard(image) as board:
            t0 = time.monotonic()
            wait_login_prompt(board.url)
            print(f"QEMU boot to login prompt: {time.monotonic() - t0:.2f} s")
            tool, plain, wire = [], [], []
            settings = VerifySettings(console=board.url, baud=BAUD)
            for i in range(args.runs):
                wait_login_prompt(board.url)
                t0 = time.monotonic()
                report = verify_board(settings, tmp / f"out{i}", password=PASSWORD)
                tool.append(time.monotonic() - t0)
                assert report["match"], report
                wire.append(len((tmp / f"out{i}" / TRANSCRIPT_NAME).read_bytes()))
                wait_login_prompt(board.url)
                plain.append(baseline(board.url))
    med_tool, med_plain = statistics.median(tool), statistics.median(plain)
    med_wire = statistics.median(wire)
    print(f"verify, login prompt -> verdict: median {med_tool:.2f} s "
          f"(min {min(tool):.2f}, max {max(tool):.2f}, {args.runs} runs)")
    print(f"baseline (raw pyserial login + cat): median {med_plain:.2f} s")
    print(f"ratio verify/baseline: {med_tool / med_plain:.2f}x")
    print(f"console bytes received per verify: {med_wire:.0f} "
          f"(= {med_wire * 10 / BAUD:.2f} s of wire time at {BAUD} 8N1 on a real board)")


if __name__ == "__main__":
    main()
