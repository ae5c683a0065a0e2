"""The doit pipeline end to end: the build.sh probe, honest step results, incremental rebuilds.

Real everything: a loopback HTTP server serves the sample SDK (in MYIR's and in
upstream's spelling) and driver tarballs, git tracks the kernel tree, Docker runs
build.sh's steps.
"""

from __future__ import annotations

import json
import os

import pytest
import yaml

from helpers import REPO, executed, rk_recipe, write_recipe
from rk3576_build.config.model import Product
from rk3576_build.demo import command as demo
from rk3576_build.pipeline.stamps import product_state, unwritten_products

STEPS = ["lunch", "u-boot", "kernel", "module", "ubuntu", "updateimg"]
WANTED = "rockchip_rk3576_myd_lr3576_defconfig"


def step_of(data: dict, name: str) -> dict:
    return next(step for step in data["steps"] if step["name"] == name)


# --- no engine ----------------------------------------------------------------------------------

def test_list_shows_every_task_with_a_description():
    result = rk_recipe(REPO / "recipes" / "myd-lr3576-ubuntu.yaml", "list", "--all")
    assert result.returncode == 0, result.stderr
    names = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    expected = {"fetch:sdk", "fetch:driver", "unpack:sdk", "kernel:overlay", "kernel:patches",
                "kernel:preflight", "builder:image", "builder:probe", "builder:check", "manifest", "flash",
                "verify"}
    expected |= {f"step:{s}" for s in STEPS}
    assert expected <= names
    for line in result.stdout.splitlines():
        if line.split()[0] in expected:
            assert len(line.split()) > 1, f"task without a description: {line}"


def test_info_on_the_real_recipe():
    result = rk_recipe(REPO / "recipes" / "myd-lr3576-ubuntu.yaml", "info", "step:module")
    assert "build.sh step 'module': ./build.sh module|modules (first one build.sh supports)" in result.stdout
    assert "kernel-preflight.json" in result.stdout  # depends on the prepared kernel tree
    assert "probe.json" in result.stdout  # and on the probe's choice


def test_missing_myir_sdk_is_explained(tmp_path):
    recipe = tmp_path / "r.yaml"
    data = yaml.safe_load((REPO / "recipes" / "myd-lr3576-ubuntu.yaml").read_text())
    data["workdir"] = str(tmp_path / "work")
    data["patches"]["dir"] = str(REPO / "patches" / "myd-lr3576-ubuntu")
    data["builder"]["dockerfile"] = str(REPO / "Dockerfile.builder")
    recipe.write_text(yaml.safe_dump(data))
    result = rk_recipe(recipe, "run", "fetch:sdk", env={"MYIR_SDK": ""})
    assert result.returncode != 0
    assert "MYIR_SDK=/path/to/MYD-LR3576-Distribution-L6.1.75-V1.1.0.tar.gz" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_products_must_be_written_during_the_step(tmp_path):
    made, kept, link = tmp_path / "made.img", tmp_path / "kept.txt", tmp_path / "defconfig"
    kept.write_text("as shipped\n")
    (tmp_path / "a_defconfig").write_text("x\n")
    link.symlink_to("a_defconfig")
    products = [Product("made.img", False), Product("kept.txt", False), Product("defconfig", False),
                Product("never.img", False)]
    before = {p.path: product_state(tmp_path / p.path) for p in products}
    made.write_bytes(b"new")
    link.unlink()
    link.symlink_to("a_defconfig")  # re-linked to the same, unchanged file: written all the same
    assert unwritten_products(tmp_path, products, before) == [
        "did not write kept.txt (it is exactly as before the step)", "did not produce never.img"]
    assert unwritten_products(tmp_path, [Product("kept.txt", True)], before) == [], "the opt-out"
    (tmp_path / "dangling").symlink_to("nowhere")
    assert unwritten_products(tmp_path, [Product("dangling", True)], {}) == ["did not produce dangling"]


