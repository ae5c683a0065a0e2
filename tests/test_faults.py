"""Nothing left running, nothing redone: a killed CLI, a closed terminal, a killed demo (issue 11).

Real parts: the CLI in a subprocess killed with real signals, Docker running the
steps, QEMU running the virtual board.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import BOARD_PASSWORD, REPO, booted, executed, rk_recipe, write_recipe
from rk3576_build.build import container
from rk3576_build.config.recipe import load
from rk3576_build.config.workspace import Options
from rk3576_build.core.errors import Stopped
from rk3576_build.demo.command import driver_tarball_name
from rk3576_build.demo.vboard import _listening
from rk3576_build.pipeline.runner import run_doit
from rk3576_build.pipeline.tasks import RecipeTasks
from rk3576_build.sources.unpack import unpack

HOLD = "slow.hold"  # while this file is in the SDK root, the `slow` step sleeps


def _slow_recipe(data: dict) -> None:
    """lunch, then a step that sleeps while HOLD exists; no step depends on the driver."""
    lunch = next(step for step in data["steps"] if step["name"] == "lunch")
    data["steps"] = [lunch, {"name": "slow", "command": f"if [ -e {HOLD} ]; then echo holding; sleep 300; fi; "
                                                         "echo slow done", "depends": ["sdk", "lunch"]}]
    data["artifacts"] = ["output/.config"]
    data.pop("rootfs_overlays", None)  # applied before the rootfs step, which this recipe has not


def _start(recipe: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rk3576_build.cli", "--recipe", str(recipe), "run"],
                            cwd=REPO, stdout=out.open("w"), stderr=subprocess.STDOUT)


def _step_containers(workdir: Path) -> list:
    client = container.docker_client()
    return client.containers.list(filters={"label": f"{container.WORKDIR_LABEL}={workdir.resolve()}"})


def _wait_holding(proc: subprocess.Popen, work: Path, out: Path) -> None:
    """Until the slow step's container runs (and so everything before it finished)."""
    deadline = time.monotonic() + 600
    log = work / "logs" / "02-slow.log"
    while not (log.exists() and "holding" in log.read_text()):
        assert proc.poll() is None, out.read_text()[-3000:]
        assert time.monotonic() < deadline, out.read_text()[-3000:]
        time.sleep(0.2)


@pytest.mark.docker
def test_sigkill_and_sighup_during_a_step(tmp_path, sources):
    url, checksums, _ = sources
    recipe = write_recipe(tmp_path / "k" / "r.yaml", url, checksums, change=_slow_recipe)
    work = tmp_path / "k" / "work"
    (work / "sdk").mkdir(parents=True)
    out = tmp_path / "run1.out"
    proc = _start(recipe, out)
    try:
        while not (work / "state" / "unpack-sdk.json").exists():
            assert proc.poll() is None, out.read_text()[-3000:]
            time.sleep(0.2)
        (work / "sdk" / HOLD).write_text("")
        _wait_holding(proc, work, out)
        proc.kill()  # SIGKILL: no cleanup at all
        proc.wait()
        assert len(_step_containers(work)) == 1, "the killed run's container keeps running"
        finished = executed(out.read_text()) - {"step:slow"}
        assert {"fetch:sdk", "unpack:sdk", "kernel:baseline", "builder:check", "step:lunch"} <= finished
        baseline_log = (work / "logs" / "01-lunch.log").stat().st_mtime_ns

        # The next run removes it first (saying so), redoes nothing that finished; SIGHUP stops it cleanly.
        out2 = tmp_path / "run2.out"
        (work / "logs" / "02-slow.log").unlink()
        proc = _start(recipe, out2)
        _wait_holding(proc, work, out2)
        assert len(_step_containers(work)) == 1, "never two containers on one tree"
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(timeout=30) == 129
        second = out2.read_text()
        assert not _step_containers(work)
        assert "removed 1 container(s) left running by an earlier, killed run in" in second
        assert "step:slow" in executed(second) and not executed(second) & finished, second[-3000:]
        assert (work / "logs" / "01-lunch.log").stat().st_mtime_ns == baseline_log
        errors = [line for line in second.splitlines() if "error" in line]
        assert errors == ["rk3576-build: error: stopped by SIGHUP; the interrupted step is not recorded as done, "
                          "the next run starts again there"], second[-3000:]
        assert "Traceback" not in second

        # Not recorded as done: it runs again; the manifest (no step depends on the driver) works.
        (work / "sdk" / HOLD).unlink()
        out3 = tmp_path / "run3.out"
        proc = _start(recipe, out3)
        assert proc.wait(timeout=600) == 0, out3.read_text()[-3000:]
        third = out3.read_text()
        # (kernel:preflight: only the manifest needs it, and the run never got there before)
        assert executed(third) - {"kernel:preflight"} == {"step:slow", "manifest"}, third[-3000:]
        assert "removed" not in third
        manifest = (work / "manifest.json").read_text()
        assert '"version": "0.9.8"' in manifest and '"kernel_version"' in manifest

        # The SDK unpacked afresh under a stale unpack stamp (a run failed or was killed between the two),
        # then another driver: the baseline is made again instead of an overlay on a tree without it.
        fetched = json.loads((work / "state" / "fetch-sdk.json").read_text())
        unpack(Path(fetched["path"]), work / "sdk", strip_components=1)
        write_recipe(recipe, url, checksums, driver="0.9.6", change=_slow_recipe)
        fourth = rk_recipe(recipe, "run", "kernel:preflight")
        assert fourth.returncode == 0, fourth.stdout[-3000:] + fourth.stderr[-3000:]
        assert {"kernel:baseline", "kernel:overlay"} <= executed(fourth.stdout)
        assert "unpack:sdk" not in executed(fourth.stdout)
    finally:
        if proc.poll() is None:
            proc.kill()
        for stale in _step_containers(work):
            stale.remove(force=True)


