"""The virtual board: board scripts, image build and cache, QEMU over a socket and a pty."""

from __future__ import annotations

import gzip
import os
import subprocess

import pytest

from helpers import BOARD_PASSWORD, booted
from rk3576_build.board.console import BoardState, Console
from rk3576_build.core.errors import UserError
from rk3576_build.demo.board_kit import find_kit
from rk3576_build.demo.vboard import (
    BOARD_SCRIPTS,
    LLM_DEMO_PATH,
    STANDIN_MODEL_PATH,
    board_image_from_dir,
    build_board_image,
    password_hash,
    rkllm_standin_archive,
)


def _cpio_names(archive: bytes) -> list[str]:
    """Member names of concatenated gzip'd newc cpio archives (cpio -t stops at the first)."""
    data, names, pos = gzip.decompress(archive), [], 0
    while True:
        pos = data.find(b"070701", pos)
        if pos < 0:
            return names
        namesize, filesize = int(data[pos + 94:pos + 102], 16), int(data[pos + 54:pos + 62], 16)
        name = data[pos + 110:pos + 110 + namesize - 1].decode()
        if name != "TRAILER!!!":
            names.append(name.removeprefix("./"))
        pos = (pos + 110 + namesize + 3) // 4 * 4
        pos = (pos + filesize + 3) // 4 * 4


def test_password_hash_is_sha512_crypt_of_the_password():
    hashed = password_hash(BOARD_PASSWORD)
    salt = hashed.split("$")[2]
    again = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"], input=BOARD_PASSWORD,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert hashed.startswith("$6$") and hashed == again and BOARD_PASSWORD not in hashed


def test_mkmodules_layout(tmp_path):
    ko = tmp_path / "rknpu.ko"
    ko.write_bytes(b"\x7fELF fake module")
    out = tmp_path / "m" / "modules.cpio.gz"
    subprocess.run(["sh", str(BOARD_SCRIPTS / "mkmodules.sh"), "6.1.75", str(out), str(ko)], check=True)
    assert "lib/modules/6.1.75/extra/rknpu.ko" in _cpio_names(out.read_bytes())


def test_mkmodules_missing_module_is_a_clear_error(tmp_path):
    result = subprocess.run(["sh", str(BOARD_SCRIPTS / "mkmodules.sh"), "6.1.75", str(tmp_path / "o.gz"),
                             str(tmp_path / "absent.ko")], capture_output=True, text=True)
    assert result.returncode == 2 and "no such module" in result.stderr


def test_mkrootfs_refuses_a_plaintext_password(tmp_path):
    env = {**os.environ, "ROOT_PASSWORD_HASH": BOARD_PASSWORD}
    result = subprocess.run(["sh", str(BOARD_SCRIPTS / "mkrootfs.sh"), str(tmp_path), str(tmp_path / "r.gz")],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 2 and not (tmp_path / "r.gz").exists()


def test_board_image_from_dir_missing(tmp_path):
    with pytest.raises(UserError, match="boot/vmlinuz is missing"):
        board_image_from_dir(tmp_path)


@pytest.mark.qemu
def test_image_build_layout_cache_and_no_plaintext_password(board_images, board_password_hash):
    image = board_images("0.9.8")
    board_dir = image.initrd.parent.parent
    assert board_image_from_dir(board_dir) == image
    names = _cpio_names(image.initrd.read_bytes())
    release = find_kit().kernel_release
    assert {"init", "bin/busybox", "etc/shadow", f"lib/modules/{release}/extra/rknpu.ko"} <= set(names)
    assert BOARD_PASSWORD.encode() not in gzip.decompress(image.initrd.read_bytes())
    assert board_password_hash.encode() in gzip.decompress(image.initrd.read_bytes())
    stamp = image.initrd.stat().st_mtime_ns
    assert build_board_image(board_dir, driver_version="0.9.8", password_hash=board_password_hash) == image
    assert image.initrd.stat().st_mtime_ns == stamp  # same inputs: reused, not rebuilt


@pytest.mark.qemu
def test_board_boots_to_a_login_prompt_over_a_pty(board_images, tmp_path):
    with booted(board_images("0.9.8"), tmp_path, serial="pty") as board:
        assert board.url.startswith("/dev/pts/")
        with Console(board.url) as console:
            for _ in range(30):
                if console.detect_state(2) is BoardState.LOGIN_PROMPT:
                    break
            else:
                pytest.fail("no login prompt")
            console.login("root", BOARD_PASSWORD, timeout=30)
            assert console.run("cat /proc/device-tree/model | tr -d '\\0'") == ("linux,dummy-virt", 0)
            assert console.run("hostname")[0] == "myd-lr3576"
            console.logout()
        assert board.running
    assert not board.running


@pytest.mark.qemu
def test_rkllm_standin_archive_is_built_once_with_the_program_and_model(tmp_path):
    archive = rkllm_standin_archive(tmp_path)
    names = _cpio_names(archive.read_bytes())
    assert {LLM_DEMO_PATH, STANDIN_MODEL_PATH} <= set(names)
    data = gzip.decompress(archive.read_bytes())
    assert b"\x7fELF\x02\x01\x01" in data and b"rkllm init start" in data  # a 64-bit program, the stand-in's
    stamp = archive.stat().st_mtime_ns
    assert rkllm_standin_archive(tmp_path) == archive and archive.stat().st_mtime_ns == stamp
