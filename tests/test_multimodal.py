"""The multimodal check (board/multimodal.py): parsing and verdicts on output shaped like rknn-llm's image demo,
and runs of the demo's stand-in (built by build/apps.py in the builder) on the virtual board.
"""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from helpers import BOARD_PASSWORD, REPO, booted
from rk3576_build.board import multimodal, verify
from rk3576_build.board.console import Console
from rk3576_build.build import apps
from rk3576_build.cli.verify import build_parser, check_options, check_settings
from rk3576_build.config.schema import MULTIMODAL_DEFAULTS, section_keys
from rk3576_build.core.errors import UserError
from rk3576_build.core.patches import list_patches
from rk3576_build.demo.vboard import pack_overlay

SAMPLE_APPS = REPO / "rk3576_build" / "demo" / "sample" / "apps"

# Release 1.2.1's demo with Qwen2.5-VL-3B w4a16 on RK3576 (driver 0.9.8), RKLLM_LOG_LEVEL=1: the
# runtime's lines, the demo's own, librknnrt's for the encoder, the answer and the table (rows with
# trailing spaces, as the runtime prints them).
RUN_121 = """\
I rkllm: rkllm-runtime version: 1.2.1, rknpu driver version: 0.9.8, platform: RK3576
rkllm init success
main: LLM Model loaded in  5912.38 ms
I RKNN: [10:21:07.118] RKNN Driver Information, version: 0.9.8
main: ImgEnc Model loaded in   841.06 ms
main: ImgEnc Model inference took  3127.44 ms

**********************可输入以下问题对应序号获取回答/或自定义输入********************

[0] <image>What is in the image?

*************************************************************************


user: <image>What is in the image?
robot: The image shows an astronaut in a white spacesuit lying on a sandy beach under a clear sky.
I rkllm: --------------------------------------------------------------------------------------
I rkllm:  Model init time (ms)  5482.81                                                                    \n\
I rkllm: --------------------------------------------------------------------------------------
I rkllm:  Stage         Total Time (ms)  Tokens    Time per Token (ms)      Tokens per Second       \n\
I rkllm: --------------------------------------------------------------------------------------
I rkllm:  Prefill       4143.53          223       18.58                    53.82                   \n\
I rkllm:  Generate      20911.60         116       180.27                   5.55                    \n\
I rkllm: --------------------------------------------------------------------------------------
I rkllm:  Peak Memory Usage (GB)
I rkllm:  4.55        \n\
I rkllm: --------------------------------------------------------------------------------------

user: """

# The same demo without the EMBED_SIZE patch: the encoder's 2048-wide output overruns its buffer.
CRASH_121 = """\
I rkllm: rkllm-runtime version: 1.2.1, rknpu driver version: 0.9.8, platform: RK3576
rkllm init success
main: LLM Model loaded in  5874.90 ms
main: ImgEnc Model loaded in   838.51 ms
Segmentation fault
"""


def settings(**more) -> multimodal.MultimodalSettings:
    return multimodal.MultimodalSettings.from_mapping({
        "program": "/opt/rknn-llm/1.2.1/multimodal/demo", "model": "/opt/models/qwen2.5-vl-3b.rkllm",
        "encoder": "/opt/models/qwen2.5-vl-3b_vision.rknn", "image": "/opt/rknn-llm/1.2.1/multimodal/demo.jpg",
        **more})


def verdict(text: str, exit_status: int | None, **more) -> tuple[str, str, str]:
    run = multimodal.MultimodalRun(None, settings(**more), sudo="", command_timeout=30,  # type: ignore[arg-type]
                                   driver_version="0.9.8", chip="rk3576")
    run.result["exit_status"] = exit_status
    return run._verdict(multimodal.parse_output(text, exit_status))


