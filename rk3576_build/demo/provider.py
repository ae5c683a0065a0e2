"""The virtual board as the provider of flash method "virtual" (registered by name in board/providers.py).

Flashing it is board/flash.py's virtual method (update.img installed into the work directory's
board/); `boot` starts QEMU on what was flashed there and hands verify its console.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rk3576_build.board.providers import Provider
from rk3576_build.demo.vboard import VirtualBoard, board_image_from_dir


@contextmanager
def boot_flashed(board_dir: Path, log_path: Path) -> Iterator[str]:
    """The virtual board booted from what was flashed to `board_dir`; yields its console URL.

    The image is booted as built: what the rkllm check runs came in through the recipe's
    rootfs_overlays, never through the board's boot-time stand-in.
    """
    with VirtualBoard(board_image_from_dir(board_dir), rkllm_standin=False, log_path=log_path) as board:
        yield board.url


VIRTUAL = Provider("virtual", boot=boot_flashed)
