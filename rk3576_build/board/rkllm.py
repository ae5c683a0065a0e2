"""The RKLLM check: does the runtime accept the board's RKNPU driver, and how fast does a model run?

Runs rknn-llm's demo program (`llm_demo model max_new_tokens max_context_len`) over
the serial console with RKLLM_LOG_LEVEL=1, asks one question, and parses what the
runtime prints: its version line (driver, platform), the too-old-driver warning, its
`E rkllm:`/`E RKNN:` and `Platform error` lines, `rkllm init failed`, and the
performance table. Meanwhile the NPU's load (debugfs) is sampled on the board.
`parse_output`, `runtime_verdict` and `npu_figures` are pure and work on any captured text.
"""

from __future__ import annotations

import re
import secrets
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, fields
from statistics import mean
from typing import ClassVar, Self

from rk3576_build.board.console import Console, ConsoleError, ConsoleTimeout
from rk3576_build.config.schema import RKLLM_DEFAULTS
from rk3576_build.core.errors import UserError

VERSION_LINE = re.compile(r"rkllm-runtime version:\s*([^,\s]+),\s*rknpu driver version:\s*([^,\s]+),"
                          r"\s*platform:\s*(\S+)")
TOO_OLD = re.compile(r"[^\n]*Your rknpu driver version is too low, please upgrade to\s*([\d.]+)[^\n]*")
INIT_FAILED = re.compile(r"rkllm init failed")
# The runtime's own errors (RKNN lines carry a `[hh:mm:ss.mmm]` stamp); one can follow `robot: ` on its line.
ERROR_LINE = re.compile(r"(?<!\w)(?:E (?:rkllm|RKNN):[^\n]*|Platform error:[^\n]*|Query platform error!)")
# 1.2.3 and later: the runtime's own reading of the driver version.
RKNN_DRIVER = re.compile(r"RKNN Driver Information[,:]\s*version:\s*([\d.]+\d)")
SHOWN_ERRORS = 3  # error lines quoted in a check's message (all are in the report)
LOADER_ERROR = re.compile(r"[^\n]*error while loading shared libraries[^\n]*")
NOT_STARTED = (126, 127)  # the shell's statuses for a program it could not execute
INIT_TIME = re.compile(r"Model init time \(ms\)\s+([\d.]+)")
STAGE = re.compile(r"^(?:I rkllm:)?\s*(Prefill|Generate)\s+([\d.]+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s*$", re.M)
PEAK_MEMORY = re.compile(r"Peak Memory Usage \(GB\)\s*\n(?:I rkllm:)?\s*([\d.]+)")
CORE_LOAD = re.compile(r"Core(\d+):\s*(\d+)%")
USER_PROMPT = re.compile(r"(?:^|\n)user: ")
ROBOT = re.compile(r"robot: ")
LOAD_FILES = ("/sys/kernel/debug/rknpu/load", "/proc/rknpu/load")
FREQ_FILES = ("/sys/class/devfreq/27700000.npu/cur_freq", "/sys/kernel/debug/rknpu/freq")
SAMPLE_INTERVAL = 0.5  # seconds, as rknn-llm's eval_perf_watch_npu.sh
TABLE_GRACE = 15.0  # seconds from the table to the next `user: ` prompt