def test_a_whole_run_gives_the_demo_times_the_table_and_the_answer():
    parsed = multimodal.parse_output(RUN_121, 0)

    assert (parsed["llm_load_ms"], parsed["imgenc_load_ms"], parsed["imgenc_inference_ms"]) == (5912.38, 841.06,
                                                                                                3127.44)
    assert parsed["init_ms"] == 5482.81 and parsed["peak_memory_gb"] == 4.55
    assert parsed["prefill"] == {"total_ms": 4143.53, "tokens": 223, "ms_per_token": 18.58, "tokens_per_s": 53.82}
    assert parsed["generate"]["tokens_per_s"] == 5.55
    assert parsed["answer"] == ("The image shows an astronaut in a white spacesuit lying on a sandy beach under a "
                                "clear sky.")
    assert (parsed["runtime_version"], parsed["driver_version"], parsed["rknn_driver_version"]) == \
        ("1.2.1", "0.9.8", "0.9.8")
    assert parsed["crash"] is None and parsed["imgenc_errors"] == [] and parsed["errors"] == []
    assert verdict(RUN_121, 0)[:2] == ("passed", "runtime 1.2.1 accepts rknpu driver 0.9.8 on RK3576")
    flat = multimodal.figures({**parsed, "npu": {"load": {"Core0": {"peak": 88, "mean": 40.2}}, "freq_hz": 1e9}})
    assert {k: flat[k] for k in ("llm_load_ms", "imgenc_load_ms", "imgenc_inference_ms", "generate_tokens_per_s",
                                 "peak_memory_gb", "npu_core0_load_peak", "npu_freq_mhz")} == {
        "llm_load_ms": 5912.38, "imgenc_load_ms": 841.06, "imgenc_inference_ms": 3127.44,
        "generate_tokens_per_s": 5.55, "peak_memory_gb": 4.55, "npu_core0_load_peak": 88, "npu_freq_mhz": 1000.0}


def test_a_crash_while_encoding_the_image_fails_and_points_at_embed_size():
    status, message, _ = verdict(CRASH_121, 139)
    assert status == "failed"
    assert message.startswith("/opt/rknn-llm/1.2.1/multimodal/demo crashed (Segmentation fault); it crashed "
                              "encoding the image: does the demo's EMBED_SIZE match the encoder")
    # The shell's line may be gone (a console that dropped it): the exit status says the same.
    assert multimodal.parse_output(CRASH_121.replace("Segmentation fault\n", ""), 139)["crash"] == "Segmentation fault"


def test_an_unreadable_image_and_a_failed_encoder_are_named():
    opencv = CRASH_121.replace("Segmentation fault\n", "") + (
        "terminate called after throwing an instance of 'cv::Exception'\n"
        "  what():  OpenCV(4.5.5) /opencv/modules/imgproc/src/color.cpp:182: error: (-215:Assertion failed) "
        "!_src.empty() in function 'cvtColor'\n\nAborted\n")
    status, message, output = verdict(opencv, 134)
    assert status == "failed"
    assert message.startswith("/opt/rknn-llm/1.2.1/multimodal/demo could not read the image (OpenCV: OpenCV(4.5.5)")
    assert "crashed (Aborted)" in message and "EMBED_SIZE" not in message
    assert "!_src.empty()" in output

    encoder = RUN_121.split("main: ImgEnc")[0] + (
        "E RKNN: [10:21:07.204] failed to malloc npu memory, size: 283115520, flags: 0x2\n"
        "init_imgenc fail! ret=-1 model_path=/opt/models/qwen2.5-vl-3b_vision.rknn\n")
    status, message, output = verdict(encoder, 255)
    assert status == "failed"
    assert message.startswith("the image encoder failed: init_imgenc fail! ret=-1 model_path=")
    assert "the runtime reported an error: E RKNN: [10:21:07.204] failed to malloc npu memory" in message
    assert output.splitlines()[0].startswith("init_imgenc fail!")