BOARD_HOLDER = """
import signal, sys, time
from pathlib import Path
from rk3576_build.demo.vboard import BoardImage, VirtualBoard
from rk3576_build.core.errors import raise_stopped
signal.signal(signal.SIGTERM, raise_stopped)  # as the CLI does
with VirtualBoard(BoardImage(Path(sys.argv[1]), Path(sys.argv[2])), log_path=Path(sys.argv[3])) as board:
    print(board._proc.pid, board.port, flush=True)
    time.sleep(300)
"""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"  # a zombie of init is gone too


@pytest.mark.qemu
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_the_virtual_boards_qemu_dies_with_its_parent(board_images, tmp_path, signum):
    image = board_images("0.9.8")
    holder = subprocess.Popen([sys.executable, "-c", BOARD_HOLDER, str(image.kernel), str(image.initrd),
                               str(tmp_path / "qemu.log")], cwd=REPO, stdout=subprocess.PIPE, text=True)
    qemu = None
    try:
        qemu, port = map(int, holder.stdout.readline().split())
        assert _listening(port) and not _gone(qemu)
        assert os.getpgid(qemu) != os.getpgid(holder.pid), "QEMU has its own process group"
        holder.send_signal(signum)
        holder.wait(timeout=30)
        deadline = time.monotonic() + 5
        while not (_gone(qemu) and not _listening(port)):
            assert time.monotonic() < deadline, "QEMU outlived the process that started it"
            time.sleep(0.1)
    finally:
        if holder.poll() is None:
            holder.kill()
        if qemu and not _gone(qemu):
            os.kill(qemu, signal.SIGKILL)


def test_stopped_is_a_keyboard_interrupt_that_names_its_signal():
    """Every `except KeyboardInterrupt`/`finally` that cleans up after Ctrl-C also runs for SIGTERM/SIGHUP."""
    stopped = Stopped(signal.SIGHUP)
    assert isinstance(stopped, KeyboardInterrupt) and stopped.signum == signal.SIGHUP


@pytest.mark.qemu
def test_run_verify_fails_on_the_reports_status_not_only_the_version(board_images, tmp_path, monkeypatch,
                                                                     capfd):
    """`run verify` (and so the demo) exits 1 when a check such as rkllm failed, 2 when one could not run."""

    class OnlyVerify(RecipeTasks):
        def all_tasks(self):
            return [{**task, "task_dep": []} for task in self.final_tasks() if task["name"] == "verify"]

    monkeypatch.setenv("RK3576_CONSOLE_PASSWORD", BOARD_PASSWORD)
    with booted(board_images("0.9.8"), tmp_path) as board:
        for rkllm, code, status in (({"min_generate_tokens_per_s": 1e9}, 1, "verify failed: rkllm"),
                                    ({"program": "/usr/bin/no-such-demo"}, 2, "verify error: rkllm")):
            def change(data, rkllm=rkllm):
                data["flash"] = {"method": "upgrade_tool"}
                data["verify"].update(console=board.url, login_timeout=120)
                data["verify"]["rkllm"].update(rkllm)
            recipe = write_recipe(tmp_path / "v" / "r.yaml", "http://127.0.0.1:9",
                                  {driver_tarball_name("0.9.8"): "0" * 64}, change=change)
            tasks = OnlyVerify(load(Options(recipe=str(recipe))), offline=True, echo=lambda line: None)
            capfd.readouterr()
            assert run_doit(tasks, "run", ["verify"]) == code
            err = capfd.readouterr().err
            assert f"rk3576-build: error: verify: {status}" in err and "Traceback" not in err, err
            report = json.loads((tmp_path / "v" / "work" / "verify" / "verify-report.json").read_text())
            assert report["match"] is True and report["status"] == status.split()[1].rstrip(":")
