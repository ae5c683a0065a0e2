"""Apps through the command line: the demo recipe's app built in the builder, baked into the image, found
on the flashed QEMU board by verify's multimodal check (pass, a broken threshold, a hang), and an app
change rerunning only the app, the overlays, the rootfs and update.img.

One build of the demo recipe serves the whole module (the tests run in order; the last changes it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers import REPO, booted, executed, rk_recipe, write_recipe
from rk3576_build.demo.vboard import board_image_from_dir

APP = "multimodal-demo"
PREFIX = "/opt/multimodal-demo"
SHARE = f"{PREFIX}/share/multimodal-demo"
HANG = f"{SHARE}/hang-vision.rknn"  # an encoder whose inference never ends (files: puts it in the image)
PASSWORD = "unused-in-this-test"  # the root password of the `sources` fixture's sample SDK


def rootfs_members(image: Path) -> set[str]:
    """The paths in the sample's rootfs.img (a gzip'd cpio), as `cpio -t` lists them."""
    listing = subprocess.run(f"gzip -dc {image} | cpio -t --quiet", shell=True, capture_output=True, text=True,
                             check=True).stdout
    return {line.removeprefix("./") for line in listing.splitlines()}


@pytest.fixture(scope="module")
def built(sources, tmp_path_factory):
    """The demo recipe with its app (and one more file for it) built and flashed to the virtual board's dir:
    (recipe, work dir, the first run's output)."""
    url, checksums, _ = sources
    base = tmp_path_factory.mktemp("apps")
    hang = base / "hang-vision.rknn"
    hang.write_text("RKNN-STANDIN-ENCODER 1\nload_ms=100\ninfer_ms=600000\nembed_size=2048\n")

    def add_file(data):
        data["apps"][APP]["files"] = [{"source": str(hang), "dest": HANG}]

    recipe = write_recipe(base / "r" / "r.yaml", url, checksums, change=add_file, apps=True)
    result = rk_recipe(recipe, "run", "flash")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return recipe, base / "r" / "work", result.stdout


@pytest.fixture(scope="module")
def board(built, tmp_path_factory):
    """The flashed image booted on QEMU, as the recipe's virtual flash method left it."""
    _, work, _ = built
    with booted(board_image_from_dir(work / "board"), tmp_path_factory.mktemp("board"),
                rkllm_standin=False) as running:
        yield running


def verify(recipe: Path, board, tmp_path: Path, *args: str) -> tuple[int, dict, str]:
    """`rk3576-build --recipe R verify --console <the board>` with `args`; (exit code, report, stdout)."""
    result = rk_recipe(recipe, "verify", "--console", board.url, "--login-timeout", "120", "--out", str(tmp_path),
                       *args, env={"RK3576_CONSOLE_PASSWORD": PASSWORD})
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads((tmp_path / "verify-report.json").read_text()), result.stdout


@pytest.mark.docker
def test_the_app_is_cross_compiled_baked_into_the_rootfs_and_in_the_manifest(built):
    recipe, work, output = built
    assert {f"app:{APP}", "sdk:overlays", "step:ubuntu", "step:updateimg"} <= executed(output)
    assert f"fetch:app-{APP}" not in output, "a local source directory needs no fetch"
    members = rootfs_members(work / "sdk" / "rockdev" / "rootfs.img")
    assert {f"{PREFIX[1:]}/bin/demo", f"{SHARE[1:]}/standin-vl.rkllm", f"{SHARE[1:]}/demo.pgm", HANG[1:],
            "usr/bin/llm_demo"} <= members, "the app beside the recipe's own overlay"
    config = (work / "sdk" / "output" / ".config").read_text()
    assert "overlays/rkllm device/rockchip/.rk3576-build/overlays/app-multimodal-demo\"" in config
    inputs = {i["name"]: i for i in json.loads((work / "manifest.json").read_text())["inputs"]}
    app = inputs[f"app:{APP}"]
    assert app["toolchain"]["origin"] == "builder" and "aarch64-linux-gnu-g++" in app["toolchain"]["version"]
    assert [p["file"] for p in app["patches"]] == ["0001-embed-size-2048.patch"]
    assert [f["dest"] for f in app["files"]] == [HANG]
    assert {f["path"] for f in inputs[f"overlay:app-{APP}"]["files"]} >= {"opt/multimodal-demo/bin/demo"}
    assert "ImgEnc" not in output  # built, not run: the board runs it


@pytest.mark.docker
@pytest.mark.qemu
def test_the_multimodal_check_passes_on_the_flashed_board(built, board, tmp_path):
    code, report, stdout = verify(built[0], board, tmp_path, "--no-rkllm")
    assert code == 0, stdout
    assert [(c["name"], c["status"]) for c in report["checks"] if c["name"].startswith("multimodal")] == [
        ("multimodal-runtime", "passed"), ("multimodal-perf", "passed")]
    mm = report["multimodal"]
    assert mm["program"] == f"{PREFIX}/bin/demo" and mm["generate"]["tokens"] == 12
    assert mm["imgenc_inference_ms"] >= 900 and mm["llm_load_ms"] >= 2000 and mm["peak_memory_gb"] == 4.58
    assert report["rkllm"] is None, "--no-rkllm"
    assert "  multimodal PASSED: runtime 1.2.1 accepts rknpu driver 0.9.8 on RK3576" in stdout
    assert f"ms to load, {mm['imgenc_inference_ms']:.2f} ms to encode the image" in stdout


@pytest.mark.docker
@pytest.mark.qemu
def test_a_broken_threshold_fails_the_check_with_exit_1(built, board, tmp_path):
    code, report, stdout = verify(built[0], board, tmp_path, "--no-rkllm", "--multimodal-max-imgenc-inference-ms",
                                  "100")
    assert code == 1, stdout
    perf = next(c for c in report["checks"] if c["name"] == "multimodal-perf")
    assert perf["status"] == "failed"
    assert perf["message"] == (f"image encoder inference {report['multimodal']['imgenc_inference_ms']:g} ms is "
                               "above the maximum 100")
    assert report["status"] == "failed"


@pytest.mark.docker
@pytest.mark.qemu
def test_a_hung_demo_is_exit_2_with_the_console_back(built, board, tmp_path):
    code, report, stdout = verify(built[0], board, tmp_path, "--no-rkllm", "--multimodal-encoder", HANG,
                                  "--multimodal-load-timeout", "6")
    assert code == 2, stdout
    runtime = next(c for c in report["checks"] if c["name"] == "multimodal-runtime")
    assert runtime["status"] == "error"
    assert runtime["message"] == (f"{PREFIX}/bin/demo gave no `user: ` prompt (model load) within 6 s; stopped it "
                                  "with Ctrl-C, the console is back at a shell prompt")
    # The board is usable after it: the check passes again.
    code, _, stdout = verify(built[0], board, tmp_path / "again", "--no-rkllm")
    assert code == 0, stdout


@pytest.mark.docker
def test_an_app_change_reruns_only_the_app_the_overlays_the_rootfs_and_updateimg(built):
    recipe, work, _ = built
    same = rk_recipe(recipe, "run")
    assert same.returncode == 0 and executed(same.stdout) == set(), same.stdout[-2000:]

    data = yaml.safe_load(recipe.read_text())
    data["apps"][APP]["options"] = {"RUNTIME_VERSION": "1.3.0"}
    recipe.write_text(yaml.safe_dump(data))
    plan = rk_recipe(recipe, "plan")
    assert f"RUN         app:{APP}" in plan.stdout and "up-to-date  step:kernel" in plan.stdout, plan.stdout
    changed = rk_recipe(recipe, "run")
    assert changed.returncode == 0, changed.stdout[-3000:] + changed.stderr[-3000:]
    assert executed(changed.stdout) == {f"app:{APP}", "sdk:overlays", "step:ubuntu", "step:updateimg", "manifest"}
    app = json.loads((work / "apps" / APP / "app.json").read_text())
    assert app["options"] == {"RUNTIME_VERSION": "1.3.0"}

    # A patch of the app: the same, and the program in the image is the patched one.
    patches = recipe.parent / "patches"
    shutil.copytree(REPO / "rk3576_build" / "demo" / "sample" / "apps" / "patches" / "multimodal_demo", patches)
    data["apps"][APP]["patches"] = str(patches)
    recipe.write_text(yaml.safe_dump(data))
    assert rk_recipe(recipe, "run").returncode == 0  # another path, the same patches: the app is as it was
    patch = patches / "0001-embed-size-2048.patch"
    patch.write_text(patch.read_text().replace("+#define EMBED_SIZE 2048", "+#define EMBED_SIZE 2048 /* 3B */"))
    again = rk_recipe(recipe, "run")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    # The app rebuilt with the patch; its program is the same bytes, so the rootfs is not rebuilt.
    assert executed(again.stdout) == {f"app:{APP}", "sdk:overlays", "manifest"}
    source = (work / "apps" / APP / "src" / "src" / "main.cpp").read_text()
    assert "#define EMBED_SIZE 2048 /* 3B */" in source

    # A patch that no longer applies stops the app's task with the patch, the file and the hunk.
    patch.write_text(patch.read_text().replace(" #define IMAGE_TOKEN_NUM 196", " #define IMAGE_TOKEN_NUM 999"))
    broken = rk_recipe(recipe, "run")
    assert broken.returncode == 2, broken.stdout[-2000:] + broken.stderr[-2000:]
    assert ("patch 0001-embed-size-2048.patch does not apply to the source of app multimodal-demo: src/main.cpp, "
            "hunk @@ -32,3 +32,3 @@ does not match") in broken.stderr
    assert "step:ubuntu" not in executed(broken.stdout) and "Traceback" not in broken.stderr