@dataclass
class RkllmSettings:
    """The recipe's `verify.rkllm` section (also `verify --rkllm-*` options): its keys, and for a key left
    null the schema's RKLLM_DEFAULTS."""

    model: str
    program: str = RKLLM_DEFAULTS["program"]
    args: str = RKLLM_DEFAULTS["args"]
    lib_dir: str | None = None
    max_new_tokens: int = RKLLM_DEFAULTS["max_new_tokens"]
    max_context_len: int = RKLLM_DEFAULTS["max_context_len"]
    prompt: str = RKLLM_DEFAULTS["prompt"]
    freq_script: str | None = None
    min_generate_tokens_per_s: float | None = None
    max_init_ms: float | None = None
    max_peak_memory_gb: float | None = None
    load_timeout: float = RKLLM_DEFAULTS["load_timeout"]
    answer_timeout: float = RKLLM_DEFAULTS["answer_timeout"]

    SECTION: ClassVar[str] = "verify.rkllm"  # where the settings come from, for messages

    @classmethod
    def from_mapping(cls, data: Mapping) -> Self:
        """From a plain dict (the recipe's section); unknown or missing keys are one clear error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"{cls.SECTION}: unknown setting(s) {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(known))}")
        problem = cls.missing(data)
        if problem:
            raise UserError(problem)
        return cls(**{k: v for k, v in data.items() if v is not None})

    @classmethod
    def wanted(cls, data: Mapping | None) -> bool:
        """Whether the section asks for the check (its model is set)."""
        return bool((data or {}).get("model"))

    @classmethod
    def missing(cls, data: Mapping) -> str | None:
        """What the section lacks, as the message that says so (None: nothing)."""
        if data.get("model"):
            return None
        return ("verify.rkllm: no model path given: set verify.rkllm.model in the recipe "
                "or pass --rkllm-model PATH (a .rkllm file on the board)")

    def placeholders(self) -> dict[str, object]:
        """The values `args` may name, in the order messages list them."""
        return {"model": self.model, "max_new_tokens": self.max_new_tokens, "max_context_len": self.max_context_len}

    def command_line(self) -> str:
        """The program and its arguments, shell-quoted (an argument left empty drops out)."""
        values = self.placeholders()
        try:
            args = [part.format(**values) for part in shlex.split(self.args)]
        except (KeyError, IndexError, ValueError) as exc:
            names = ", ".join(f"{{{name}}}" for name in values)
            raise UserError(f"{self.SECTION}.args {self.args!r}: {exc}; use {names}") from None
        return " ".join(shlex.quote(part) for part in [self.program, *args] if part)


# --------------------------------------------------------------------------- parsing

def parse_output(text: str) -> dict:
    """Everything the runtime and the demo printed, as figures (None where absent).

    With several answers the last performance table counts.
    """
    text = text.replace("\r", "")
    result: dict = {"runtime_version": None, "driver_version": None, "platform": None,
                    "rknn_driver_version": None, "too_old_warning": None, "errors": [], "loader_error": None,
                    "init_failed": False, "init_failed_context": [],
                    "init_ms": None, "prefill": None, "generate": None, "peak_memory_gb": None,
                    "answer": None}
    if found := VERSION_LINE.search(text):
        result["runtime_version"], result["driver_version"], result["platform"] = found.groups()
    if found := RKNN_DRIVER.search(text):
        result["rknn_driver_version"] = found.group(1)
    if found := TOO_OLD.search(text):
        result["too_old_warning"] = found.group(0).strip()
    if found := LOADER_ERROR.search(text):
        result["loader_error"] = found.group(0).strip()
    result["errors"] = list(dict.fromkeys(m.group(0).strip() for m in ERROR_LINE.finditer(text)))
    if found := INIT_FAILED.search(text):
        lines = text.splitlines()
        at = text[:found.start()].count("\n")
        result["init_failed"] = True
        result["init_failed_context"] = [line for line in lines[max(0, at - 4):at + 3] if line.strip()]
    if times := INIT_TIME.findall(text):
        result["init_ms"] = float(times[-1])
    for stage, total, tokens, per_token, per_second in STAGE.findall(text):
        result[stage.lower()] = {"total_ms": float(total), "tokens": int(tokens),
                                 "ms_per_token": float(per_token), "tokens_per_s": float(per_second)}
    if peaks := PEAK_MEMORY.findall(text):
        result["peak_memory_gb"] = float(peaks[-1])
    result["answer"] = _answer(text)
    return result


def _answer(text: str) -> str | None:
    """The last streamed answer: after `robot: `, up to the table or the next prompt."""
    start = text.rfind("robot: ")
    if start < 0:
        return None
    rest = text[start + len("robot: "):]
    ends = [m.start() for m in (re.search(r"(?:^|\n)(?:I rkllm:|user: )", rest), ERROR_LINE.search(rest)) if m]
    return rest[:min(ends, default=len(rest))].strip()


def npu_figures(samples: str) -> dict:
    """Peak and mean load per core and the NPU frequency from `<load line>|<freq>` sample lines."""
    loads: dict[str, list[int]] = {}
    freqs: list[int] = []
    count = 0
    for line in samples.splitlines():
        load, _, freq = line.partition("|")
        cores = CORE_LOAD.findall(load)
        if not cores:
            continue
        count += 1
        for core, percent in cores:
            loads.setdefault(f"Core{core}", []).append(int(percent))
        if freq.strip().isdigit():
            freqs.append(int(freq.strip()))
    return {"samples": count,
            "load": {core: {"peak": max(values), "mean": round(mean(values), 1)}
                     for core, values in sorted(loads.items())},
            "freq_hz": max(set(freqs), key=freqs.count) if freqs else None}


def figures(rkllm: Mapping | None) -> dict[str, float]:
    """The numbers a release pipeline tracks, flat (for JUnit properties and --compare)."""
    if not rkllm:
        return {}
    out: dict[str, float] = {}
    if rkllm.get("init_ms") is not None:
        out["init_ms"] = rkllm["init_ms"]
    for stage in ("prefill", "generate"):
        for key, value in (rkllm.get(stage) or {}).items():
            out[f"{stage}_{key}"] = value
    if rkllm.get("peak_memory_gb") is not None:
        out["peak_memory_gb"] = rkllm["peak_memory_gb"]
    npu = rkllm.get("npu") or {}
    for core, load in (npu.get("load") or {}).items():
        out[f"npu_{core.lower()}_load_peak"] = load["peak"]
        out[f"npu_{core.lower()}_load_mean"] = load["mean"]
    if npu.get("freq_hz"):
        out["npu_freq_mhz"] = round(npu["freq_hz"] / 1e6, 1)
    return out


def runtime_verdict(parsed: Mapping, *, driver_version: str | None = None, chip: str | None = None,
                    exit_status: int | None = None, program: str = "the program") -> tuple[str, str, str]:
    """(status, message, output) of the rkllm-runtime check from `parse_output`'s result.

    `driver_version` is what the board's debugfs says, `chip` the recipe's lunch.chip. The
    runtime's own error lines come first in the message: they are the reason it refused.
    """
    errors = list(parsed.get("errors") or [])
    quoted = " | ".join(errors[:SHOWN_ERRORS]) + (f" (+{len(errors) - SHOWN_ERRORS} more)"
                                                   if len(errors) > SHOWN_ERRORS else "")
    if exit_status in NOT_STARTED and parsed.get("runtime_version") is None and not errors:
        loader = parsed.get("loader_error")
        return "error", (f"{program} could not start (exit {exit_status})"
                         + (f": {loader}; set verify.rkllm.lib_dir to the directory of the runtime's "
                            "libraries on the board" if loader else "")), loader or ""
    problems = []
    if parsed.get("init_failed"):
        problems.append("rkllm init failed: " + (quoted or " | ".join(parsed.get("init_failed_context") or [])))
    elif errors:
        problems.append(f"the runtime reported an error: {quoted}")
    platform = parsed.get("platform")
    if chip and platform and platform.upper() != chip.upper():
        problems.append(f"the runtime reports platform {platform}, the recipe's chip is {chip} (lunch.chip): "
                        "is this the board the image was built for?")
    for source, version in (("rknpu driver", parsed.get("driver_version")),
                            ("RKNN driver information", parsed.get("rknn_driver_version"))):
        if driver_version and version and version != driver_version:
            problems.append(f"the runtime reports {source} {version}, the board's debugfs says {driver_version}")
    if parsed.get("too_old_warning"):
        problems.append(f"the runtime says the driver is too old ({parsed['too_old_warning']})")
    if not errors and not parsed.get("init_failed"):
        if parsed.get("runtime_version") is None:
            problems.append("no `rkllm-runtime version: …` line: did the program run with RKLLM_LOG_LEVEL=1?")
        elif exit_status not in (0, None) and parsed.get("generate") is None:
            problems.append(f"{program} exited {exit_status} without an answer")
    output = "\n".join(parsed.get("init_failed_context") or []) if parsed.get("init_failed") else \
        "\n".join([*([parsed["too_old_warning"]] if parsed.get("too_old_warning") else []), *errors])
    if problems:
        return "failed", "; ".join(problems), output
    return "passed", (f"runtime {parsed['runtime_version']} accepts rknpu driver {parsed['driver_version']} "
                      f"on {platform}"), output


def thresholds_broken(parsed: Mapping, settings: RkllmSettings) -> list[str]:
    """One line per threshold the run missed."""
    problems = []
    generate = parsed.get("generate") or {}
    if settings.min_generate_tokens_per_s is not None and generate.get("tokens_per_s") is not None \
            and generate["tokens_per_s"] < settings.min_generate_tokens_per_s:
        problems.append(f"generate {generate['tokens_per_s']:g} tokens/s is below the minimum "
                        f"{settings.min_generate_tokens_per_s:g}")
    if settings.max_init_ms is not None and parsed.get("init_ms") is not None \
            and parsed["init_ms"] > settings.max_init_ms:
        problems.append(f"init {parsed['init_ms']:g} ms is above the maximum {settings.max_init_ms:g}")
    if settings.max_peak_memory_gb is not None and parsed.get("peak_memory_gb") is not None \
            and parsed["peak_memory_gb"] > settings.max_peak_memory_gb:
        problems.append(f"peak memory {parsed['peak_memory_gb']:g} GB is above the maximum "
                        f"{settings.max_peak_memory_gb:g}")
    return problems


# --------------------------------------------------------------------------- on the board

def _program_output(session: str, echo_end: str, done: re.Pattern) -> str:
    """What the program printed: after the echo of the command line (wrapped anywhere), before the exit marker."""
    echo = re.search("\n?".join(map(re.escape, echo_end)) + r"[^\n]*\n", session)
    if echo:
        session = session[echo.end():]
    end = done.search(session)
    return session[:end.start()] if end else session


class RkllmRun:
    """One run of the demo program on a logged-in console; `check()` returns the check records."""

    def __init__(self, console: Console, settings: RkllmSettings, *, sudo: str, command_timeout: float,
                 driver_version: str | None, chip: str | None = None):
        self.console = console
        self.settings = settings
        self.sudo = sudo
        self.command_timeout = command_timeout
        self.driver_version = driver_version  # what the verified debugfs version file says
        self.chip = chip  # the recipe's lunch.chip: the platform the runtime must report
        self.result: dict = {"program": settings.program, "model": settings.model, "prompt": settings.prompt}
        tag = secrets.token_hex(4)
        self._samples = f"/tmp/rk3576-npu-load-{tag}.log"
        self._pid = f"/tmp/rk3576-npu-load-{tag}.pid"

    def check(self) -> list[dict]:
        records, ready = self._prepared("rkllm-runtime")
        if not ready:
            return records
        hang = self._converse_sampled()
        parsed = parse_output(self.result.pop("output", ""))
        self.result.update(parsed)
        if hang and parsed["errors"]:  # it refused, then hung: the refusal is the reason
            _, message, output = self._verdict(parsed)
            return records + [self._record("rkllm-runtime", "failed", f"{message}; then {hang}", output=output,
                                           properties=self._runtime_props(parsed))]
        if hang:
            return records + [self._record("rkllm-runtime", "error", hang, output=parsed.get("answer") or "")]
        records.append(self._runtime_record(parsed))
        if records[-1]["status"] == "passed":
            records.append(self._perf_record(parsed))
        return records

    # -- steps ----------------------------------------------------------------------------
    def _shell(self, command: str) -> tuple[str, int]:
        return self.console.run(command, timeout=self.command_timeout)

    def _prepared(self, name: str) -> tuple[list[dict], bool]:
        """Before the program runs: its files are on the board, the frequencies pinned. (The records, ready?)
        A missing file is an error record called `name`."""
        missing = self._missing_files()
        if missing:
            return [self._record(name, "error", missing)], False
        if not self.settings.freq_script:
            return [], True
        pinned = self._pin_frequencies()
        return [pinned], pinned["status"] == "passed"

    def _converse_sampled(self) -> str | None:
        """`_converse` while the NPU's load is sampled on the board (its figures go to the result)."""
        # In a subshell, so the interactive shell prints no job notices into later output.
        self._shell(f"({self.sudo}sh -c 'echo $$ >{self._pid}; while :; do {self._sample_once()}; "
                    f"sleep {SAMPLE_INTERVAL}; done' >{self._samples} 2>&1 </dev/null &)")
        try:
            hang = self._converse()
        finally:
            samples = self._stop_sampling()
        self.result["npu"] = npu_figures(samples)
        return hang

    def _missing_files(self) -> str | None:
        s = self.settings
        program = shlex.quote(s.program)
        if self._shell(f"[ -x {program} ] || command -v {program} >/dev/null")[1] != 0:
            return (f"the RKLLM demo program {s.program} is not on the board: bake it into the image "
                    "(the recipe's rootfs overlay) or set verify.rkllm.program to where it is")
        if self._shell(f"[ -e {shlex.quote(s.model)} ]")[1] != 0:
            return (f"the model file {s.model} is not on the board: bake it into the image (the recipe's "
                    "rootfs overlay) or copy it there (scp, USB disk; never over the serial line), or "
                    "set verify.rkllm.model / --rkllm-model to its path on the board")
        return None

    def _pin_frequencies(self) -> dict:
        script = self.settings.freq_script or ""
        output, status = self._shell(f"{self.sudo}sh {shlex.quote(script)}")
        if status == 0:
            return self._record("rkllm-freq-pin", "passed", f"{script} pinned the frequencies", output=output)
        return self._record("rkllm-freq-pin", "failed", f"{script} exited {status}", output=output)

    def _sample_once(self) -> str:
        load = " || ".join(f"cat {path} 2>/dev/null" for path in LOAD_FILES)
        freq = " || ".join(f"cat {path} 2>/dev/null" for path in FREQ_FILES)
        return f'l=$({load}); f=$({freq}); echo "$l|$f"'

    def _stop_sampling(self) -> str:
        try:
            output, _ = self._shell(f"{self.sudo}kill $(cat {self._pid}) 2>/dev/null; cat {self._samples}; "
                                    f"rm -f {self._samples} {self._pid}")
        except ConsoleError:
            return ""
        return output

    def _converse(self) -> str | None:
        """Run the program, ask, take the answer and the table, quit; a message if it hung."""
        s, console = self.settings, self.console
        marker = "RK" + secrets.token_hex(6)
        done = re.compile(re.escape(marker) + r" (-?\d+)\n")
        env = " ".join(["RKLLM_LOG_LEVEL=1"] + ([f"LD_LIBRARY_PATH={shlex.quote(s.lib_dir)}"] if s.lib_dir else []))
        echo_end = f"'{marker[:5]}''{marker[5:]}' $?"
        console.start(f"{self.sudo}env {env} {s.command_line()}; printf '%s %d\\n' {echo_end}")
        waiting, limit = "`user: ` prompt (model load)", s.load_timeout
        try:
            _, match = console.expect([USER_PROMPT, done], timeout=limit, what=waiting)
            if match.re is not done:
                console.send_line(s.prompt)
                waiting, limit = "`robot: ` (the answer)", s.answer_timeout
                console.expect([ROBOT], timeout=limit, what=waiting)
                waiting = "end of the answer"
                _, match = console.expect([PEAK_MEMORY, USER_PROMPT, done], timeout=s.answer_timeout, what=waiting)
                if match.re is PEAK_MEMORY:
                    waiting, limit = "`user: ` prompt after the answer", TABLE_GRACE
                    _, match = console.expect([USER_PROMPT, done], timeout=limit, what=waiting)
                if match.re is not done:
                    console.send_line("exit")
                    waiting, limit = "exit after `exit`", self.command_timeout
                    _, match = console.expect([done], timeout=limit, what=waiting)
            self.result["exit_status"] = int(match.group(1))
            return None
        except ConsoleTimeout:
            self.result["output"] = _program_output(console.session_text(), echo_end, done)
            if not console.recover_shell():
                raise ConsoleError(f"{s.program} hung (no {waiting}) and the shell did not come back after "
                                   "Ctrl-C: reset the board") from None
            return (f"{s.program} gave no {waiting} within {limit:g} s; stopped it with Ctrl-C, "
                    "the console is back at a shell prompt")
        finally:
            self.result.setdefault("output", _program_output(console.session_text(), echo_end, done))

    # -- verdicts -------------------------------------------------------------------------
    def _verdict(self, parsed: dict) -> tuple[str, str, str]:
        return runtime_verdict(parsed, driver_version=self.driver_version, chip=self.chip,
                               exit_status=self.result.get("exit_status"), program=self.settings.program)

    def _runtime_props(self, parsed: dict) -> dict:
        props = {k: parsed[k] for k in ("runtime_version", "driver_version", "rknn_driver_version", "platform")}
        props.update(verified_driver_version=self.driver_version, chip=self.chip)
        return props

    def _runtime_record(self, parsed: dict) -> dict:
        status, message, output = self._verdict(parsed)
        return self._record("rkllm-runtime", status, message, output=output, properties=self._runtime_props(parsed))

    def _thresholds_broken(self, parsed: dict) -> list[str]:
        return thresholds_broken(parsed, self.settings)

    def _perf_problem(self, parsed: dict) -> str | None:
        """Why the performance check fails: no table after the answer, or broken thresholds (None: it passes)."""
        if parsed["generate"] is None or parsed["peak_memory_gb"] is None:
            return "no performance table after the answer (RKLLM_LOG_LEVEL=1 prints it)"
        return "; ".join(self._thresholds_broken(parsed)) or None

    def _perf_record(self, parsed: dict) -> dict:
        props = figures(self.result)
        problem = self._perf_problem(parsed)
        if problem:
            return self._record("rkllm-perf", "failed", problem, properties=props)
        g = parsed["generate"]
        return self._record("rkllm-perf", "passed", f"generate {g['tokens_per_s']:g} tokens/s, init "
                            f"{parsed['init_ms']:g} ms, peak memory {parsed['peak_memory_gb']:g} GB",
                            properties=props)

    @staticmethod
    def _record(name: str, status: str, message: str, *, output: str = "", properties: dict | None = None) -> dict:
        return {"name": name, "required": True, "status": status, "message": message, "output": output,
                "properties": properties or {}}