# --- with the engine ----------------------------------------------------------------------------

@pytest.mark.docker
def test_upstream_spelling_on_a_fresh_tree(tmp_path, sources):
    """demo-upstream: chip:defconfig lunch on a fresh tree, upstream names, host paths, plain logs."""
    url, checksums, _ = sources
    recipe = write_recipe(tmp_path / "up" / "r.yaml", url, checksums, base="demo-upstream.yaml")
    result = rk_recipe(recipe, "run")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    work = tmp_path / "up" / "work"
    steps = {s["name"]: s for s in json.loads((work / "manifest.json").read_text())["steps"]}
    assert steps["lunch"]["command"] == f"./build.sh rk3576:{WANTED}", "no device/rockchip/.chip: chip form"
    assert steps["uboot"]["command"] == "./build.sh uboot" and steps["modules"]["command"] == "./build.sh modules"
    assert steps["rootfs"]["command"] == "./build.sh rootfs" and steps["rootfs"]["alternatives"] == ["rootfs"]
    sdk = (work / "sdk").resolve()
    config = (sdk / "output" / ".config").read_text()
    assert f'RK_DEFCONFIG="{sdk}/device/rockchip/.chips/rk3576/{WANTED}"' in config, "the host's path"
    assert os.readlink(sdk / "output" / "defconfig").endswith(WANTED)
    for log in (work / "logs").glob("*.log"):
        assert b"\x1b" not in log.read_bytes() and b"\r" not in log.read_bytes(), log

    # plan names what each step runs, now that the probe has run
    plan = rk_recipe(recipe, "plan")
    assert "up-to-date  step:modules [./build.sh modules]" in plan.stdout, plan.stdout


@pytest.mark.docker
def test_unknown_step_name_is_refused_before_any_build_step(tmp_path, sources):
    url, checksums, _ = sources

    def myir_names_only(data):
        step_of(data, "modules")["target"] = "module"
        step_of(data, "uboot")["target"] = ["u-boot"]

    recipe = write_recipe(tmp_path / "bad" / "r.yaml", url, checksums, base="demo-upstream.yaml",
                          change=myir_names_only)
    result = rk_recipe(recipe, "run")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "step uboot (steps[1].target): this SDK's build.sh has no `u-boot`; closest supported: uboot, loader" \
        in output
    assert "step modules (steps[3].target): this SDK's build.sh has no `module`; closest supported: modules" \
        in output
    assert str(recipe.with_name("r.local.yaml")) in output and "Traceback" not in output
    assert "builder:probe" in executed(result.stdout)
    assert not {t for t in executed(result.stdout) if t.startswith("step:")}, "no build step ran"
    assert not list((tmp_path / "bad" / "work" / "logs").glob("0[1-9]-*.log"))


@pytest.mark.docker
def test_a_step_that_did_nothing_fails(tmp_path, sources):
    """Exit status 0 is not success: an unwritten product, or build.sh's `Unhandled option`."""
    url, checksums, _ = sources

    def with_unwritten_product(data):
        step_of(data, "u-boot")["produces"].append("kernel/Makefile")
        data["steps"].insert(2, {"name": "noop", "command": "cd . && ./build.sh module-typo", "depends": ["lunch"]})

    recipe = write_recipe(tmp_path / "noop" / "r.yaml", url, checksums, change=with_unwritten_product)
    result = rk_recipe(recipe, "run", "step:u-boot")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "build step u-boot (`./build.sh u-boot`) exited 0 but did not write kernel/Makefile" in output
    assert "unchanged_ok" in output

    def opted_out(data):
        with_unwritten_product(data)
        step_of(data, "u-boot")["produces"][-1] = {"path": "kernel/Makefile", "unchanged_ok": True}

    write_recipe(recipe, url, checksums, change=opted_out)
    result = rk_recipe(recipe, "run", "step:u-boot")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    result = rk_recipe(recipe, "run", "step:noop")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "build.sh did not run `cd . && ./build.sh module-typo` although it exited 0" in output
    assert "Unhandled option: module-typo" in output


