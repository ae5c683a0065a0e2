"""`rk3576-build verify` against the virtual board (QEMU) and against ports that cannot work."""

from __future__ import annotations

import fcntl
import json
import os
import time
import tty
import xml.etree.ElementTree as ET
from dataclasses import fields

import pytest

from helpers import BOARD_PASSWORD, booted, files_without
from rk3576_build.board.verify import (
    JUNIT_NAME,
    REPORT_NAME,
    TRANSCRIPT_NAME,
    VerifySettings,
    get_password,
)
from rk3576_build.cli.verify import build_parser, main
from rk3576_build.config.schema import section_keys

PASSWORD_ENV = "RK3576_CONSOLE_PASSWORD"


def _verify(url, out, monkeypatch, password=BOARD_PASSWORD, *extra):
    monkeypatch.setenv(PASSWORD_ENV, password)
    code = main(["--console", url, "--out", str(out), "--login-timeout", "120", *extra])
    report = json.loads((out / REPORT_NAME).read_text())
    junit = ET.parse(out / JUNIT_NAME).getroot()
    return code, report, junit


def _assert_no_password(tmp_path, password=BOARD_PASSWORD):
    assert files_without(tmp_path, password) == []


def _case(junit, name):
    return next(c for c in junit.iter("testcase") if c.get("name") == name)


@pytest.fixture(scope="module")
def board(board_images, tmp_path_factory):
    """One 0.9.8 board on a TCP socket, shared: each verify logs out again."""
    with booted(board_images("0.9.8"), tmp_path_factory.mktemp("board")) as running:
        yield running


@pytest.mark.qemu
def test_pass_over_socket(board, tmp_path, monkeypatch, capsys):
    code, report, junit = _verify(board.url, tmp_path, monkeypatch)
    assert code == 0, report
    assert report["match"] and report["actual"] == report["expected"] == "RKNPU driver: v0.9.8"
    assert report["console"] == board.url and report["status"] == "passed"
    assert report["board"]["model"] == "linux,dummy-virt"
    assert any("[drm] Initialized rknpu 0.9.8 20240828" in line for line in report["board"]["dmesg_rknpu"])
    assert report["board"]["npu_load"].startswith("NPU load:")
    assert report["board"]["debugfs"] == "already-mounted"
    assert {"login", "checks", "total"} <= set(report["durations_s"]) and report["finished"]
    assert junit.find("testsuite").get("failures") == "0"
    assert _case(junit, "rknpu-version").find("failure") is None
    assert "PASS" in capsys.readouterr().out
    assert (tmp_path / TRANSCRIPT_NAME).read_text().count("RKNPU driver: v0.9.8") >= 1
    _assert_no_password(tmp_path)


@pytest.mark.qemu
def test_wrong_password_is_exit_2_long_before_the_timeout(board, tmp_path, monkeypatch):
    started = time.monotonic()
    code, report, junit = _verify(board.url, tmp_path, monkeypatch, "Wrong-pw-123")
    assert code == 2
    assert time.monotonic() - started < 60  # the login timeout is 120 s
    assert report["status"] == "error" and "Login incorrect" in report["error"]
    assert _case(junit, "console-login").find("error") is not None
    _assert_no_password(tmp_path, "Wrong-pw-123")
    # The board is left at a login prompt: the right password works right after.
    assert _verify(board.url, tmp_path / "again", monkeypatch)[0] == 0


@pytest.mark.qemu
def test_mismatch_on_097_is_exit_1_with_both_versions(board_images, tmp_path, monkeypatch, capsys):
    with booted(board_images("0.9.7"), tmp_path) as board:
        code, report, junit = _verify(board.url, tmp_path / "out", monkeypatch)
    assert code == 1
    assert report["expected"] == "RKNPU driver: v0.9.8" and report["actual"] == "RKNPU driver: v0.9.7"
    assert report["match"] is False and report["status"] == "failed"
    failure = _case(junit, "rknpu-version").find("failure")
    assert "v0.9.8" in failure.get("message") and "v0.9.7" in failure.get("message")
    assert "FAIL" in capsys.readouterr().out
    _assert_no_password(tmp_path)


