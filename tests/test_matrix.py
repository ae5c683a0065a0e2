"""The driver matrix: its spec, and real runs (builder container, QEMU board) of the demo's variants."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import REPO, rk
from rk3576_build.config.recipe import load_recipe
from rk3576_build.config.shipped import shipped_path
from rk3576_build.config.workspace import work_lock
from rk3576_build.core.errors import UserError
from rk3576_build.demo import command as demo
from rk3576_build.demo.sample_driver import make_driver_tarball
from rk3576_build.pipeline import matrix
from rk3576_build.pipeline.stages import write_stamp

SHA = "0123456789abcdef" * 4


def spec(**extra):
    data = {"variants": [{"version": "0.9.7", "url": "http://127.0.0.1:9/a.tar.bz2", "sha256": SHA},
                         {"version": "0.9.8", "url": "http://127.0.0.1:9/b.tar.bz2", "sha256": SHA.upper()}],
            "boards": [{"virtual": True}, {"console": "/dev/ttyUSB0", "flash": "upgrade_tool"},
                       {"name": "farm", "place": "myd-2", "power_cycle": True, "flash": "none"}]}
    data.update(extra)
    return matrix.parse_matrix(data)


def test_spec_defaults_and_names():
    parsed = spec(expected="RKNPU driver: v0.9.8")
    assert [v.name for v in parsed.variants] == ["0.9.7", "0.9.8"] and parsed.variants[1].sha256 == SHA
    assert [(b.name, b.kind, b.flash) for b in parsed.boards] == [
        ("virtual", "virtual", "virtual"), ("ttyUSB0", "console", "upgrade_tool"), ("farm", "place", "none")]
    assert parsed.boards[2].power_cycle and parsed.expected == "RKNPU driver: v0.9.8" and parsed.rkllm


def test_spec_lists_every_problem():
    with pytest.raises(UserError) as info:
        matrix.parse_matrix({
            "variants": [{"version": "0.9", "url": "", "sha256": "abc"},
                         {"version": "0.9.8", "url": "x", "sha256": SHA, "colour": 1},
                         {"version": "0.9.8", "url": "y", "sha256": SHA}],
            "boards": [{"console": "/dev/ttyUSB0", "place": "p"}, {"virtual": True, "flash": "upgrade_tool"},
                       "serial:/dev/ttyS0"],
            "expectd": "x"})
    text = str(info.value)
    for problem in ("matrix.expectd: unknown key", "variants[0].version: expected MAJOR.MINOR.PATCH",
                    "variants[0].url: the driver tarball's URL", "variants[0].sha256: expected the tarball's 64 hex",
                    "variants[1].colour: unknown key", "boards[0]: give exactly one of console",
                    "boards[1].flash: the virtual board is flashed with the virtual method only",
                    "boards[2]: 'serial:/dev/ttyS0': give virtual, console:PORT_OR_URL or place:NAME"):
        assert problem in text, text
    with pytest.raises(UserError, match="two entries are named '0.9.8'"):
        matrix.parse_matrix({"variants": [{"version": "0.9.8", "url": "x", "sha256": SHA}] * 2,
                             "boards": ["virtual"]})
    with pytest.raises(UserError, match="variants: expected a non-empty list"):
        matrix.parse_matrix({"variants": [], "boards": ["virtual"]})


def test_boards_from_the_command_line():
    assert matrix.board_from_text("virtual") == {"virtual": True}
    assert matrix.board_from_text("console:socket://127.0.0.1:5555") == {"console": "socket://127.0.0.1:5555"}
    assert matrix.board_from_text("bench=console:/dev/ttyUSB1") == {"name": "bench", "console": "/dev/ttyUSB1"}
    assert matrix.board_from_text("place:myd-3") == {"place": "myd-3"}
    with pytest.raises(UserError, match="give virtual, console:PORT_OR_URL or place:NAME"):
        matrix.board_from_text("console")


def test_variant_recipe_own_workdir_shared_cache(tmp_path):
    recipe = load_recipe(shipped_path("recipes", "demo.yaml"))
    variant = spec().variants[0]
    mine = matrix.variant_recipe(recipe, variant, tmp_path, "RKNPU driver: v0.9.8")
    assert mine.workdir == tmp_path / "variants" / "0.9.7" and mine.cache.store == str(tmp_path / "build-cache")
    assert (mine.driver.version, mine.driver.url, mine.driver.sha256) == ("0.9.7", variant.url, SHA)
    assert mine.verify.expected == "RKNPU driver: v0.9.8" and mine.steps == recipe.steps
    assert mine.driver.source_dir == recipe.driver.source_dir


def test_boards_the_run_cannot_use_are_refused_before_anything_starts(tmp_path):
    recipe = load_recipe(shipped_path("recipes", "demo.yaml"))  # flash.method: virtual
    with pytest.raises(UserError, match="board ttyUSB0: flash method 'virtual' is for the virtual board"):
        matrix.Matrix(recipe, matrix.parse_matrix({"variants": [{"version": "0.9.8", "url": "x", "sha256": SHA}],
                                                   "boards": ["console:/dev/ttyUSB0"]}), tmp_path)
    assert not list(tmp_path.iterdir())


def test_step_timings_tell_built_restored_and_up_to_date(tmp_path):
    recipe = matrix.variant_recipe(load_recipe(shipped_path("recipes", "demo.yaml")), spec().variants[0],
                                   tmp_path, "x")
    state = tmp_path / "variants" / "0.9.7" / "state"
    write_stamp(state / "step-lunch.timing.json", {"started": 100.0, "duration": 1.5, "exit_status": 0})
    write_stamp(state / "step-u-boot.timing.json", {"started": 300.0, "duration": 0.01, "exit_status": 0,
                                                    "cache": {"result": "restored"}})
    write_stamp(state / "step-kernel.timing.json", {"started": 301.0, "duration": 4.9, "exit_status": 0,
                                                    "cache": {"result": "built"}})
    steps = matrix.step_timings(recipe, since=200.0)
    assert [(s["name"], s["result"], s["duration_s"]) for s in steps] == [
        ("lunch", "up to date", 0.0), ("u-boot", "restored", 0.01), ("kernel", "built", 4.9)]


def test_matrix_command_mistakes_are_one_line_and_exit_2(tmp_path):
    nothing = rk("--recipe", "demo", "--workdir", str(tmp_path / "w"), "matrix")
    assert nothing.returncode == 2 and "no variants or no boards" in nothing.stderr
    assert "Traceback" not in nothing.stderr and len(nothing.stderr.strip().splitlines()) == 1
    bad = tmp_path / "matrix.yaml"
    bad.write_text("matrix:\n  variants: [{version: 1.0, url: x, sha256: nope}]\n  boards: [usb:1]\n")
    wrong = rk("--recipe", "demo", "--workdir", str(tmp_path / "w"), "matrix", "--matrix-file", str(bad))
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert "variants[0].version" in wrong.stderr and "variants[0].sha256" in wrong.stderr
    assert "boards[0]: 'usb:1'" in wrong.stderr
    assert not (tmp_path / "w-matrix").exists()  # nothing started


# --------------------------------------------------------------------------- real runs

def cells_of(root: Path) -> dict:
    data = json.loads((root / "matrix" / "matrix.json").read_text())
    return data, {(c["variant"], c["board"]): c for c in data["cells"]}


@pytest.mark.docker
@pytest.mark.qemu
def test_demo_matrix_verdicts(tmp_path):
    root = tmp_path / "demo-matrix"
    done = rk("demo", "--matrix", "0.9.6,0.9.7,0.9.8", "--workdir", str(root), timeout=1800)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-4000:]  # two of the three variants fail, as they should
    data, cells = cells_of(root)
    old, mid, new = (cells[(v, "virtual")] for v in ("0.9.6", "0.9.7", "0.9.8"))
    # 0.9.6: the runtime warns that the driver is too old (and the version is not the guide's)
    assert old["verdict"] == "failed" and old["runtime_accepted"] is False and old["driver_reported"] == "v0.9.6"
    assert old["reason"].startswith("RKLLM runtime rejects the driver") and "too old" in old["reason"]
    # 0.9.7: the runtime accepts it, the version check does not (the SDK guide needs 0.9.8)
    assert mid["verdict"] == "failed" and mid["runtime_accepted"] is True and mid["version_match"] is False
    assert mid["reason"].startswith("version check: expected 'RKNPU driver: v0.9.8'")
    assert new["verdict"] == "passed" and new["version_match"] is True and new["runtime_accepted"] is True
    assert new["figures"]["generate_tokens_per_s"] > 0 and new["figures"]["init_ms"] > 0
    assert data["status"] == "failed" and not data["interrupted"]
    # Each variant in its own work dir; the later ones restore what the driver does not touch.
    builds = {v["name"]: v["build"] for v in data["variants"]}
    assert all(b["status"] == "ok" for b in builds.values())
    for later in ("0.9.7", "0.9.8"):
        results = {s["name"]: s["result"] for s in builds[later]["steps"]}
        assert results["kernel"] == results["module"] == results["updateimg"] == "built", results
        assert results["lunch"] == results["u-boot"] == results["ubuntu"] == "restored", results
        assert (root / "variants" / later / "manifest.json").is_file()
    for name in ("junit.xml", "summary.md", "index.html"):
        assert (root / "matrix" / name).stat().st_size > 500
    assert "| 0.9.8 | virtual | PASSED | v0.9.8 | yes | yes |" in (root / "matrix" / "summary.md").read_text()
    assert "matrix: FAILED, 1 of 3 passed" in output
    for path in root.rglob("*"):  # no password in anything the matrix wrote
        if path.is_file() and path.stat().st_size < 5_000_000 and "sources" not in path.parts:
            assert b"npu-demo-pw" not in path.read_bytes(), path


@pytest.mark.docker
@pytest.mark.qemu
def test_a_failing_build_is_reported_and_the_others_verify(tmp_path):
    """`rk3576-build matrix` in a demo project: a driver that does not compile fails its build, the next
    variant still builds and verifies, on two virtual boards side by side."""
    assert rk("init", "--from", "demo", "project", cwd=tmp_path).returncode == 0
    project, root = tmp_path / "project", tmp_path / "root"
    sources = project / "sources"
    broken = make_driver_tarball(sources / "rknpu_driver_0.9.9_broken.tar.bz2", "0.9.9",
                                 extra={"rknpu_gem.c": b"#error this driver does not build\n"})
    good = sources / demo.driver_tarball_name("0.9.8")
    (project / "matrix.yaml").write_text(json.dumps({"matrix": {
        "expected": "RKNPU driver: v0.9.8",
        "variants": [{"name": "broken", "version": "0.9.9", "url": broken.as_uri(),
                      "sha256": hashlib.sha256(broken.read_bytes()).hexdigest()},
                     {"version": "0.9.8", "url": good.as_uri(),
                      "sha256": hashlib.sha256(good.read_bytes()).hexdigest()}],
        "boards": ["virtual", "second=virtual"]}}))  # two QEMU boards
    done = rk("matrix", "--matrix-file", "matrix.yaml", "--root", str(root), cwd=project, timeout=1800,
              env={demo.PASSWORD_ENV: demo.DEMO_PASSWORD})
    assert done.returncode == 1, (done.stdout + done.stderr)[-4000:]
    data, cells = cells_of(root)
    broken_cell = cells[("broken", "virtual")]
    assert broken_cell["verdict"] == cells[("broken", "second")]["verdict"] == "build failed"
    # the reason names the step and the compiler's error, as `run` reports it
    assert "build step kernel" in broken_cell["reason"] and "#error this driver does not build" in broken_cell["reason"]
    built = [s["name"] for s in data["variants"][0]["build"]["steps"]]
    assert "lunch" in built and "kernel" not in built and "updateimg" not in built
    assert cells[("0.9.8", "virtual")]["verdict"] == cells[("0.9.8", "second")]["verdict"] == "passed"
    first, second = (r for r in data["runs"] if r["variant"] == "0.9.8")
    assert first["started_at"] < second["finished_at"] and second["started_at"] < first["finished_at"]  # in parallel
    assert first["report_dir"] != second["report_dir"]
    junit = (root / "matrix" / "junit.xml").read_text()
    assert 'type="build"' in junit and "driver broken on virtual" in junit and "driver broken on second" in junit


def _qemu_processes(needle: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "qemu-system-aarch64" in cmdline and needle in cmdline:
            found.append(int(proc.name))
    return found


def _containers(root: Path) -> list[str]:
    out = subprocess.run(["docker", "ps", "-a", "--format", '{{.ID}} {{.Label "rk3576-build.workdir"}}'],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if str(root) in line]


@pytest.mark.docker
@pytest.mark.qemu
def test_ctrl_c_mid_matrix_leaves_no_container_and_no_qemu(tmp_path):
    root = tmp_path / "demo-matrix"
    env = {k: v for k, v in os.environ.items() if k != "RK3576_CONSOLE_PASSWORD"}
    proc = subprocess.Popen([sys.executable, "-m", "rk3576_build.cli", "demo", "--matrix", "0.9.6,0.9.7,0.9.8",
                             "--workdir", str(root)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        # Wait until the board verifies the first image while the next variant builds in a container.
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if _qemu_processes(str(root)) and _containers(root / "variants" / "0.9.7"):
                break
            time.sleep(0.2)
        else:
            pytest.fail("never saw QEMU and a build container at once:\n" + "".join(lines[-60:]))
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    output = "".join(lines)
    assert code == 130, output[-3000:]
    assert "interrupted" in output
    assert _containers(root) == [] and _qemu_processes(str(root)) == []
    data, cells = cells_of(root)
    assert data["interrupted"] is True and cells[("0.9.8", "virtual")]["verdict"] == "not run"
    with work_lock(root / "variants" / "0.9.7" / ".lock"):  # the lock was released too
        pass