@pytest.mark.docker
def test_incremental_rebuilds(tmp_path, sources):
    url, checksums, directory = sources
    recipe = write_recipe(tmp_path / "inc" / "r.yaml", url, checksums, driver="0.9.8")
    work = tmp_path / "inc" / "work"

    first = rk_recipe(recipe, "run")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert {f"step:{s}" for s in STEPS} | {"builder:probe", "builder:check"} <= executed(first.stdout)
    manifest = json.loads((work / "manifest.json").read_text())
    assert '"version": "0.9.8"' in json.dumps(manifest)
    commands = {s["name"]: s["command"] for s in manifest["steps"]}
    assert commands["u-boot"] == "./build.sh u-boot" and commands["ubuntu"] == "./build.sh ubuntu", \
        "MYIR's spelling: the first alternative"

    # Nothing changed: nothing runs, and plan says so before anything runs.
    plan = rk_recipe(recipe, "plan")
    assert "0 of" in plan.stdout, plan.stdout
    again = rk_recipe(recipe, "run")
    assert again.returncode == 0, again.stderr
    assert executed(again.stdout) == set()

    # Driver bump: only what the driver affects.
    write_recipe(recipe, url, checksums, driver="0.9.6")
    plan = rk_recipe(recipe, "plan")
    assert "RUN         step:kernel" in plan.stdout and "up-to-date  step:ubuntu" in plan.stdout
    bumped = rk_recipe(recipe, "run")
    assert bumped.returncode == 0, bumped.stdout[-3000:] + bumped.stderr[-3000:]
    assert executed(bumped.stdout) == {
        "fetch:driver", "unpack:driver", "kernel:overlay", "kernel:patches", "kernel:preflight",
        "step:kernel", "step:module", "step:updateimg", "manifest"}
    kernel = work / "sdk" / "kernel"
    assert (kernel / "drivers" / "rknpu" / "rknpu.mod.c").exists()  # 0.9.6's tarball carries it
    assert '"version": "0.9.6"' in (work / "manifest.json").read_text()

    # Back to 0.9.8: the stray 0.9.6 file must be gone from the tree.
    write_recipe(recipe, url, checksums, driver="0.9.8")
    assert rk_recipe(recipe, "run").returncode == 0
    assert not (kernel / "drivers" / "rknpu" / "rknpu.mod.c").exists()

    # A changed Dockerfile reruns every step.
    dockerfile = tmp_path / "inc" / "Dockerfile.builder"
    dockerfile.write_text((REPO / "Dockerfile.builder").read_text() + "\n# changed\n")
    (tmp_path / "inc" / "builder").symlink_to(REPO / "builder")
    write_recipe(recipe, url, checksums, driver="0.9.8", dockerfile=dockerfile)
    rebuilt = rk_recipe(recipe, "run")
    assert rebuilt.returncode == 0, rebuilt.stdout[-3000:] + rebuilt.stderr[-3000:]
    assert {f"step:{s}" for s in STEPS} | {"builder:image"} <= executed(rebuilt.stdout)
    assert not {"fetch:sdk", "unpack:sdk", "kernel:overlay"} & executed(rebuilt.stdout)

    # The same files from another URL (the demo serves on a new port each time): fetched, nothing rebuilt;
    # the manifest, which records the URLs, is written again.
    server, other_url = demo.serve(directory)
    try:
        moved = rk_recipe(write_recipe(recipe, other_url, checksums, driver="0.9.8", dockerfile=dockerfile), "run")
    finally:
        server.shutdown()
    assert moved.returncode == 0, moved.stdout[-3000:] + moved.stderr[-3000:]
    assert executed(moved.stdout) == {"fetch:sdk", "fetch:driver", "manifest"}
    assert other_url in (recipe.parent / "work" / "manifest.json").read_text()