def test_the_runtimes_refusal_is_the_text_checks():
    refused = ("W rkllm: Warning: Your rknpu driver version is too low, please upgrade to 0.9.7\n"
               "I rkllm: rkllm-runtime version: 1.3.0, rknpu driver version: 0.9.6, platform: RK3576\n"
               "E rkllm: rkllm_init failed\nrkllm init failed\n")
    status, message, _ = verdict(refused, 255, platform="rk3576")
    assert status == "failed"
    assert message.startswith("rkllm init failed: E rkllm: rkllm_init failed")
    assert "the runtime reports rknpu driver 0.9.6, the board's debugfs says 0.9.8" in message


def test_thresholds_add_the_demo_times_to_the_text_checks():
    parsed = multimodal.parse_output(RUN_121, 0)
    assert multimodal.thresholds_broken(parsed, settings(max_imgenc_inference_ms=3000, max_llm_load_ms=6000,
                                                         max_peak_memory_gb=4.58)) == [
        "image encoder inference 3127.44 ms is above the maximum 3000"]
    assert multimodal.thresholds_broken(parsed, settings(min_generate_tokens_per_s=8, max_imgenc_load_ms=500)) == [
        "generate 5.55 tokens/s is below the minimum 8", "image encoder load 841.06 ms is above the maximum 500"]


def test_the_command_line_has_six_arguments_for_1_2_1_and_the_platform_for_1_3_0():
    assert settings(max_new_tokens=128).command_line() == (
        "/opt/rknn-llm/1.2.1/multimodal/demo /opt/rknn-llm/1.2.1/multimodal/demo.jpg "
        "/opt/models/qwen2.5-vl-3b_vision.rknn /opt/models/qwen2.5-vl-3b.rkllm 128 4096 2")
    assert settings(platform="rk3576", image="/data/my picture.jpg").command_line().endswith(
        "'/data/my picture.jpg' /opt/models/qwen2.5-vl-3b_vision.rknn /opt/models/qwen2.5-vl-3b.rkllm 256 4096 2 "
        "rk3576")


def test_settings_name_the_section_and_what_is_missing():
    with pytest.raises(UserError, match=r"^verify\.multimodal: no encoder, image given: set verify\.multimodal\.model"):
        multimodal.MultimodalSettings.from_mapping({"model": "/m.rkllm"})
    with pytest.raises(UserError, match=r"^verify\.multimodal: unknown setting\(s\) embed_size; known: answer_t"):
        settings(embed_size=2048)
    with pytest.raises(UserError, match=r"^verify\.multimodal\.args '\{image\} \{picture\}': 'picture'"):
        settings(args="{image} {picture}").command_line()


def test_settings_and_options_are_the_schemas_keys_with_its_defaults():
    keys = list(section_keys("verify.multimodal"))
    assert [f.name for f in dataclasses.fields(multimodal.MultimodalSettings)] == keys
    made = multimodal.MultimodalSettings.from_mapping({"model": "/m", "encoder": "/e", "image": "/i"})
    assert {k: getattr(made, k) for k in MULTIMODAL_DEFAULTS} == MULTIMODAL_DEFAULTS
    assert [key for key, *_ in check_options("multimodal")] == keys
    usage = " ".join(build_parser().format_help().split())
    assert "--multimodal-program PROGRAM the multimodal demo program on the board (default /usr/bin/demo)" in usage
    assert "--no-multimodal skip the multimodal check the recipe configures" in usage
    recipe = {"console": "/dev/ttyUSB0", "multimodal": {"model": "/m.rkllm", "encoder": "/e.rknn", "image": "/i.jpg",
                                                        "platform": None}}
    args = build_parser(recipe).parse_args(["--multimodal-max-imgenc-inference-ms", "4000"])
    assert check_settings("multimodal", args, recipe["multimodal"]) == {
        "model": "/m.rkllm", "encoder": "/e.rknn", "image": "/i.jpg", "max_imgenc_inference_ms": 4000.0}
    assert check_settings("multimodal", build_parser(recipe).parse_args(["--no-multimodal"]), recipe["multimodal"]) \
        is None
    assert check_settings("multimodal", build_parser({}).parse_args([]), {}) is None, "nothing asks for it"
    with pytest.raises(UserError, match=r"^verify\.multimodal: no encoder, image given"):
        check_settings("multimodal", build_parser({}).parse_args(["--multimodal-model", "/m.rkllm"]), {})


