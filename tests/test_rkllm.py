"""The RKLLM check: the parser on the runtime's exact lines, settings, --compare, and runs on the QEMU board."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import fields

import pytest

from helpers import BOARD_PASSWORD, booted, files_without
from rk3576_build.board.console import Console
from rk3576_build.board.rkllm import (
    RkllmSettings,
    figures,
    npu_figures,
    parse_output,
    runtime_verdict,
    thresholds_broken,
)
from rk3576_build.board.verify import (
    JUNIT_NAME,
    REPORT_NAME,
    TRANSCRIPT_NAME,
    append_history,
    compare,
    write_junit,
)
from rk3576_build.cli.verify import build_parser, main, rkllm_options
from rk3576_build.config.schema import RKLLM_DEFAULTS, section_keys
from rk3576_build.core.errors import UserError
from rk3576_build.demo.vboard import LLM_DEMO_PATH, STANDIN_MODEL_PATH

# The runtime's lines exactly as domain.md quotes them.
VERSION = "I rkllm: rkllm-runtime version: 1.2.1, rknpu driver version: 0.9.8, platform: RK3576"
TOO_OLD = "W rkllm: Warning: Your rknpu driver version is too low, please upgrade to 0.9.7"
TABLE = """\
I rkllm:  Model init time (ms)  5482.81
I rkllm:  Stage         Total Time (ms)  Tokens    Time per Token (ms)      Tokens per Second
I rkllm:  Prefill       4143.53          223       18.58                    53.82
I rkllm:  Generate      20911.60         116       180.27                   5.55
I rkllm:  Peak Memory Usage (GB)
I rkllm:  4.55
"""
MODEL = "/" + STANDIN_MODEL_PATH
PROGRAM = "/" + LLM_DEMO_PATH


def test_parser_on_the_exact_lines():
    text = "rkllm init start\r\n" + VERSION + "\r\nrkllm init success\r\n\r\nuser: 0\r\n" \
        "robot: An answer,\r\nstreamed.\r\n" + TABLE.replace("\n", "\r\n") + "\r\nuser: "
    parsed = parse_output(text)
    assert (parsed["runtime_version"], parsed["driver_version"], parsed["platform"]) == ("1.2.1", "0.9.8", "RK3576")
    assert parsed["too_old_warning"] is None and parsed["init_failed"] is False
    assert parsed["init_ms"] == 5482.81
    assert parsed["prefill"] == {"total_ms": 4143.53, "tokens": 223, "ms_per_token": 18.58, "tokens_per_s": 53.82}
    assert parsed["generate"] == {"total_ms": 20911.60, "tokens": 116, "ms_per_token": 180.27, "tokens_per_s": 5.55}
    assert parsed["peak_memory_gb"] == 4.55
    assert parsed["answer"] == "An answer,\nstreamed."


def test_parser_too_old_warning_and_init_failed_with_context():
    text = "\n".join(["rkllm init start", VERSION.replace("0.9.8", "0.9.6"), TOO_OLD,
                      "E rkllm: failed to load model", "rkllm init failed", "$ "])
    parsed = parse_output(text)
    assert parsed["too_old_warning"] == TOO_OLD and parsed["driver_version"] == "0.9.6"
    assert parsed["init_failed"] is True
    assert "E rkllm: failed to load model" in parsed["init_failed_context"]
    assert parsed["init_failed_context"][0] == "rkllm init start"
    assert parsed["generate"] is None and parsed["answer"] is None


# Real runs as public logs show them (domain.md, "What the real runtime prints"); blank lines as printed.
RUNTIME_111_TOO_OLD_AND_MALLOC = """\
rkllm init start
W rkllm: Warning: Your rknpu driver version is too low, please upgrade to 0.9.7.

I rkllm: rkllm-runtime version: 1.1.4, rknpu driver version: 0.9.6, platform: RK3576

