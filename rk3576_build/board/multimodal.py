"""The multimodal check: does rknn-llm's image demo load both models and answer a question about a picture?

Runs the multimodal demo (`demo IMAGE ENCODER.rknn LLM.rkllm MAX_NEW MAX_CTX CORE_NUM [PLATFORM]`;
release 1.3.0 needs the platform, 1.2.1 takes six arguments) over the serial console with
RKLLM_LOG_LEVEL=1, asks the configured question, and records what the demo and the runtime print:
the LLM's load time (`main: LLM Model loaded in … ms`), the image encoder's load and inference times
(`main: ImgEnc Model loaded in … ms`, `main: ImgEnc Model inference took … ms`), the runtime's version
line, errors and performance table (parsed as the text check parses them, board/rkllm.py), the answer,
and the NPU's load sampled meanwhile. Thresholds work as the text check's; a refusal or a broken
threshold fails (exit 1), a program that could not run or hung is an error (exit 2) after the console
is back at a shell prompt. `parse_output` and `figures` are pure and work on any captured text.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from rk3576_build.board import rkllm
from rk3576_build.board.console import Console
from rk3576_build.config.schema import MULTIMODAL_DEFAULTS

SECTION = "verify.multimodal"
LLM_LOADED = re.compile(r"LLM Model loaded in\s+([\d.]+)\s*ms")
IMGENC_LOADED = re.compile(r"ImgEnc Model loaded in\s+([\d.]+)\s*ms")
IMGENC_INFERENCE = re.compile(r"ImgEnc Model inference took\s+([\d.]+)\s*ms")
# The demo's own failure lines around the image encoder.
IMGENC_ERROR = re.compile(r"[^\n]*\b(?:init_imgenc|run_imgenc|release_imgenc) fail![^\n]*")
# What OpenCV throws for an image it could not read (an uncaught exception aborts the demo).
OPENCV_ERROR = re.compile(r"terminate called after throwing an instance of 'cv::Exception'"
                          r"(?:\n\s*what\(\):\s*([^\n]*))?")
# The shell's report of a program killed by a signal.
SIGNAL_LINE = re.compile(r"^(?:[^\n]*\s)?(Segmentation fault|Aborted|Bus error|Killed|Illegal instruction)"
                         r"(?: \(core dumped\))?\s*$", re.M)
CRASH_STATUSES = {132: "Illegal instruction", 134: "Aborted", 135: "Bus error", 137: "Killed",
                  139: "Segmentation fault"}


@dataclass
class MultimodalSettings(rkllm.RkllmSettings):
    """The recipe's `verify.multimodal` section (also `verify --multimodal-*`): the demo, its three inputs, its
    arguments, thresholds; for a key left null the schema's MULTIMODAL_DEFAULTS."""

    program: str = MULTIMODAL_DEFAULTS["program"]
    args: str = MULTIMODAL_DEFAULTS["args"]
    max_new_tokens: int = MULTIMODAL_DEFAULTS["max_new_tokens"]
    max_context_len: int = MULTIMODAL_DEFAULTS["max_context_len"]
    prompt: str = MULTIMODAL_DEFAULTS["prompt"]
    load_timeout: float = MULTIMODAL_DEFAULTS["load_timeout"]
    answer_timeout: float = MULTIMODAL_DEFAULTS["answer_timeout"]
    encoder: str = ""
    image: str = ""
    core_num: int = MULTIMODAL_DEFAULTS["core_num"]
    platform: str | None = None  # the 7th argument (rk3576): release 1.3.0's demo needs it, 1.2.1's has none
    max_llm_load_ms: float | None = None
    max_imgenc_load_ms: float | None = None
    max_imgenc_inference_ms: float | None = None

    SECTION: ClassVar[str] = SECTION

    @classmethod
    def wanted(cls, data: Mapping | None) -> bool:
        """Whether the section asks for the check: any of its model, encoder and image is set."""
        return any((data or {}).get(key) for key in ("model", "encoder", "image"))

    @classmethod
    def missing(cls, data: Mapping) -> str | None:
        missing = [key for key in ("model", "encoder", "image") if not data.get(key)]
        if not missing:
            return None
        return (f"{SECTION}: no {', '.join(missing)} given: set {SECTION}.model (the .rkllm), .encoder "
                "(the vision encoder .rknn) and .image (a picture), all paths on the board")

    def placeholders(self) -> dict[str, object]:
        """As the text check's, plus the image, the encoder, the NPU cores and the platform (empty: dropped,
        for 1.2.1's six arguments)."""
        return {"image": self.image, "encoder": self.encoder, "model": self.model,
                "max_new_tokens": self.max_new_tokens, "max_context_len": self.max_context_len,
                "core_num": self.core_num, "platform": self.platform or ""}


