"""Board verification over the serial console: is the RKNPU driver the expected version?

Logs in, reads the driver version (debugfs, else /proc), records board facts, runs
the optional RKLLM text check (rkllm.py) and multimodal check (multimodal.py), and writes
a JSON report, a JUnit XML file and a masked console transcript. `summary` is the one-screen result; `compare` sets two
reports' figures side by side. The command line is cli/verify.py.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rk3576_build.board import multimodal, rkllm
from rk3576_build.board.console import Console, ConsoleError, Masker
from rk3576_build.config.schema import section_keys
from rk3576_build.core import logs
from rk3576_build.core.errors import UserError

_log = logs.get(__name__)

REPORT_NAME = "verify-report.json"
JUNIT_NAME = "verify-junit.xml"
TRANSCRIPT_NAME = "console-transcript.log"
DEBUGFS = "/sys/kernel/debug"
VERSION_FILES = (f"{DEBUGFS}/rknpu/version", "/proc/rknpu/version")
LOAD_FILES = (f"{DEBUGFS}/rknpu/load", "/proc/rknpu/load")
VERSION_LINE = re.compile(r"RKNPU driver: v\S+")
SHORT_PASSWORD = 4  # a password shorter than this is also ordinary text: masking it hits words and figures
# Report fields (key paths; lists add no step) whose values come from the settings or the tool's own
# vocabulary, never from the board: the password is not masked there (a short one would break statuses).
_NOT_FROM_THE_BOARD = frozenset({
    ("user",), ("console",), ("password_env",), ("expected",), ("status",), ("started",), ("finished",),
    ("transcript",), ("checks", "name"), ("checks", "status"), ("checks", "command"), ("checks", "source"),
    ("board", "version_source"), ("rkllm", "program"), ("rkllm", "model"), ("rkllm", "prompt"),
    ("multimodal", "program"), ("multimodal", "model"), ("multimodal", "prompt"), ("multimodal", "encoder"),
    ("multimodal", "image")})
# The checks that run a model on the board: report key -> (settings, run). Each runs when its section asks.
MODEL_CHECKS: dict[str, tuple[type[rkllm.RkllmSettings], type[rkllm.RkllmRun]]] = {
    "rkllm": (rkllm.RkllmSettings, rkllm.RkllmRun),
    "multimodal": (multimodal.MultimodalSettings, multimodal.MultimodalRun),
}
# How each check's figures are read from its report part (flat, for --compare and --history).
FIGURES = {"rkllm": rkllm.figures, "multimodal": multimodal.figures}


_SCHEMA = section_keys("verify")  # the recipe's verify section: its keys are the settings, its defaults theirs


@dataclass
class VerifySettings:
    """What to check and how to reach the board: the recipe's `verify:` section, with the schema's defaults.

    Without a recipe, `expected` (which a recipe computes from its driver.version) is the driver this tool targets.
    """

    console: str
    baud: int = _SCHEMA["baud"].default
    user: str = _SCHEMA["user"].default
    password_env: str = _SCHEMA["password_env"].default
    expected: str = "RKNPU driver: v0.9.8"
    login_timeout: float = _SCHEMA["login_timeout"].default
    command_timeout: float = _SCHEMA["command_timeout"].default
    place: str | None = _SCHEMA["place"].default  # a labgrid place (labgrid_place.py): its console replaces `console`
    rkllm: dict | None = None  # the `verify.rkllm` section: the RKLLM check runs when its model is set
    multimodal: dict | None = None  # the `verify.multimodal` section: the multimodal check (board/multimodal.py)


def defaults() -> dict[str, Any]:
    """The settings' defaults (every field but the console, which has none)."""
    return {f.name: f.default for f in fields(VerifySettings) if f.default is not MISSING}


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
    return datetime.now(UTC).isoformat(timespec="seconds")


class _Checks:
    """Runs the board checks over a logged-in console and records each one."""

    def __init__(self, console: Console, settings: VerifySettings, password: str | None, chip: str | None = None):
        self.console = console
        self.settings = settings
        self.password = password
        self.chip = chip  # the recipe's lunch.chip: the platform the RKLLM runtime must report
        self.records: list[dict] = []
        self.sudo = "" if settings.user == "root" else "sudo -n "
        self.results: dict[str, dict] = {}  # each model check's figures (MODEL_CHECKS' keys), when it ran

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
        for key, (settings_class, _) in MODEL_CHECKS.items():
            if settings_class.wanted(getattr(self.settings, key)):
                self._model_check(key, version)
        return board

    def _model_check(self, key: str, version: dict) -> None:
        """Run the model check `key` (MODEL_CHECKS) and keep its figures, however it ended."""
        settings_class, run_class = MODEL_CHECKS[key]
        found = re.search(r"v(\d+\.\d+\.\d+)", version.get("actual") or "")
        run = run_class(self.console, settings_class.from_mapping(getattr(self.settings, key) or {}),
                        sudo=self.sudo, command_timeout=self.settings.command_timeout,
                        driver_version=found.group(1) if found else None, chip=self.chip)
        started = time.monotonic()
        try:
            self.records.extend(run.check())
        finally:
            self.results[key] = run.result
            run.result["duration_s"] = round(time.monotonic() - started, 3)

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


