"""Secrets stay out of what the tool writes: URL credentials in task output, the console password in
verify's report, JUnit, transcript and output (and a short password breaks none of them)."""

from __future__ import annotations

import json
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from helpers import REPO, files_without, rk
from rk3576_build.board.console import MASK, Console, Masker
from rk3576_build.board.verify import masked
from rk3576_build.cli import verify
from test_console import FakeBoard

SECRET = "s3cret-pw-41"


def test_info_list_and_plan_never_print_url_credentials(tmp_path):
    env = {"DEMO_SOURCES_URL": f"http://bob:{SECRET}@127.0.0.1:9/src", "RK3576_WORKDIR": str(tmp_path / "work")}
    outputs = []
    for args in (["info", "fetch:sdk"], ["info", "fetch:driver"], ["list", "--all"], ["plan"]):
        done = rk("--recipe", str(REPO / "recipes" / "demo.yaml"), *args, cwd=tmp_path, env=env, timeout=120)
        outputs.append(done.stdout + done.stderr)
        assert "Traceback" not in outputs[-1], outputs[-1]
    assert any("127.0.0.1:9" in out for out in outputs)  # the URL itself is shown, redacted
    for out in outputs:
        assert SECRET not in out


# --------------------------------------------------------------------------- the console password

SHORT_PASSWORDS = ["x", "e", "1", "0", ":"]  # each is also ordinary text in a report
REPORT_KEYS = {"console", "baud", "user", "password_env", "expected", "actual", "match", "status", "error",
               "checks", "board", "rkllm", "multimodal", "started", "finished", "durations_s", "transcript"}


def _keys(value) -> set[str]:
    """Every key at any depth of parsed JSON data."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def _dead_console() -> str:
    """A socket:// URL to a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"socket://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("password", SHORT_PASSWORDS)
def test_short_password_and_dead_console_outside_a_project_is_exit_2_with_a_valid_report(tmp_path, password):
    done = rk("verify", "--console", _dead_console(), "--login-timeout", "5", cwd=tmp_path,
              env={"RK3576_CONSOLE_PASSWORD": password}, timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "Traceback" not in out and Masker([password])("is unreachable") in out
    warnings = [line for line in out.splitlines() if "shorter than 4 characters" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ")
    reports = next(line for line in out.splitlines() if line.strip().startswith("reports ")).split(None, 1)[1]
    paths = [Path(tmp_path, p.strip()) for p in reports.split(",")]
    assert [p.name for p in paths] == ["verify-report.json", "verify-junit.xml"]  # no transcript was written
    report = json.loads(paths[0].read_text())
    assert set(report) == REPORT_KEYS and MASK not in "".join(_keys(report))
    assert report["user"] == "root" and report["baud"] == 115200 and report["transcript"] is None
    assert report["status"] == "error" and report["match"] is False
    assert [(c["name"], c["status"]) for c in report["checks"]] == [("console-login", "error")]
    suite = ET.parse(paths[1]).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("errors")) == ("1", "1")
    assert not (paths[0].parent / "console-transcript.log").exists()


def test_masking_touches_string_values_only_and_never_the_user_name():
    report = {"user": "root", "status": "passed", "baud": 115200, "expected": "RKNPU driver: v0.9.8",
              "checks": [{"name": "rknpu-version", "status": "passed", "exit_status": 0,
                          "output": "root said ro:ot"}], "board": {"model": "ro"}}
    assert masked(report, Masker(["ro"], keep=["root"])) == dict(
        report, checks=[dict(report["checks"][0], output=f"root said {MASK}:ot")], board={"model": MASK})
    # Masking twice changes nothing, even for a password the mask itself contains.
    assert Masker(["*"])(Masker(["*"])("a*b")) == f"a{MASK}b"
    # A password longer than the user name it contains is masked whole.
    assert Masker(["rootpw"], keep=["root"])("root typed rootpw") == f"root typed {MASK}"


def test_short_password_is_masked_in_the_transcript_but_not_the_user_name(tmp_path):
    transcript = tmp_path / "console-transcript.log"
    with FakeBoard(echo_password=True, password="o") as board, \
            Console(board.path, transcript=transcript) as console:
        console.login("root", "o", timeout=10)
        console.run("false")
    text = transcript.read_text()
    # Every `o` is masked, even in ordinary words, except inside the user name.
    assert f"l{MASK}gin: root" in text and "o" not in text.replace("root", "")


NORMAL_PASSWORD = "Hunter2-rk3576!"


def test_a_normal_password_never_appears_in_report_transcript_or_output(tmp_path, capsys, caplog, monkeypatch):
    # The board echoes the password at login and prints it in a command's output.
    commands = {"uname -r": (f"6.1.75 {NORMAL_PASSWORD}\n".encode(), 0)}
    monkeypatch.setenv("RK3576_CONSOLE_PASSWORD", NORMAL_PASSWORD)
    with FakeBoard(echo_password=True, password=NORMAL_PASSWORD, commands=commands) as board:
        code = verify.main(["--console", board.path, "--out", str(tmp_path), "--login-timeout", "20"])
        sent = board.received.decode(errors="replace")
    out = capsys.readouterr()
    assert code == 0, out
    assert NORMAL_PASSWORD in sent  # it was typed (and the board echoed it)
    report = json.loads((tmp_path / "verify-report.json").read_text())
    assert report["board"]["kernel_release"] == f"6.1.75 {MASK}" and report["transcript"] == "console-transcript.log"
    assert MASK in (tmp_path / "console-transcript.log").read_text()
    assert files_without(tmp_path, NORMAL_PASSWORD) == []  # report, JUnit, transcript
    assert NORMAL_PASSWORD not in out.out + out.err + caplog.text
    assert "console-transcript.log" in out.out and not any("shorter than" in r.message for r in caplog.records)