# --------------------------------------------------------------------------- parsing

def parse_output(text: str, exit_status: int | None = None) -> dict:
    """What the demo and the runtime printed (rkllm.parse_output's figures plus the demo's own), None where absent."""
    text = text.replace("\r", "")
    result = rkllm.parse_output(text)
    for key, pattern in (("llm_load_ms", LLM_LOADED), ("imgenc_load_ms", IMGENC_LOADED),
                         ("imgenc_inference_ms", IMGENC_INFERENCE)):
        found = pattern.findall(text)
        result[key] = float(found[-1]) if found else None
    result["imgenc_errors"] = list(dict.fromkeys(m.group(0).strip() for m in IMGENC_ERROR.finditer(text)))
    opencv = OPENCV_ERROR.search(text)
    result["opencv_error"] = (opencv.group(1) or opencv.group(0)).strip() if opencv else None
    signal = SIGNAL_LINE.search(text)
    result["crash"] = signal.group(1) if signal else CRASH_STATUSES.get(exit_status or 0)
    return result


def figures(result: Mapping | None) -> dict[str, float]:
    """The numbers a release pipeline tracks, flat: the text check's plus the demo's load and encoder times."""
    out = rkllm.figures(result)
    for key in ("llm_load_ms", "imgenc_load_ms", "imgenc_inference_ms"):
        if result and result.get(key) is not None:
            out[key] = result[key]
    return out


def demo_problems(parsed: Mapping, program: str = "the demo") -> list[str]:
    """What went wrong around the image: the encoder's failures, an unreadable image, a crash."""
    problems = []
    if parsed.get("imgenc_errors"):
        problems.append("the image encoder failed: " + " | ".join(parsed["imgenc_errors"][:rkllm.SHOWN_ERRORS]))
    if parsed.get("opencv_error"):
        problems.append(f"{program} could not read the image (OpenCV: {parsed['opencv_error']})")
    if parsed.get("crash") and parsed.get("generate") is None:
        hint = ""
        if parsed.get("imgenc_load_ms") is not None and parsed.get("imgenc_inference_ms") is None \
                and not parsed.get("opencv_error"):
            hint = ("; it crashed encoding the image: does the demo's EMBED_SIZE match the encoder "
                    "(release 1.2.1 hard-codes it, see patches/rknn-llm-1.2.1/)?")
        problems.append(f"{program} crashed ({parsed['crash']}){hint}")
    return problems


def thresholds_broken(parsed: Mapping, settings: MultimodalSettings) -> list[str]:
    """One line per threshold the run missed: the text check's, then the load and encoder times."""
    problems = rkllm.thresholds_broken(parsed, settings)
    for key, limit, what in (("llm_load_ms", settings.max_llm_load_ms, "LLM load"),
                             ("imgenc_load_ms", settings.max_imgenc_load_ms, "image encoder load"),
                             ("imgenc_inference_ms", settings.max_imgenc_inference_ms, "image encoder inference")):
        if limit is not None and parsed.get(key) is not None and parsed[key] > limit:
            problems.append(f"{what} {parsed[key]:g} ms is above the maximum {limit:g}")
    return problems