def verify_board(settings: VerifySettings, out_dir: Path, *, password: str | None,
                 chip: str | None = None) -> dict:
    """Log in, check, write the reports to `out_dir`; return the report dict.

    `chip` (the recipe's lunch.chip) is the platform the RKLLM runtime must report.
    A console that cannot be reached or refuses the login still gets its reports
    written (status "error"), then the ConsoleError is raised again.
    """
    for key, (settings_class, _) in MODEL_CHECKS.items():
        if settings_class.wanted(getattr(settings, key)):
            settings_class.from_mapping(getattr(settings, key))  # a bad setting stops us before the console opens
    if password and len(password) < SHORT_PASSWORD:
        _log.warning("the console password is shorter than %d characters: masking it in the transcript and "
                     "the report also masks ordinary text where it occurs", SHORT_PASSWORD)
    out_dir.mkdir(parents=True, exist_ok=True)
    transcript = out_dir / TRANSCRIPT_NAME
    transcript.unlink(missing_ok=True)  # an earlier run's transcript must not pass for this run's
    report: dict[str, Any] = {"console": settings.console, "baud": settings.baud, "user": settings.user,
              "password_env": settings.password_env, "expected": settings.expected,
              "actual": None, "match": False, "status": "error", "error": None,
              "checks": [], "board": {}, "rkllm": None, "multimodal": None, "started": _now(), "finished": None,
              "durations_s": {}, "transcript": None}
    started = time.monotonic()
    console = Console(settings.console, baud=settings.baud, transcript=transcript,
                      secrets=[password] if password else [])
    checks = _Checks(console, settings, password, chip)
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
    for key in MODEL_CHECKS:
        report[key] = checks.results.get(key)
    version = next((c for c in checks.records if c["name"] == "rknpu-version"), None)
    if version is not None:
        report["actual"] = version.get("actual")
        report["match"] = version["status"] == "passed"
    if failure is None:
        required_ok = all(c["status"] in ("passed", "skipped") for c in report["checks"] if c.get("required"))
        report["status"] = "passed" if report["match"] and required_ok else "failed"
        errors = [c for c in report["checks"] if c["status"] == "error"]
        if errors:  # a check that could not run (a hang, a missing model): exit 2
            report["status"], report["error"] = "error", errors[0].get("message")
    report["finished"] = _now()
    report["durations_s"]["total"] = round(time.monotonic() - started, 3)
    if "login" in report["durations_s"]:
        report["durations_s"]["checks"] = round(report["durations_s"]["total"] - report["durations_s"]["login"], 3)
    report["transcript"] = TRANSCRIPT_NAME if transcript.exists() else None
    report = masked(report, Masker([password] if password else [], keep=[settings.user]))
    (out_dir / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    write_junit(report, out_dir / JUNIT_NAME)
    if failure is not None:
        failure.report = report  # so the command line can still show the summary
        raise failure
    return report


def masked(value, mask: Masker, path: tuple[str, ...] = ()):
    """`value` (a report's parsed data) with `mask` applied to its string values; keys, numbers and
    structure stay as they are, and so do the fields that never come from the board (_NOT_FROM_THE_BOARD)."""
    if isinstance(value, dict):
        return {k: masked(v, mask, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, mask, path) for v in value]
    if isinstance(value, str) and path not in _NOT_FROM_THE_BOARD:
        return mask(value)
    return value


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
        if check.get("properties"):
            case_props = ET.SubElement(case, "properties")
            for key, value in check["properties"].items():
                ET.SubElement(case_props, "property", name=key, value="" if value is None else str(value))
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
    lines.extend(_rkllm_summary(report))
    lines.extend(_rkllm_summary(report, "multimodal"))
    durations = report["durations_s"]
    lines.append(f"  took      {durations.get('total', 0):.1f} s"
                 + (f" (login {durations['login']:.1f} s)" if "login" in durations else ""))
    written = [REPORT_NAME, JUNIT_NAME] + ([report["transcript"]] if report.get("transcript") else [])
    lines.append(f"  reports   {', '.join(str(out_dir / name) for name in written)}")
    return "\n".join(lines)


def _rkllm_summary(report: dict, key: str = "rkllm") -> list[str]:
    """A model check's lines of the summary (none when it did not run): the text check's, or with `key`
    "multimodal" the multimodal check's, which adds the demo's load and image encoder times."""
    run = report.get(key)
    if not run:
        return []
    checks = {c["name"]: c for c in report["checks"] if c["name"].startswith(key)}
    lines = [f"  {key:<9} {c['status'].upper()}: {c.get('message', '')}" for c in checks.values()]
    if run.get("runtime_version"):
        lines.append(f"  runtime   rkllm {run['runtime_version']}, rknpu driver {run['driver_version']}, "
                     f"platform {run['platform']}")
    for label, name in (("llm load", "llm_load_ms"), ("imgenc", "imgenc_load_ms")):
        if run.get(name) is not None:
            lines.append(f"  {label:<9} {run[name]:.2f} ms" + (
                f" to load, {run['imgenc_inference_ms']:.2f} ms to encode the image"
                if name == "imgenc_load_ms" and run.get("imgenc_inference_ms") is not None else ""))
    if run.get("init_ms") is not None:
        lines.append(f"  init      {run['init_ms']:.2f} ms")
    for stage in ("prefill", "generate"):
        if run.get(stage):
            st = run[stage]
            lines.append(f"  {stage:<9} {st['tokens']} tokens in {st['total_ms']:.2f} ms: "
                         f"{st['ms_per_token']:.2f} ms/token, {st['tokens_per_s']:.2f} tokens/s")
    if run.get("peak_memory_gb") is not None:
        lines.append(f"  memory    peak {run['peak_memory_gb']:.2f} GB")
    npu = run.get("npu") or {}
    if npu.get("load"):
        loads = ", ".join(f"{core} peak {v['peak']}% mean {v['mean']:g}%" for core, v in npu["load"].items())
        lines.append(f"  npu load  {loads} ({npu['samples']} samples)")
    lines.append(f"  npu freq  {npu['freq_hz'] / 1e6:g} MHz" if npu.get("freq_hz") else
                 "  npu freq  - (no devfreq or debugfs freq file)")
    if run.get("answer"):
        answer = run["answer"] if len(run["answer"]) <= 70 else run["answer"][:67] + "..."
        lines.append(f"  answer    {answer}")
    return lines


def load_report(path: Path) -> dict:
    """A verify report written earlier (its JSON); UserError saying what is wrong otherwise."""
    try:
        report = json.loads(path.read_text())
    except OSError as exc:
        raise UserError(f"cannot read the report {path}: {exc.strerror}: give a verify-report.json "
                        "from an earlier run") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not a verify report (not JSON: {exc.msg} at line {exc.lineno})") from None
    if not isinstance(report, dict) or "checks" not in report:
        raise UserError(f"{path} is not a verify report (no \"checks\"): give a verify-report.json")
    return report


def compare(old: dict, new: dict, old_name: str = "old", new_name: str = "new") -> str:
    """The figures of two reports side by side, with the change (absolute and relative)."""
    rows = [("driver", old.get("actual") or "-", new.get("actual") or "-", ""),
            ("rkllm runtime", (old.get("rkllm") or {}).get("runtime_version") or "-",
             (new.get("rkllm") or {}).get("runtime_version") or "-", "")]
    if old.get("multimodal") or new.get("multimodal"):
        rows.append(("multimodal runtime", (old.get("multimodal") or {}).get("runtime_version") or "-",
                     (new.get("multimodal") or {}).get("runtime_version") or "-", ""))
    a, b = _figures(old), _figures(new)
    for key in [*b, *(k for k in a if k not in b)]:
        before, after = a.get(key), b.get(key)
        change = ""
        if before is not None and after is not None:
            change = f"{after - before:+.2f}" + (f" ({(after - before) / before:+.1%})" if before else "")
        rows.append((key, "-" if before is None else f"{before:g}", "-" if after is None else f"{after:g}", change))
    width = max(len(r[0]) for r in rows)
    lines = [f"rk3576-build verify --compare: {old_name} ({old.get('started', '?')}) -> "
             f"{new_name} ({new.get('started', '?')})",
             f"  {'figure':<{width}}  {'old':>14}  {'new':>14}  change"]
    lines += [f"  {name:<{width}}  {before:>14}  {after:>14}  {change}".rstrip()
              for name, before, after, change in rows]
    if not a and not b:
        lines.append("  (neither report has RKLLM figures: run verify with the rkllm or multimodal check)")
    return "\n".join(lines)


def _figures(report: Mapping) -> dict[str, float]:
    """Every model check's figures in one flat table: the text check's as they are, the others' prefixed with
    the check's name ("multimodal imgenc_inference_ms")."""
    out: dict[str, float] = {}
    for key, figures in FIGURES.items():
        for name, value in figures(report.get(key)).items():
            out[name if key == "rkllm" else f"{key} {name}"] = value
    return out


def append_history(path: Path, report: dict) -> dict | None:
    """Append the run's figures to the history file `path` (JSON lines); return the previous entry."""
    previous = None
    if path.exists():
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        try:
            previous = json.loads(lines[-1]) if lines else None
        except json.JSONDecodeError:
            raise UserError(f"history file {path} has a broken last line: fix or remove it") from None
    entry = {key: report.get(key) for key in ("started", "status", "expected", "actual")}
    for key in MODEL_CHECKS:
        entry[key] = {k: v for k, v in (report.get(key) or {}).items() if k != "answer"} or None
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as history:
        history.write(json.dumps(entry) + "\n")
    return previous