@pytest.mark.qemu
def test_pty_and_debugfs_not_mounted_at_boot(board_images, tmp_path, monkeypatch):
    with booted(board_images("0.9.8"), tmp_path, serial="pty", extra_append="rk3576.debugfs=0") as board:
        code, report, _ = _verify(board.url, tmp_path / "out", monkeypatch)
    assert board.url.startswith("/dev/pts/")
    assert code == 0, report
    assert report["board"]["debugfs"] == "mounted-now"
    assert report["board"]["version_source"] == "/sys/kernel/debug/rknpu/version"
    _assert_no_password(tmp_path)


@pytest.mark.qemu
def test_kernel_message_flood_does_not_corrupt_the_result(board_images, tmp_path, monkeypatch):
    with booted(board_images("0.9.8"), tmp_path, extra_append="rk3576.flood=1") as board:
        code, report, _ = _verify(board.url, tmp_path / "out", monkeypatch)
    assert code == 0, report
    assert report["actual"] == "RKNPU driver: v0.9.8"
    version = next(c for c in report["checks"] if c["name"] == "rknpu-version")
    assert version["output"] == "RKNPU driver: v0.9.8"
    assert report["board"]["kernel_release"].endswith("-arm64") and "\n" not in report["board"]["kernel_release"]
    assert "trying anyway" in (tmp_path / "out" / TRANSCRIPT_NAME).read_text()  # the flood was on
    _assert_no_password(tmp_path)


@pytest.mark.qemu
def test_verify_started_while_the_board_is_still_booting(board_images, tmp_path, monkeypatch):
    with booted(board_images("0.9.8"), tmp_path, extra_append="rk3576.slowboot=4") as board:
        code, report, _ = _verify(board.url, tmp_path / "out", monkeypatch)
    assert code == 0, report
    transcript = (tmp_path / "out" / TRANSCRIPT_NAME).read_text()
    # It was connected before the login prompt existed: the boot log precedes it.
    assert transcript.index("[drm] Initialized rknpu") < transcript.index("login:")
    _assert_no_password(tmp_path)


def test_missing_serial_device_is_exit_2(tmp_path, monkeypatch, capsys):
    code, report, junit = _verify("/dev/ttyUSB-rk3576-absent", tmp_path, monkeypatch)
    assert code == 2
    assert "does not exist" in report["error"] and "/dev/ttyUSB-rk3576-absent" in report["error"]
    assert "does not exist" in capsys.readouterr().err
    _assert_no_password(tmp_path)


def test_busy_serial_device_is_exit_2(tmp_path, monkeypatch):
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    holder = os.open(path, os.O_RDWR | os.O_NOCTTY)
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as picocom or minicom hold it
    try:
        code, report, _ = _verify(path, tmp_path, monkeypatch)
    finally:
        for fd in (holder, slave, master):
            os.close(fd)
    assert code == 2 and "another program" in report["error"] and path in report["error"]


def test_no_console_given_is_exit_2(capsys):
    assert main([]) == 2
    assert "--console" in capsys.readouterr().err


def test_the_settings_are_the_recipes_verify_keys_with_the_schemas_defaults():
    keys = section_keys("verify")
    assert {f.name for f in fields(VerifySettings)} == set(keys)
    settings = VerifySettings(console="/dev/ttyUSB0")
    for name in ("baud", "user", "password_env", "login_timeout", "command_timeout", "place"):
        assert getattr(settings, name) == keys[name].default, name


def test_recipe_defaults_fill_the_options():
    defaults = {"console": "rfc2217://lab:4001", "baud": 1500000, "user": "myir",
                "password_env": "BOARD_PW", "expected": "RKNPU driver: v0.9.9", "login_timeout": 42}
    args = build_parser(defaults).parse_args([])
    assert (args.console, args.baud, args.user, args.password_env, args.expected, args.login_timeout) == \
        ("rfc2217://lab:4001", 1500000, "myir", "BOARD_PW", "RKNPU driver: v0.9.9", 42)
    assert build_parser(defaults).parse_args(["--port", "/dev/ttyUSB1"]).console == "/dev/ttyUSB1"


def test_get_password_env_then_prompt_then_none(monkeypatch):
    settings = VerifySettings(console="/dev/ttyUSB0", password_env="RK3576_TEST_PW")
    monkeypatch.setenv("RK3576_TEST_PW", "from-env")
    assert get_password(settings, interactive=True) == "from-env"
    monkeypatch.delenv("RK3576_TEST_PW")
    assert get_password(settings, interactive=False) is None
    monkeypatch.setattr("getpass.getpass", lambda prompt: "typed")
    assert get_password(settings, interactive=True) == "typed"