# --------------------------------------------------------------------------- on the board

class MultimodalRun(rkllm.RkllmRun):
    """One run of the multimodal demo on a logged-in console; `check()` returns the check records."""

    settings: MultimodalSettings

    def __init__(self, console: Console, settings: MultimodalSettings, *, sudo: str, command_timeout: float,
                 driver_version: str | None, chip: str | None = None):
        super().__init__(console, settings, sudo=sudo, command_timeout=command_timeout,
                         driver_version=driver_version, chip=chip)
        self.result.update(encoder=settings.encoder, image=settings.image, platform=settings.platform)

    def check(self) -> list[dict]:
        records, ready = self._prepared("multimodal-runtime")
        if not ready:
            return records
        hang = self._converse_sampled()
        parsed = parse_output(self.result.pop("output", ""), self.result.get("exit_status"))
        self.result.update(parsed)
        status, message, output = self._verdict(parsed)
        if hang and (parsed["errors"] or demo_problems(parsed)):  # it refused or failed, then hung: the reason
            return records + [self._record("multimodal-runtime", "failed", f"{message}; then {hang}", output=output,
                                           properties=self._runtime_props(parsed))]
        if hang:
            return records + [self._record("multimodal-runtime", "error", hang, output=parsed.get("answer") or "")]
        records.append(self._record("multimodal-runtime", status, message, output=output,
                                    properties=self._runtime_props(parsed)))
        if status == "passed":
            records.append(self._perf(parsed))
        return records

    def _missing_files(self) -> str | None:
        s = self.settings
        if self._shell(f"[ -x {shlex.quote(s.program)} ] || command -v {shlex.quote(s.program)} >/dev/null")[1] != 0:
            return (f"the multimodal demo {s.program} is not on the board: build it into the image (the recipe's "
                    f"apps:) or set {SECTION}.program to where it is")
        for key, what in (("model", "LLM model (.rkllm)"), ("encoder", "vision encoder (.rknn)"), ("image", "image")):
            path = getattr(s, key)
            if self._shell(f"[ -e {shlex.quote(path)} ]")[1] != 0:
                return (f"the {what} {path} is not on the board: bake it into the image (the app's files: or a "
                        f"rootfs overlay) or copy it there (never over the serial line), or set {SECTION}.{key}")
        return None

    def _verdict(self, parsed: dict) -> tuple[str, str, str]:
        status, message, output = super()._verdict(parsed)
        problems = demo_problems(parsed, self.settings.program)
        if not problems:
            return status, message, output
        lines = list(parsed.get("imgenc_errors") or [])
        if parsed.get("opencv_error"):
            lines.append(parsed["opencv_error"])
        if status == "failed":  # the runtime's own reason follows the demo's
            problems.append(message)
        return "failed", "; ".join(problems), "\n".join([*lines, output]).strip()

    def _thresholds_broken(self, parsed: dict) -> list[str]:
        return thresholds_broken(parsed, self.settings)

    def _perf(self, parsed: dict) -> dict:
        props = figures(self.result)
        if parsed["imgenc_inference_ms"] is None or parsed["llm_load_ms"] is None:
            return self._record("multimodal-perf", "failed", "no `main: LLM Model loaded in` or `main: ImgEnc Model "
                                "inference took` line: is this rknn-llm's multimodal demo?", properties=props)
        problem = self._perf_problem(parsed)
        if problem:
            return self._record("multimodal-perf", "failed", problem, properties=props)
        g = parsed["generate"]
        return self._record("multimodal-perf", "passed", (
            f"LLM load {parsed['llm_load_ms']:g} ms, image encoder load {parsed['imgenc_load_ms']:g} ms and inference "
            f"{parsed['imgenc_inference_ms']:g} ms, generate {g['tokens_per_s']:g} tokens/s, peak memory "
            f"{parsed['peak_memory_gb']:g} GB"), properties=props)