def test_the_summary_compare_and_history_carry_the_multimodal_figures(tmp_path):
    parsed = {**multimodal.parse_output(RUN_121, 0), "program": "/opt/demo"}
    report = {"status": "passed", "console": "socket://x", "baud": 115200, "user": "root", "expected": "v",
              "actual": "RKNPU driver: v0.9.8", "started": "t1", "durations_s": {"total": 1.0}, "rkllm": None,
              "multimodal": parsed, "checks": [{"name": "multimodal-runtime", "status": "passed", "message": "ok"}]}
    text = verify.summary(report, tmp_path)
    assert "  multimodal PASSED: ok" in text
    assert "  llm load  5912.38 ms" in text and "  imgenc    841.06 ms to load, 3127.44 ms to encode the image" in text
    faster = {**report, "started": "t2", "multimodal": {**parsed, "imgenc_inference_ms": 2000.0}}
    table = verify.compare(report, faster)
    assert "multimodal runtime" in table
    row = next(line for line in table.splitlines() if "multimodal imgenc_inference_ms" in line)
    assert row.split()[-4:] == ["3127.44", "2000", "-1127.44", "(-36.0%)"]
    history = tmp_path / "history.jsonl"
    assert verify.append_history(history, report) is None
    previous = verify.append_history(history, faster)
    assert previous is not None and previous["multimodal"]["imgenc_inference_ms"] == 3127.44
    assert "answer" not in previous["multimodal"]


# --------------------------------------------------------------------------- on the QEMU board

HANG_ENCODER = "/tmp/hang-vision.rknn"


@pytest.fixture(scope="module")
def mm_board(board_images, builder_image, tmp_path_factory):
    """A 0.9.8 virtual board with the demo's multimodal stand-in built by build/apps.py in the builder:
    patched (EMBED_SIZE 2048) under /opt/mm, unpatched (1.2.1's 1536) as /opt/mm/bin/demo-unpatched."""
    tmp = tmp_path_factory.mktemp("mm-board")
    source = SAMPLE_APPS / "multimodal_demo"
    patched = apps.build_app(apps.AppBuild(name="mm", source_dir=source, prefix="/opt/mm",
                                           patches=tuple(list_patches(SAMPLE_APPS / "patches" / "multimodal_demo"))),
                             image=builder_image.tag, app_dir=tmp / "patched", sdk_dir=None,
                             log_path=tmp / "patched.log", echo=None)
    unpatched = apps.build_app(apps.AppBuild(name="mm", source_dir=source, prefix="/opt/mm"),
                               image=builder_image.tag, app_dir=tmp / "unpatched", sdk_dir=None,
                               log_path=tmp / "unpatched.log", echo=None)
    shutil.copy2(unpatched.root / "opt/mm/bin/demo", patched.root / "opt/mm/bin/demo-unpatched")
    archive = pack_overlay(patched.root, tmp / "mm.cpio.gz")
    image = board_images("0.9.8")
    initrd = tmp / "initrd-mm.img"
    initrd.write_bytes(image.initrd.read_bytes() + archive.read_bytes())
    with booted(dataclasses.replace(image, initrd=initrd), tmp, rkllm_standin=False) as running:
        with Console(running.url) as console:
            console.login("root", BOARD_PASSWORD, timeout=120)
            setup = ("printf '%s\\n' 'RKNN-STANDIN-ENCODER 1' 'load_ms=100' 'infer_ms=600000' 'embed_size=2048' "
                     f">{HANG_ENCODER}")
            assert console.run(setup)[1] == 0
            console.logout()
        yield running