E RKNN: [19:58:54.141] failed to allocate handle, ret: -1, errno: 14, errstr: Bad address
E RKNN: [19:58:54.142] failed to malloc npu memory, size: 4022861824, flags: 0x2
E RKNN: [19:58:54.145] load model file error!
rkllm init failed
"""
RUNTIME_121_MATMUL = """\
rkllm init start
I rkllm: rkllm-runtime version: 1.2.1, rknpu driver version: 0.9.8, platform: RK3576

rkllm init success

user: 0
robot: E rkllm: matmul(w8a8) run failed

user: exit
"""
RUNTIME_123 = """\
rkllm init start
I rkllm: rkllm-runtime version: 1.2.3, rknpu driver version: 0.9.8, platform: RK3576
I RKNN: [10:42:07.318] RKNN Driver Information, version: 0.9.8
rkllm init success

user: 0
robot: An NPU runs neural networks.
""" + TABLE + "\nuser: "
RUNTIME_130_INIT = """\
rkllm init start
I rkllm: rkllm-runtime version: 1.3.0, rknpu driver version: 0.9.8, platform: RK3576
E RKNN: [08:01:12.407] failed to malloc npu memory, size: 2684354560, flags: 0x2
E rkllm: rkllm_init failed
"""
NO_DRIVER = """\
rkllm init start
E RKNN: [12:35:17.433] failed to open rknpu module, need to insmod rknpu dirver!
E RKNN: [12:35:17.433] failed to open rknn device!
E RKNN: [12:35:17.533] Device is not available
Get device properties failed
rkllm init failed
"""
OTHER_CHIP = """\
rkllm init start
Platform error: must be either RK3588, RK3576, RV1126B, or RK3562.
rkllm init failed
"""


def _verdict(text, **kwargs):
    return runtime_verdict(parse_output(text), **{"driver_version": "0.9.8", "chip": "rk3576", **kwargs})


def test_real_111_too_old_driver_and_malloc_failure():
    parsed = parse_output(RUNTIME_111_TOO_OLD_AND_MALLOC)
    assert parsed["too_old_warning"].endswith("upgrade to 0.9.7.") and parsed["init_failed"]
    assert parsed["errors"][1] == "E RKNN: [19:58:54.142] failed to malloc npu memory, size: 4022861824, flags: 0x2"
    status, message, output = _verdict(RUNTIME_111_TOO_OLD_AND_MALLOC, driver_version="0.9.6", exit_status=255)
    assert status == "failed" and "accepts" not in message
    assert message.startswith("rkllm init failed: E RKNN: [19:58:54.141] failed to allocate handle")
    assert "failed to malloc npu memory, size: 4022861824" in message and "too old" in message
    assert "E RKNN: [19:58:54.145] load model file error!" in output


def test_real_121_matmul_failure_after_init_success_is_the_reason():
    parsed = parse_output(RUNTIME_121_MATMUL)
    assert parsed["errors"] == ["E rkllm: matmul(w8a8) run failed"] and not parsed["init_failed"]
    assert parsed["answer"] == ""  # the error is no answer
    status, message, _ = _verdict(RUNTIME_121_MATMUL, exit_status=0)
    assert (status, message) == ("failed", "the runtime reported an error: E rkllm: matmul(w8a8) run failed")


def test_real_123_driver_information_line():
    parsed = parse_output(RUNTIME_123)
    assert (parsed["runtime_version"], parsed["driver_version"], parsed["rknn_driver_version"]) == \
        ("1.2.3", "0.9.8", "0.9.8")
    assert parsed["errors"] == [] and parsed["answer"] == "An NPU runs neural networks."
    assert _verdict(RUNTIME_123, exit_status=0) == ("passed", "runtime 1.2.3 accepts rknpu driver 0.9.8 on RK3576", "")
    # The runtime's own reading of the driver disagrees with debugfs: a failure naming both.
    status, message, _ = _verdict(RUNTIME_123.replace("Information, version: 0.9.8", "Information, version: 0.9.7"))
    assert status == "failed" and message == ("the runtime reports RKNN driver information 0.9.7, the board's "
                                              "debugfs says 0.9.8")


def test_real_130_init_failure_with_an_underscore():
    parsed = parse_output(RUNTIME_130_INIT)
    assert parsed["runtime_version"] == "1.3.0" and not parsed["init_failed"]  # the demo's line never came
    status, message, _ = _verdict(RUNTIME_130_INIT, exit_status=139)  # 1.3.0 can crash right after
    assert status == "failed" and "accepts" not in message
    assert message == ("the runtime reported an error: E RKNN: [08:01:12.407] failed to malloc npu memory, "
                       "size: 2684354560, flags: 0x2 | E rkllm: rkllm_init failed")


def test_no_driver_and_unsupported_platform_lines_are_the_reason():
    status, message, _ = _verdict(NO_DRIVER, exit_status=255)
    assert status == "failed"
    assert message == ("rkllm init failed: E RKNN: [12:35:17.433] failed to open rknpu module, need to insmod "
                       "rknpu dirver! | E RKNN: [12:35:17.433] failed to open rknn device! | E RKNN: "
                       "[12:35:17.533] Device is not available")
    status, message, _ = _verdict(OTHER_CHIP, exit_status=255)
    assert (status, message) == ("failed", "rkllm init failed: Platform error: must be either RK3588, RK3576, "
                                           "RV1126B, or RK3562.")


def test_platform_must_be_the_recipes_chip():
    text = RUNTIME_123.replace("platform: RK3576", "platform: RK3588")
    status, message, _ = _verdict(text, exit_status=0)
    assert status == "failed" and message.startswith("the runtime reports platform RK3588, the recipe's chip "
                                                     "is rk3576 (lunch.chip)")
    assert _verdict(text, chip=None, exit_status=0)[0] == "passed"  # no chip given: nothing to hold it to
    assert _verdict(RUNTIME_123, chip="RK3576", exit_status=0)[0] == "passed"


def test_more_error_lines_than_the_message_quotes_are_counted():
    text = "\n".join(f"E RKNN: [00:00:0{i}.000] error {i}" for i in range(5))
    message = _verdict(text, exit_status=1)[1]
    assert message.endswith("E RKNN: [00:00:02.000] error 2 (+2 more)")
    assert parse_output(text + "\n" + text)["errors"] == text.splitlines()  # a repeated line counts once


def test_a_program_that_could_not_start_is_an_error():
    text = "/usr/bin/llm_demo: error while loading shared libraries: librkllmrt.so: cannot open shared object file"
    status, message, _ = _verdict(text, exit_status=127, program="/usr/bin/llm_demo")
    assert status == "error" and "could not start (exit 127)" in message and "verify.rkllm.lib_dir" in message


def test_last_table_counts_and_figures_are_flat():
    second = TABLE.replace("5.55", "6.10").replace("4.55", "4.60")
    parsed = parse_output(VERSION + "\n" + TABLE + "user: 1\nrobot: again\n" + second)
    assert parsed["generate"]["tokens_per_s"] == 6.10 and parsed["peak_memory_gb"] == 4.60
    parsed["npu"] = npu_figures("NPU load:  Core0: 40%, Core1: 20%,|1000000000\n"
                                "NPU load:  Core0: 80%, Core1:  0%,|1000000000\n")
    flat = figures(parsed)
    assert flat["generate_tokens_per_s"] == 6.10 and flat["prefill_tokens"] == 223
    assert flat["npu_core0_load_peak"] == 80 and flat["npu_core0_load_mean"] == 60
    assert flat["npu_core1_load_mean"] == 10 and flat["npu_freq_mhz"] == 1000


def test_npu_samples_without_freq_or_load():
    assert npu_figures("garbage\nNPU load:  Core0:  5%, Core1:  7%,|\n") == \
        {"samples": 1, "load": {"Core0": {"peak": 5, "mean": 5}, "Core1": {"peak": 7, "mean": 7}}, "freq_hz": None}
    assert npu_figures("") == {"samples": 0, "load": {}, "freq_hz": None}


def test_thresholds():
    parsed = parse_output(TABLE)
    settings = RkllmSettings(model="m", min_generate_tokens_per_s=10, max_init_ms=5000, max_peak_memory_gb=8)
    problems = thresholds_broken(parsed, settings)
    assert len(problems) == 2
    assert "5.55 tokens/s is below the minimum 10" in problems[0] and "5482.81 ms" in problems[1]
    assert thresholds_broken(parsed, RkllmSettings(model="m")) == []


def test_settings_errors_and_command_line():
    with pytest.raises(UserError, match="no model path given"):
        RkllmSettings.from_mapping({"program": "/usr/bin/llm_demo"})
    with pytest.raises(UserError, match="unknown setting.*promt"):
        RkllmSettings.from_mapping({"model": "m", "promt": "hi"})
    settings = RkllmSettings.from_mapping({"model": "/data/my model.rkllm", "max_new_tokens": 64, "lib_dir": None})
    assert settings.command_line() == "/usr/bin/llm_demo '/data/my model.rkllm' 64 2048"
    multimodal = RkllmSettings(model="/data/qwen2-vl.rkllm", program="/data/demo",
                               args="/data/demo.jpg /data/vision.rknn {model} {max_new_tokens} {max_context_len} 3")
    assert multimodal.command_line() == "/data/demo /data/demo.jpg /data/vision.rknn /data/qwen2-vl.rkllm 256 2048 3"
    with pytest.raises(UserError, match="verify.rkllm.args"):
        RkllmSettings(model="m", args="{modle}").command_line()


def test_settings_and_options_are_the_schemas_keys_with_its_defaults():
    keys = list(section_keys("verify.rkllm"))
    assert [f.name for f in fields(RkllmSettings)] == keys
    settings = RkllmSettings(model="m")
    assert {key: getattr(settings, key) for key in RKLLM_DEFAULTS} == RKLLM_DEFAULTS
    assert [key for key, *_ in rkllm_options()] == keys
    usage = " ".join(build_parser().format_help().split())
    assert "--rkllm-program PROGRAM the demo program on the board (default /usr/bin/llm_demo)" in usage
    assert "--rkllm-max-new-tokens N max_new_tokens (default 256)" in usage


def test_recipe_section_and_command_line_merge(capsys):
    recipe = {"console": "/dev/ttyUSB0", "rkllm": {"model": "/data/a.rkllm", "max_new_tokens": 128,
                                                   "prompt": None, "min_generate_tokens_per_s": 5.0}}
    args = build_parser(recipe).parse_args(["--rkllm-prompt", "What is an NPU?", "--rkllm-max-init-ms", "9000"])
    from rk3576_build.cli.verify import rkllm_settings as _rkllm_settings
    assert _rkllm_settings(args, recipe["rkllm"]) == {"model": "/data/a.rkllm", "max_new_tokens": 128,
                                                      "min_generate_tokens_per_s": 5.0,
                                                      "prompt": "What is an NPU?", "max_init_ms": 9000.0}
    assert _rkllm_settings(build_parser(recipe).parse_args(["--no-rkllm"]), recipe["rkllm"]) is None
    assert _rkllm_settings(build_parser().parse_args([]), None) is None
    # An option without a model is a clear error before any console is opened.
    assert main(["--console", "/dev/ttyUSB-absent", "--rkllm-prompt", "hi"]) == 2
    assert "no model path given" in capsys.readouterr().err


def _report(actual, tokens_per_s, peak):
    rkllm = parse_output(VERSION + "\n" + TABLE.replace("5.55", str(tokens_per_s)).replace("4.55", str(peak)))
    rkllm["npu"] = npu_figures("NPU load:  Core0: 50%, Core1: 40%,|1000000000\n")
    return {"actual": actual, "started": "2026-11-28T10:00:00+00:00", "checks": [], "rkllm": rkllm}


def test_compare_two_reports_without_a_board(tmp_path, capsys):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(_report("RKNPU driver: v0.9.7", 5.0, 4.5)))
    new.write_text(json.dumps(_report("RKNPU driver: v0.9.8", 5.5, 4.4)))
    assert main(["--compare", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    assert "RKNPU driver: v0.9.7" in out and "RKNPU driver: v0.9.8" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("generate_tokens_per_s"))
    assert row.split()[1:] == ["5", "5.5", "+0.50", "(+10.0%)"]
    row = next(line for line in out.splitlines() if line.strip().startswith("peak_memory_gb"))
    assert row.split()[1:] == ["4.5", "4.4", "-0.10", "(-2.2%)"]
    assert main(["--compare", str(tmp_path / "absent.json"), str(new)]) == 2
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["--compare", str(tmp_path / "bad.json"), str(new)]) == 2
    err = capsys.readouterr().err
    assert "cannot read the report" in err and "is not a verify report" in err


def test_history_file_keeps_a_trend(tmp_path):
    history = tmp_path / "runs" / "history.jsonl"
    first, second = _report("RKNPU driver: v0.9.7", 5.0, 4.5), _report("RKNPU driver: v0.9.8", 6.0, 4.5)
    assert append_history(history, first) is None
    previous = append_history(history, second)
    assert previous["actual"] == "RKNPU driver: v0.9.7" and "answer" not in previous["rkllm"]
    assert len(history.read_text().splitlines()) == 2
    row = next(line for line in compare(previous, second).splitlines() if "generate_tokens_per_s" in line)
    assert row.split()[1:] == ["5", "6", "+1.00", "(+20.0%)"]
    history.write_text(history.read_text() + "{broken\n")
    with pytest.raises(UserError, match="broken last line"):
        append_history(history, second)


def test_junit_carries_figures_as_properties(tmp_path):
    report = {"started": "x", "durations_s": {"total": 1}, "console": "c", "expected": "e", "actual": "a",
              "checks": [{"name": "rkllm-perf", "status": "passed", "message": "ok",
                          "properties": {"generate_tokens_per_s": 5.55, "npu_freq_mhz": None}}]}
    write_junit(report, tmp_path / "j.xml")
    case = ET.parse(tmp_path / "j.xml").getroot().find("testsuite/testcase")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props == {"generate_tokens_per_s": "5.55", "npu_freq_mhz": ""}


# --------------------------------------------------------------------------- on the QEMU board

# Set up once on the shared board: a broken model, a runtime wrapper that sees another
# driver, a program that hangs, a frequency-pinning script.
MALLOC_FAILED = "E RKNN: [10:21:33.052] failed to malloc npu memory, size: 4022861824, flags: 0x2"
MATMUL_FAILED = "E rkllm: matmul(w8a8) run failed"
NO_RKNPU = "E RKNN: [12:35:17.433] failed to open rknpu module, need to insmod rknpu dirver!"
BOARD_SETUP = (
    "printf 'not a model\\n' >/tmp/bad.rkllm",
    "printf '#!/bin/sh\\nRKLLM_STANDIN_DRIVER_VERSION=0.9.9 exec /usr/bin/llm_demo \"$@\"\\n' >/tmp/other-driver",
    "printf '#!/bin/sh\\necho \"rkllm init start\"\\nexec sleep 600\\n' >/tmp/hangs",
    "printf '#!/bin/sh\\necho pinned NPU to 1 GHz\\n' >/tmp/fix_freq_rk3576.sh",
    # The runtime's failures as the stand-in prints them (its model file says which).
    f"printf '%s\\n' 'RKLLM-STANDIN-MODEL 1' 'init_ms=200' 'say_at_init={MALLOC_FAILED}' "
    "'say_at_init=E RKNN: [10:21:33.055] load model file error!' 'init=failed' >/tmp/malloc.rkllm",
    f"printf '%s\\n' 'RKLLM-STANDIN-MODEL 1' 'init_ms=200' 'say_at_run={MATMUL_FAILED}' >/tmp/matmul.rkllm",
    "printf '#!/bin/sh\\nRKLLM_STANDIN_PLATFORM=RK3588 exec /usr/bin/llm_demo \"$@\"\\n' >/tmp/other-platform",
    f"printf '#!/bin/sh\\necho \"rkllm init start\"\\necho \"{NO_RKNPU}\"\\nexec sleep 600\\n' "
    ">/tmp/refuses-then-hangs",
    "chmod 755 /tmp/other-driver /tmp/hangs /tmp/other-platform /tmp/refuses-then-hangs",
)


@pytest.fixture(scope="module")
def board(board_images, tmp_path_factory):
    """One 0.9.8 board serves every run below (each verify logs in and out again)."""
    with booted(board_images("0.9.8"), tmp_path_factory.mktemp("rkllm-board")) as running:
        with Console(running.url) as console:
            console.login("root", BOARD_PASSWORD, timeout=120)
            for command in BOARD_SETUP:
                assert console.run(command)[1] == 0, command
            console.logout()
        yield running


def _verify(url, out, monkeypatch, *extra):
    """verify as the command runs it in a project whose recipe's lunch.chip is rk3576."""
    monkeypatch.setenv("RK3576_CONSOLE_PASSWORD", BOARD_PASSWORD)
    code = main(["--console", url, "--out", str(out), "--login-timeout", "120",
                 "--rkllm-max-new-tokens", "12", "--rkllm-load-timeout", "30", "--rkllm-answer-timeout", "60", *extra],
                chip="rk3576")
    report = json.loads((out / REPORT_NAME).read_text())
    junit = ET.parse(out / JUNIT_NAME).getroot()
    assert files_without(out, BOARD_PASSWORD) == []
    return code, report, junit


