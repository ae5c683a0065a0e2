"""Plumbing the tests share: paths, the real command line in a subprocess, waiting, the demo's recipes and board.

Fixtures live in conftest.py (built once per run); this module holds plain functions and constants.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import yaml

from rk3576_build.demo import command as demo
from rk3576_build.demo.board_kit import find_kit
from rk3576_build.demo.vboard import BoardImage, VirtualBoard

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"  # the steering repo's shared/ (CI clones it beside this one)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BASE_IMAGE = "rk3576-build/debian-base:bookworm"  # made by scripts/setup-host.sh; the builder's BASE
BOARD_PASSWORD = "Rk3576-vb0ard-pw!"  # the virtual boards' root password (conftest.py hashes it once)


def rk(*args: str, cwd: Path = REPO, env: dict | None = None, timeout: float = 300,
       keep_settings: bool = False) -> subprocess.CompletedProcess:
    """`rk3576-build ARGS` as a user runs it: a subprocess, its own environment (RK3576_* settings
    of the caller dropped unless `keep_settings`), output captured as text."""
    environ = {k: v for k, v in os.environ.items() if keep_settings or not k.startswith("RK3576_")}
    return subprocess.run([sys.executable, "-m", "rk3576_build.cli", *args], cwd=cwd, capture_output=True,
                          text=True, env={**environ, **(env or {})}, timeout=timeout)


def rk_recipe(recipe: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`rk3576-build --recipe RECIPE ARGS` for the pipeline tests: the caller's whole environment
    (CI's RK3576_* settings included) and time for real builds in Docker."""
    return rk("--recipe", str(recipe), *args, env=env, timeout=1800, keep_settings=True)


def unavailable(message: str) -> NoReturn:
    """A tool or file a test needs is missing: skip here, fail under CI=true (CI must run every test)."""
    if IN_CI:
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)


def wait_until(condition: Callable[[], object], what: str, timeout: float = 30, interval: float = 0.05) -> None:
    """Poll `condition` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(interval)


def executed(output: str) -> set[str]:
    """Tasks doit executed: it prints '.  name' for those, '-- name' for up-to-date ones."""
    return set(re.findall(r"^\.  (\S+)", output, re.M))


def write_recipe(path: Path, url: str, checksums: dict, *, driver: str = "0.9.8", base: str = "demo.yaml",
                 dockerfile: Path = REPO / "Dockerfile.builder", change=None, apps: bool = False) -> Path:
    """A shipped demo recipe pointed at the `sources` fixture's server and this test's work directory.

    Without `apps`, the demo's app (apps:) and its multimodal check are left out: a test of the steps
    builds no app (tests/test_app_pipeline.py builds it)."""
    data = yaml.safe_load((REPO / "recipes" / base).read_text())
    if apps:
        for app in data["apps"].values():  # the recipe's ${DEMO_APPS:-${RECIPE_DIR}/..} from its new place
            for key in ("source", "patches"):
                app[key] = app[key].replace("${RECIPE_DIR}/..", str(REPO))
    else:
        data.pop("apps")
        data["verify"].pop("multimodal")
    name = demo.driver_tarball_name(driver)
    data["workdir"] = str(path.parent / "work")
    data["downloads"] = str(path.parent.parent / "downloads")  # shared by the recipes a test writes
    sdk = demo.UPSTREAM_SDK_TARBALL if base == "demo-upstream.yaml" else demo.SDK_TARBALL
    data["sdk"]["url"] = f"{url}/{sdk}"
    data["driver"].update(version=driver, url=f"{url}/{name}", sha256=checksums[name])
    data["patches"]["dir"] = str(REPO / "patches" / "demo")
    data["builder"]["dockerfile"] = str(dockerfile)
    kit = find_kit()
    assert kit is not None, "the arm64 board kit is missing (run scripts/setup-host.sh)"
    data["builder"]["mounts"][0]["source"] = str(kit.root)
    data["verify"]["expected"] = f"RKNPU driver: v{driver}"
    if change:
        change(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def files_without(root: Path, secret: str) -> list[Path]:
    """Every file under `root` that contains `secret` (should be none)."""
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@contextlib.contextmanager
def booted(image: BoardImage, tmp_path: Path, **kwargs) -> Iterator[VirtualBoard]:
    """A running virtual board whose QEMU log lands in tmp_path (checked for secrets too)."""
    with VirtualBoard(image, log_path=tmp_path / "qemu.log", **kwargs) as board:
        yield board