def run_on(board, **more) -> tuple[list[dict], dict, Console]:
    """MultimodalRun on the board as verify runs it (logged in as root); its records, its result, the console."""
    share = "/opt/mm/share/multimodal-demo"
    values = {"program": "/opt/mm/bin/demo", "model": f"{share}/standin-vl.rkllm", "image": f"{share}/demo.pgm",
              "encoder": f"{share}/standin-vision.rknn", "max_new_tokens": 12, "load_timeout": 30,
              "answer_timeout": 60, **more}
    console = Console(board.url).open()
    console.login("root", BOARD_PASSWORD, timeout=120)
    run = multimodal.MultimodalRun(console, multimodal.MultimodalSettings.from_mapping(values), sudo="",
                                   command_timeout=30, driver_version="0.9.8", chip="rk3576")
    return run.check(), run.result, console


@pytest.mark.docker
@pytest.mark.qemu
def test_the_demo_passes_on_the_board_with_every_figure(mm_board):
    records, result, console = run_on(mm_board, platform="rk3576")
    console.logout()
    console.close()
    assert [(r["name"], r["status"]) for r in records] == [("multimodal-runtime", "passed"),
                                                           ("multimodal-perf", "passed")]
    assert result["llm_load_ms"] >= 2000 and result["imgenc_load_ms"] >= 350 and result["imgenc_inference_ms"] >= 900
    assert result["peak_memory_gb"] == 4.58 and result["generate"]["tokens"] == 12
    assert result["prefill"]["tokens"] > 196  # the image's tokens are part of the prompt
    assert result["answer"].startswith("The picture shows a small circuit board")
    assert result["npu"]["samples"] >= 2 and set(result["npu"]["load"]) == {"Core0", "Core1"}  # sampled meanwhile
    assert result["exit_status"] == 0 and result["platform"] == "RK3576"
    assert records[1]["properties"]["imgenc_inference_ms"] == result["imgenc_inference_ms"]


@pytest.mark.docker
@pytest.mark.qemu
def test_a_broken_threshold_fails_the_perf_check(mm_board):
    records, result, console = run_on(mm_board, max_imgenc_inference_ms=100, max_peak_memory_gb=4.0)
    console.logout()
    console.close()
    assert records[0]["status"] == "passed"
    assert records[1]["status"] == "failed"
    assert records[1]["message"] == (f"peak memory 4.58 GB is above the maximum 4; image encoder inference "
                                      f"{result['imgenc_inference_ms']:g} ms is above the maximum 100")


@pytest.mark.docker
@pytest.mark.qemu
def test_the_unpatched_demo_crashes_and_the_check_points_at_embed_size(mm_board):
    records, result, console = run_on(mm_board, program="/opt/mm/bin/demo-unpatched")
    console.logout()
    console.close()
    assert [r["status"] for r in records] == ["failed"]
    assert records[0]["message"].startswith("/opt/mm/bin/demo-unpatched crashed (Segmentation fault); it crashed "
                                            "encoding the image: does the demo's EMBED_SIZE match the encoder")
    assert result["exit_status"] == 139 and result["imgenc_inference_ms"] is None


@pytest.mark.docker
@pytest.mark.qemu
def test_a_hung_demo_is_an_error_with_the_console_back_at_a_shell(mm_board):
    records, _, console = run_on(mm_board, encoder=HANG_ENCODER, load_timeout=6)
    try:
        assert [r["status"] for r in records] == ["error"]
        assert records[0]["message"] == ("/opt/mm/bin/demo gave no `user: ` prompt (model load) within 6 s; stopped "
                                         "it with Ctrl-C, the console is back at a shell prompt")
        assert console.run("echo still-here")[0] == "still-here"
        assert console.run("ps | grep -e opt/mm/bin/demo -e rk3576-npu-load | grep -v grep || true")[0] == ""
    finally:
        console.logout()
        console.close()