def _check(report, name):
    return next(c for c in report["checks"] if c["name"] == name)


@pytest.mark.qemu
def test_pass_every_figure_in_json_junit_summary_and_compare(board, tmp_path, monkeypatch, capsys):
    history = tmp_path / "history.jsonl"
    append_history(history, _report("RKNPU driver: v0.9.7", 5.0, 4.5))
    code, report, junit = _verify(board.url, tmp_path / "new", monkeypatch, "--rkllm-model", MODEL,
                                  "--rkllm-freq-script", "/tmp/fix_freq_rk3576.sh", "--rkllm-prompt", "1",
                                  "--history", str(history))
    assert code == 0, report
    run = report["rkllm"]
    assert (run["runtime_version"], run["driver_version"], run["platform"]) == ("1.2.1", "0.9.8", "RK3576")
    assert run["init_ms"] >= 1500 and run["peak_memory_gb"] == 1.12
    assert run["generate"]["tokens"] == 12 and 5 < run["generate"]["tokens_per_s"] < 25
    assert run["prefill"]["tokens"] > 20 and run["prefill"]["tokens_per_s"] > 0
    assert run["npu"]["samples"] >= 2 and set(run["npu"]["load"]) == {"Core0", "Core1"}
    assert run["answer"].startswith("An NPU is a processor") and run["exit_status"] == 0
    assert [c["status"] for c in report["checks"] if c["name"].startswith("rkllm")] == ["passed"] * 3
    assert "pinned NPU to 1 GHz" in _check(report, "rkllm-freq-pin")["output"]
    perf = next(c for c in junit.iter("testcase") if c.get("name") == "rkllm-perf")
    props = {p.get("name"): p.get("value") for p in perf.iter("property")}
    assert float(props["generate_tokens_per_s"]) == run["generate"]["tokens_per_s"]
    assert {"init_ms", "prefill_total_ms", "generate_ms_per_token", "peak_memory_gb",
            "npu_core0_load_peak", "npu_core1_load_mean"} <= set(props)
    runtime = next(c for c in junit.iter("testcase") if c.get("name") == "rkllm-runtime")
    assert {p.get("name"): p.get("value") for p in runtime.iter("property")}["driver_version"] == "0.9.8"
    out = capsys.readouterr().out
    assert "PASS" in out and "generate  12 tokens in" in out and "peak 1.12 GB" in out and "Core0 peak" in out
    assert f"last run in {history}" in out and "RKNPU driver: v0.9.7" in out  # the history's trend
    assert json.loads(history.read_text().splitlines()[-1])["rkllm"]["generate"] == run["generate"]
    transcript = (tmp_path / "new" / TRANSCRIPT_NAME).read_text()
    assert "robot: An NPU is a processor" in transcript and "Write a haiku" in transcript
    # The release pipeline's trend: this run against an older one.
    old = dict(report, actual="RKNPU driver: v0.9.7",
               rkllm=dict(run, generate=dict(run["generate"], tokens_per_s=run["generate"]["tokens_per_s"] / 2)))
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert main(["--compare", str(tmp_path / "old.json"), str(tmp_path / "new" / REPORT_NAME)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "generate_tokens_per_s" in line)
    assert row.rstrip().endswith("(+100.0%)")


@pytest.mark.qemu
def test_driver_mismatch_reported_by_the_runtime_line(board, tmp_path, monkeypatch):
    code, report, junit = _verify(board.url, tmp_path, monkeypatch, "--rkllm-model", MODEL,
                                  "--rkllm-program", "/tmp/other-driver")
    assert code == 1 and report["status"] == "failed" and report["match"] is True
    runtime = _check(report, "rkllm-runtime")
    assert runtime["status"] == "failed"
    assert "runtime reports rknpu driver 0.9.9" in runtime["message"] and "debugfs says 0.9.8" in runtime["message"]
    assert report["rkllm"]["driver_version"] == "0.9.9" and "too old" not in runtime["message"]
    case = next(c for c in junit.iter("testcase") if c.get("name") == "rkllm-runtime")
    assert "0.9.9" in case.find("failure").get("message")


@pytest.mark.qemu
def test_init_failed_with_the_lines_around_it(board, tmp_path, monkeypatch):
    code, report, _ = _verify(board.url, tmp_path, monkeypatch, "--rkllm-model", "/tmp/bad.rkllm")
    assert code == 1
    runtime = _check(report, "rkllm-runtime")
    assert runtime["status"] == "failed" and runtime["message"].startswith("rkllm init failed")
    assert "not a valid rkllm model" in runtime["message"] and "rkllm init failed" in runtime["output"]
    assert report["rkllm"]["init_failed"] and report["rkllm"]["exit_status"] == 255


@pytest.mark.qemu
def test_threshold_breach_is_exit_1_with_the_figures(board, tmp_path, monkeypatch, capsys):
    code, report, _ = _verify(board.url, tmp_path, monkeypatch, "--rkllm-model", MODEL,
                              "--rkllm-min-generate-tokens-per-s", "500", "--rkllm-max-peak-memory-gb", "0.5")
    assert code == 1 and report["status"] == "failed"
    assert _check(report, "rkllm-runtime")["status"] == "passed"
    perf = _check(report, "rkllm-perf")
    assert perf["status"] == "failed" and "below the minimum 500" in perf["message"]
    assert "peak memory 1.12 GB is above the maximum 0.5" in perf["message"]
    assert perf["properties"]["generate_tokens_per_s"] == report["rkllm"]["generate"]["tokens_per_s"]
    assert "FAIL" in capsys.readouterr().out


@pytest.mark.qemu
def test_hang_times_out_recovers_the_console_exit_2(board, tmp_path, monkeypatch, capsys):
    code, report, junit = _verify(board.url, tmp_path / "hang", monkeypatch, "--rkllm-model", MODEL,
                                  "--rkllm-program", "/tmp/hangs", "--rkllm-load-timeout", "4")
    assert code == 2 and report["status"] == "error"
    runtime = _check(report, "rkllm-runtime")
    assert runtime["status"] == "error" and "within 4 s" in runtime["message"]
    assert "back at a shell prompt" in runtime["message"]
    assert next(c for c in junit.iter("testcase") if c.get("name") == "rkllm-runtime").find("error") is not None
    # The console was left usable: a plain verify right after passes, and no sampler or program is left.
    code, report, _ = _verify(board.url, tmp_path / "after", monkeypatch, "--no-rkllm")
    assert code == 0, report
    with Console(board.url) as console:
        console.login("root", BOARD_PASSWORD, timeout=60)
        leftover, _ = console.run("ps | grep -e 'sleep 600' -e rk3576-npu-load | grep -v grep || true")
        console.logout()
    assert leftover == ""


@pytest.mark.qemu
def test_missing_model_path_is_a_clear_message_exit_2(board, tmp_path, monkeypatch, capsys):
    code, report, _ = _verify(board.url, tmp_path, monkeypatch, "--rkllm-model", "/data/absent.rkllm")
    assert code == 2 and report["status"] == "error"
    message = _check(report, "rkllm-runtime")["message"]
    assert "model file /data/absent.rkllm is not on the board" in message and "never over the serial" in message
    assert "/data/absent.rkllm is not on the board" in capsys.readouterr().out


@pytest.mark.qemu
def test_too_old_warning_on_a_096_board(board_images, tmp_path, monkeypatch):
    with booted(board_images("0.9.6"), tmp_path) as old_board:
        code, report, _ = _verify(old_board.url, tmp_path / "out", monkeypatch, "--rkllm-model", MODEL,
                                  "--expected", "RKNPU driver: v0.9.6")
    assert code == 1 and report["match"] is True
    runtime = _check(report, "rkllm-runtime")
    assert runtime["status"] == "failed" and "too old" in runtime["message"]
    assert "Your rknpu driver version is too low, please upgrade to 0.9.7" in runtime["output"]
    assert report["rkllm"]["driver_version"] == "0.9.6"


@pytest.mark.qemu
def test_runtime_error_line_on_a_098_board_is_the_reason_exit_1(board, tmp_path, monkeypatch, capsys):
    code, report, junit = _verify(board.url, tmp_path, monkeypatch, "--rkllm-model", "/tmp/malloc.rkllm")
    assert code == 1 and report["status"] == "failed" and report["match"] is True
    runtime = _check(report, "rkllm-runtime")
    assert runtime["status"] == "failed" and runtime["message"] == (
        f"rkllm init failed: {MALLOC_FAILED} | E RKNN: [10:21:33.055] load model file error!")
    assert report["rkllm"]["errors"][0] == MALLOC_FAILED and report["rkllm"]["driver_version"] == "0.9.8"
    assert not any("accepts" in (c.get("message") or "") for c in report["checks"])
    assert "rkllm-perf" not in [c["name"] for c in report["checks"]]
    case = next(c for c in junit.iter("testcase") if c.get("name") == "rkllm-runtime")
    assert MALLOC_FAILED in case.find("failure").get("message")
    assert MALLOC_FAILED in capsys.readouterr().out


@pytest.mark.qemu
def test_runtime_error_after_init_success_is_exit_1(board, tmp_path, monkeypatch):
    code, report, _ = _verify(board.url, tmp_path, monkeypatch, "--rkllm-model", "/tmp/matmul.rkllm")
    assert code == 1 and report["status"] == "failed"
    assert _check(report, "rkllm-runtime")["message"] == f"the runtime reported an error: {MATMUL_FAILED}"
    assert report["rkllm"]["exit_status"] == 0 and report["rkllm"]["generate"] is None


@pytest.mark.qemu
def test_platform_other_than_the_recipes_chip_is_exit_1(board, tmp_path, monkeypatch):
    code, report, _ = _verify(board.url, tmp_path, monkeypatch, "--rkllm-model", MODEL,
                              "--rkllm-program", "/tmp/other-platform")
    assert code == 1 and report["rkllm"]["platform"] == "RK3588"
    runtime = _check(report, "rkllm-runtime")
    assert runtime["message"].startswith("the runtime reports platform RK3588, the recipe's chip is rk3576")
    assert runtime["properties"]["chip"] == "rk3576"


@pytest.mark.qemu
def test_a_refusal_then_a_hang_is_the_refusal_exit_1(board, tmp_path, monkeypatch):
    code, report, _ = _verify(board.url, tmp_path, monkeypatch, "--rkllm-model", MODEL,
                              "--rkllm-program", "/tmp/refuses-then-hangs", "--rkllm-load-timeout", "4")
    assert code == 1 and report["status"] == "failed"
    message = _check(report, "rkllm-runtime")["message"]
    assert message.startswith(f"the runtime reported an error: {NO_RKNPU}; then ")
    assert "within 4 s" in message and "back at a shell prompt" in message
