"""Board verification over the serial console: is the RKNPU driver the expected version?

Logs in, reads the driver version (debugfs, else /proc), records board facts, and
writes a JSON report, a JUnit XML file and a masked console transcript.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, Sequence

from .console import Console, ConsoleError
from .errors import UserError

REPORT_NAME = "verify-report.json"
JUNIT_NAME = "verify-junit.xml"
TRANSCRIPT_NAME = "console-transcript.log"
DEBUGFS = "/sys/kernel/debug"
VERSION_FILES = (f"{DEBUGFS}/rknpu/version", "/proc/rknpu/version")
LOAD_FILES = (f"{DEBUGFS}/rknpu/load", "/proc/rknpu/load")
VERSION_LINE = re.compile(r"RKNPU driver: v\S+")


@dataclass
class VerifySettings:
    """What to check and how to reach the board (the recipe's `verify:` section)."""

    console: str
    baud: int = 115200
    user: str = "root"
    password_env: str = "RK3576_CONSOLE_PASSWORD"
    expected: str = "RKNPU driver: v0.9.8"
    login_timeout: float = 300
    command_timeout: float = 30


def get_password(settings: VerifySettings, *, interactive: bool | None = None) -> str | None:
    """The console password: env var `settings.password_env`, else a prompt on a TTY, else None."""
    value = os.environ.get(settings.password_env)
    if value is not None:
        return value
    if interactive is None:
        interactive = sys.stdin.isatty()
    if interactive:
        return getpass.getpass(f"Password for {settings.user} on {settings.console}: ")
    return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class _Checks:
    """Runs the board checks over a logged-in console and records each one."""

    def __init__(self, console: Console, settings: VerifySettings, password: str | None):
        self.console = console
        self.settings = settings
        self.password = password
        self.records: list[dict] = []
        self.sudo = "" if settings.user == "root" else "sudo -n "

    def run(self, name: str, command: str, *, required: bool = False, keep_kernel_lines: bool = False) -> dict:
        started = time.monotonic()
        output, status = self.console.run(command, timeout=self.settings.command_timeout,
                                          keep_kernel_lines=keep_kernel_lines)
        record = {"name": name, "command": command, "required": required, "exit_status": status,
                  "output": output, "status": "passed" if status == 0 else ("failed" if required else "skipped"),
                  "duration_s": round(time.monotonic() - started, 3)}
        self.records.append(record)
        return record

    def all(self) -> dict:
        """Run every check; return the board facts."""
        if self.sudo:
            self.console.sudo_validate(self.password, timeout=self.settings.command_timeout)
        mount = self.run("debugfs", f"grep -qs ' {DEBUGFS} debugfs ' /proc/mounts && echo already-mounted"
                                    f" || {{ {self.sudo}mount -t debugfs none {DEBUGFS} && echo mounted-now; }}")
        if mount["exit_status"] != 0:
            mount["status"] = "skipped"  # not fatal: /proc/rknpu may still answer
        version = self._version()
        board = {"kernel_release": self.run("kernel-release", "uname -r")["output"].strip(),
                 "model": self.run("device-tree-model", "tr -d '\\0' </proc/device-tree/model")["output"].strip()}
        dmesg = self.run("dmesg-rknpu", f"{self.sudo}dmesg | grep -i rknpu", keep_kernel_lines=True)
        board["dmesg_rknpu"] = [line for line in dmesg["output"].splitlines() if "rknpu" in line.lower()]
        load = self.run("npu-load", " || ".join(f"{self.sudo}cat {path} 2>/dev/null" for path in LOAD_FILES)
                        + " || false")
        board["npu_load"] = load["output"].strip()
        board["debugfs"] = mount["output"].strip().splitlines()[-1] if mount["output"].strip() else ""
        board["version_source"] = version.get("source")
        return board

    def _version(self) -> dict:
        expected = self.settings.expected.strip()
        record = None
        for path in VERSION_FILES:
            record = self.run("rknpu-version", f"{self.sudo}cat {path}", required=True)
            if record["exit_status"] == 0:
                record["source"] = path
                break
            self.records.pop()
        assert record is not None
        tried = ", ".join(VERSION_FILES)
        if record["exit_status"] != 0:
            record.update(actual=None, status="failed",
                          message=f"no RKNPU version file readable ({tried}): is the rknpu driver loaded?")
            self.records.append(record)
            return record
        found = VERSION_LINE.search(record["output"])
        actual = found.group(0) if found else record["output"].strip()
        record["actual"] = actual
        if actual == expected:
            record["status"], record["message"] = "passed", f"{actual} as expected"
        else:
            record["status"], record["message"] = "failed", f"expected {expected!r}, the board says {actual!r}"
        return record


def verify_board(settings: VerifySettings, out_dir: Path, *, password: str | None) -> dict:
    """Log in, check, write the reports to `out_dir`; return the report dict.

    A console that cannot be reached or refuses the login still gets its reports
    written (status "error"), then the ConsoleError is raised again.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"console": settings.console, "baud": settings.baud, "user": settings.user,
              "password_env": settings.password_env, "expected": settings.expected,
              "actual": None, "match": False, "status": "error", "error": None,
              "checks": [], "board": {}, "started": _now(), "finished": None,
              "durations_s": {}}
    started = time.monotonic()
    console = Console(settings.console, baud=settings.baud, transcript=out_dir / TRANSCRIPT_NAME,
                      secrets=[password] if password else [])
    checks = _Checks(console, settings, password)
    login_record = {"name": "console-login", "required": True, "status": "error", "output": ""}
    failure: ConsoleError | None = None
    try:
        with console:
            console.login(settings.user, password, timeout=settings.login_timeout)
            login_record.update(status="passed", output=f"logged in as {settings.user}")
            report["durations_s"]["login"] = round(time.monotonic() - started, 3)
            try:
                report["board"] = checks.all()
            finally:
                console.logout()
    except ConsoleError as exc:
        failure = exc
        message = str(exc)
        if login_record["status"] == "passed":
            checks.records.append({"name": "console-command", "required": True, "status": "error",
                                   "output": "", "message": message})
        else:
            login_record["message"] = message
        report["error"] = message
    report["checks"] = [login_record, *checks.records]
    version = next((c for c in checks.records if c["name"] == "rknpu-version"), None)
    if version is not None:
        report["actual"] = version.get("actual")
        report["match"] = version["status"] == "passed"
    if failure is None:
        required_ok = all(c["status"] in ("passed", "skipped") for c in report["checks"] if c.get("required"))
        report["status"] = "passed" if report["match"] and required_ok else "failed"
    report["finished"] = _now()
    report["durations_s"]["total"] = round(time.monotonic() - started, 3)
    if "login" in report["durations_s"]:
        report["durations_s"]["checks"] = round(report["durations_s"]["total"] - report["durations_s"]["login"], 3)
    report = _masked(report, password)
    (out_dir / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    write_junit(report, out_dir / JUNIT_NAME)
    if failure is not None:
        failure.report = report  # so the command line can still show the summary
        raise failure
    return report


def _masked(value, password: str | None):
    """The report with the password masked wherever a board echoed it back."""
    if not password:
        return value
    return json.loads(json.dumps(value).replace(json.dumps(password)[1:-1], "********"))


def write_junit(report: dict, path: Path) -> None:
    """JUnit XML: one testcase per check, a failure element on mismatch, error on no console."""
    cases = report["checks"]
    suite = ET.Element("testsuite", name="rk3576-verify", tests=str(len(cases)),
                       failures=str(sum(c["status"] == "failed" for c in cases)),
                       errors=str(sum(c["status"] == "error" for c in cases)),
                       skipped=str(sum(c["status"] == "skipped" for c in cases)),
                       time=str(report["durations_s"].get("total", 0)), timestamp=report["started"])
    props = ET.SubElement(suite, "properties")
    for key in ("console", "expected", "actual"):
        ET.SubElement(props, "property", name=key, value=str(report.get(key)))
    for check in cases:
        case = ET.SubElement(suite, "testcase", classname="rk3576.verify", name=check["name"],
                             time=str(check.get("duration_s", 0)))
        message = check.get("message") or ""
        if check["status"] == "failed":
            ET.SubElement(case, "failure", message=message or "check failed").text = check.get("output", "")
        elif check["status"] == "error":
            ET.SubElement(case, "error", message=message or "console error")
        elif check["status"] == "skipped":
            ET.SubElement(case, "skipped", message=message or f"exit status {check.get('exit_status')}")
        if check.get("output"):
            ET.SubElement(case, "system-out").text = check["output"]
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    path.write_bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def build_parser(defaults: Mapping | None = None) -> argparse.ArgumentParser:
    """The `rk3576-build verify` options; `defaults` (the recipe's verify: section) fill them in."""
    d = {f.name: f.default for f in fields(VerifySettings) if f.name != "console"}
    d.update({k: v for k, v in (defaults or {}).items() if v is not None})
    parser = argparse.ArgumentParser(prog="rk3576-build verify",
                                     description="Check the RKNPU driver version on the board over its serial console.")
    parser.add_argument("--console", "--port", dest="console", default=d.get("console"),
                        help="serial console: /dev/ttyUSB0, socket://host:port, rfc2217://host:port"
                             + (f" (default {d['console']})" if d.get("console") else ""))
    parser.add_argument("--baud", type=int, default=d["baud"], help=f"baud rate (default {d['baud']})")
    parser.add_argument("--user", default=d["user"], help=f"login user (default {d['user']})")
    parser.add_argument("--password-env", default=d["password_env"],
                        help=f"environment variable holding the password (default {d['password_env']}); "
                             "on a terminal you are asked when it is unset")
    parser.add_argument("--expected", default=d["expected"], help=f"expected version line (default {d['expected']!r})")
    parser.add_argument("--login-timeout", type=float, default=d["login_timeout"],
                        help=f"seconds to wait for a booting board (default {d['login_timeout']:g})")
    parser.add_argument("--command-timeout", type=float, default=d["command_timeout"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help="directory for the report, JUnit XML and transcript")
    return parser


def summary(report: dict, out_dir: Path) -> str:
    """The one-screen result."""
    verdict = {"passed": "PASS", "failed": "FAIL", "error": "ERROR"}[report["status"]]
    board = report.get("board") or {}
    lines = [f"rk3576-build verify: {verdict}",
             f"  console   {report['console']} ({report['baud']} baud, user {report['user']})",
             f"  expected  {report['expected']}",
             f"  actual    {report['actual'] or '-'}"]
    if report.get("error"):
        lines.append(f"  error     {report['error']}")
    for label, key in (("kernel", "kernel_release"), ("model", "model"), ("npu load", "npu_load")):
        if board.get(key):
            lines.append(f"  {label:<9} {board[key]}")
    for line in board.get("dmesg_rknpu", [])[-3:]:
        lines.append(f"  dmesg     {line}")
    durations = report["durations_s"]
    lines.append(f"  took      {durations.get('total', 0):.1f} s"
                 + (f" (login {durations['login']:.1f} s)" if "login" in durations else ""))
    lines.append(f"  reports   {out_dir / REPORT_NAME}, {out_dir / JUNIT_NAME}, {out_dir / TRANSCRIPT_NAME}")
    return "\n".join(lines)


def main(argv: Sequence[str], defaults: Mapping | None = None, default_out: Path | None = None) -> int:
    """`rk3576-build verify`: exit 0 on match, 1 on mismatch or a failed check, 2 on console trouble."""
    args = build_parser(defaults).parse_args(list(argv))
    if not args.console:
        print("rk3576-build verify: no serial console given: pass --console /dev/ttyUSB0 "
              "(or socket://host:port) or set verify.console in the recipe", file=sys.stderr)
        return 2
    settings = VerifySettings(console=args.console, baud=args.baud, user=args.user,
                              password_env=args.password_env, expected=args.expected,
                              login_timeout=args.login_timeout, command_timeout=args.command_timeout)
    out_dir = args.out or default_out or Path("verify")
    try:
        password = get_password(settings)
        report = verify_board(settings, out_dir, password=password)
    except UserError as exc:
        report = getattr(exc, "report", None)
        print(summary(report, out_dir) if report else f"rk3576-build verify: {exc}", file=sys.stderr)
        return exc.exit_code
    print(summary(report, out_dir))
    return 0 if report["status"] == "passed" else 1
