"""The doit pipeline end to end: what runs on a first build, a no-op rerun, a driver bump, a Dockerfile change.

Real everything: a loopback HTTP server serves the sample SDK and driver
tarballs, git tracks the kernel tree, Docker runs build.sh's steps.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rk3576_build.demo import command as demo
from rk3576_build.demo.board_kit import find_kit

REPO = Path(__file__).resolve().parent.parent
STEPS = ["lunch", "u-boot", "kernel", "module", "ubuntu", "updateimg"]


def rk(recipe: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real command line in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "rk3576_build.cli", "--recipe", str(recipe), *args],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, **(env or {})}, timeout=1800,
    )


def executed(output: str) -> set[str]:
    """Tasks doit executed: it prints '.  name' for those, '-- name' for up-to-date ones."""
    return set(re.findall(r"^\.  (\S+)", output, re.M))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sources")
    checksums = demo.prepare_sources(directory, "unused-in-this-test")
    server, url = demo.serve(directory)
    yield url, checksums
    server.shutdown()


def write_recipe(path: Path, url: str, checksums: dict, *, driver: str = "0.9.8",
                 dockerfile: Path = REPO / "Dockerfile.builder") -> Path:
    """The demo recipe pointed at this test's server and work directory."""
    data = yaml.safe_load((REPO / "recipes" / "demo.yaml").read_text())
    name = demo.driver_tarball_name(driver)
    data["workdir"] = str(path.parent / "work")
    data["downloads"] = str(path.parent / "downloads")
    data["sdk"]["url"] = f"{url}/{demo.SDK_TARBALL}"
    data["driver"].update(version=driver, url=f"{url}/{name}", sha256=checksums[name])
    data["patches"]["dir"] = str(REPO / "patches" / "demo")
    data["builder"]["dockerfile"] = str(dockerfile)
    data["builder"]["mounts"][0]["source"] = str(find_kit().root)
    data["verify"]["expected"] = f"RKNPU driver: v{driver}"
    path.write_text(yaml.safe_dump(data))
    return path


def test_list_shows_every_task_with_a_description():
    result = rk(REPO / "recipes" / "myd-lr3576-ubuntu.yaml", "list", "--all")
    assert result.returncode == 0, result.stderr
    names = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    expected = {"fetch:sdk", "fetch:driver", "unpack:sdk", "kernel:overlay", "kernel:patches",
                "kernel:preflight", "builder", "manifest", "flash", "verify"}
    expected |= {f"step:{s}" for s in STEPS}
    assert expected <= names
    for line in result.stdout.splitlines():
        if line.split()[0] in expected:
            assert len(line.split()) > 1, f"task without a description: {line}"


def test_info_on_the_real_recipe():
    result = rk(REPO / "recipes" / "myd-lr3576-ubuntu.yaml", "info", "step:kernel")
    assert "build.sh step 'kernel'" in result.stdout
    assert "kernel-preflight.json" in result.stdout  # depends on the prepared kernel tree


def test_missing_myir_sdk_is_explained(tmp_path):
    recipe = tmp_path / "r.yaml"
    data = yaml.safe_load((REPO / "recipes" / "myd-lr3576-ubuntu.yaml").read_text())
    data["workdir"] = str(tmp_path / "work")
    data["patches"]["dir"] = str(REPO / "patches" / "myd-lr3576-ubuntu")
    data["builder"]["dockerfile"] = str(REPO / "Dockerfile.builder")
    recipe.write_text(yaml.safe_dump(data))
    result = rk(recipe, "run", "fetch:sdk", env={"MYIR_SDK": ""})
    assert result.returncode != 0
    assert "MYIR_SDK=/path/to/MYD-LR3576-Distribution-L6.1.75-V1.1.0.tar.gz" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.docker
def test_incremental_rebuilds(tmp_path, sources):
    url, checksums = sources
    recipe = write_recipe(tmp_path / "r.yaml", url, checksums, driver="0.9.8")

    first = rk(recipe, "run")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert {f"step:{s}" for s in STEPS} <= executed(first.stdout)
    manifest = (tmp_path / "work" / "manifest.json").read_text()
    assert '"version": "0.9.8"' in manifest

    # Nothing changed: nothing runs, and plan says so before anything runs.
    plan = rk(recipe, "plan")
    assert "0 of" in plan.stdout, plan.stdout
    again = rk(recipe, "run")
    assert again.returncode == 0, again.stderr
    assert executed(again.stdout) == set()

    # Driver bump: only what the driver affects.
    write_recipe(recipe, url, checksums, driver="0.9.6")
    plan = rk(recipe, "plan")
    assert "RUN         step:kernel" in plan.stdout and "up-to-date  step:ubuntu" in plan.stdout
    bumped = rk(recipe, "run")
    assert bumped.returncode == 0, bumped.stdout[-3000:] + bumped.stderr[-3000:]
    assert executed(bumped.stdout) == {
        "fetch:driver", "unpack:driver", "kernel:overlay", "kernel:patches", "kernel:preflight",
        "step:kernel", "step:module", "step:updateimg", "manifest"}
    kernel = tmp_path / "work" / "sdk" / "kernel"
    assert (kernel / "drivers" / "rknpu" / "rknpu.mod.c").exists()  # 0.9.6's tarball carries it
    assert '"version": "0.9.6"' in (tmp_path / "work" / "manifest.json").read_text()

    # Back to 0.9.8: the stray 0.9.6 file must be gone from the tree.
    write_recipe(recipe, url, checksums, driver="0.9.8")
    assert rk(recipe, "run").returncode == 0
    assert not (kernel / "drivers" / "rknpu" / "rknpu.mod.c").exists()

    # A changed Dockerfile reruns every step.
    dockerfile = tmp_path / "Dockerfile.builder"
    dockerfile.write_text((REPO / "Dockerfile.builder").read_text() + "\n# changed\n")
    (tmp_path / "builder").symlink_to(REPO / "builder")
    write_recipe(recipe, url, checksums, driver="0.9.8", dockerfile=dockerfile)
    rebuilt = rk(recipe, "run")
    assert rebuilt.returncode == 0, rebuilt.stdout[-3000:] + rebuilt.stderr[-3000:]
    assert {f"step:{s}" for s in STEPS} | {"builder"} <= executed(rebuilt.stdout)
    assert not {"fetch:sdk", "unpack:sdk", "kernel:overlay"} & executed(rebuilt.stdout)
