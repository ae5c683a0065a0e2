"""The multimodal check's parsing and verdicts (board/multimodal.py) on output shaped like rknn-llm's image demo.

The runs on the virtual board (pass, a broken threshold, a hung demo) come with the verify wiring.
"""

from __future__ import annotations

import pytest

from rk3576_build.board import multimodal
from rk3576_build.core.errors import UserError

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
