"""Shared virtual-board fixtures: one password and one image per driver version per session."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from rk3576_build.demo.vboard import VirtualBoard, build_board_image, password_hash

BOARD_PASSWORD = "Rk3576-vb0ard-pw!"


def files_without(root: Path, secret: str) -> list[Path]:
    """Every file under `root` that contains `secret` (should be none)."""
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.fixture(scope="session")
def board_password_hash() -> str:
    return password_hash(BOARD_PASSWORD)


@pytest.fixture(scope="session")
def board_images(tmp_path_factory, board_password_hash):
    """driver version -> BoardImage, built on first use."""
    root = tmp_path_factory.mktemp("boards")
    cache = {}

    def get(version: str = "0.9.8"):
        if version not in cache:
            cache[version] = build_board_image(root / version, driver_version=version,
                                               password_hash=board_password_hash)
        return cache[version]

    return get


@contextlib.contextmanager
def booted(image, tmp_path: Path, **kwargs):
    """A running board whose QEMU log lands in tmp_path (checked for secrets too)."""
    with VirtualBoard(image, log_path=tmp_path / "qemu.log", **kwargs) as board:
        yield board
