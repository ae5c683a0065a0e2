"""A tool you install: build the wheel, install it into a fresh venv, use it from a directory elsewhere.

The checkout is copied first (the build writes build/ and *.egg-info beside
setup.py); everything else happens under tmp_path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO


def _source_files() -> list[str]:
    """The checkout's files as git sees them (tracked and new, not ignored, not deleted)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    return [name for name in listed if (REPO / name).is_file()]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin dir, a clean environment): the wheel installed into a fresh venv."""
    root = tmp_path_factory.mktemp("install")
    source = root / "src"
    for name in _source_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    dist = root / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(dist), str(source)], check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("rk3576_build-*.whl"))
    venv = root / "venv"
    # No pip inside (ensurepip is the slow part): this pip installs into the venv's interpreter.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, timeout=300)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RK3576_", "PYTHON"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return venv / "bin", env


def tool(installed, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    bin_dir, env = installed
    return subprocess.run([str(bin_dir / "rk3576-build"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_wheel_works_from_any_directory(installed, tmp_path):
    bin_dir, env = installed
    where = subprocess.run([str(bin_dir / "python"), "-c", "import rk3576_build, sys; print(rk3576_build.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip()
    package = Path(where).parent
    assert package.is_relative_to(bin_dir.parent) and not package.is_relative_to(REPO)
    for shipped in ("recipes/myd-lr3576-ubuntu.yaml", "recipes/demo.yaml", "Dockerfile.builder",
                    "builder/entrypoint.sh", "patches/demo/series"):
        assert (package / "_shipped" / shipped).is_file(), shipped
    assert (package / "demo" / "sample" / "sdk").is_dir()
    before = sorted(str(p) for p in package.rglob("*") if "__pycache__" not in p.parts)

    version = tool(installed, "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == "rk3576-build 0.1.0", version.stderr
    init = tool(installed, "init", "board", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    project = tmp_path / "board"
    listed = tool(installed, "list", cwd=project)
    assert listed.returncode == 0, listed.stderr
    assert "fetch" in listed.stdout and "step" in listed.stdout
    plan = tool(installed, "plan", "--json", cwd=project)
    assert plan.returncode == 0, plan.stderr
    assert "step:kernel" in {row["task"] for row in json.loads(plan.stdout)["tasks"]}
    assert (project / "build" / ".doit.db").is_file()  # the work dir is the project's
    # A shipped recipe by name, from elsewhere: its work dir lands under the current directory.
    shipped = tool(installed, "--recipe", "demo", "plan", cwd=tmp_path)
    assert shipped.returncode == 0, shipped.stderr
    assert (tmp_path / "build" / "demo" / ".doit.db").is_file()
    after = sorted(str(p) for p in package.rglob("*") if "__pycache__" not in p.parts)
    assert after == before  # nothing written into site-packages


@pytest.mark.docker
@pytest.mark.qemu  # the demo project mounts the board kit, as the demo's build steps do
def test_demo_project_and_shell_from_the_wheel(installed, tmp_path):
    init = tool(installed, "init", "--from", "demo", "demo-project", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    project = tmp_path / "demo-project"
    assert tool(installed, "list", cwd=project).returncode == 0
    plan = tool(installed, "plan", "--json", cwd=project)
    assert plan.returncode == 0 and json.loads(plan.stdout)["would_run"] > 0, plan.stderr
    shell = tool(installed, "shell", "-c", "test -x ./build.sh && pwd && id -u && echo ccache=$CCACHE_DIR",
                 cwd=project, timeout=1800)
    assert shell.returncode == 0, shell.stderr[-3000:]
    sdk = (project / "build" / "sdk").resolve()
    lines = shell.stdout.splitlines()
    assert str(sdk) in lines and str(os.getuid()) in lines and "ccache=/ccache" in lines  # as steps see it
    status = tool(installed, "shell", "-c", "exit 7", cwd=project, timeout=600)
    assert status.returncode == 7, status.stderr[-2000:]
