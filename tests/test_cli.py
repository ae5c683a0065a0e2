"""The command line: one registry of commands, honest exit codes, one-line errors, settings, init, logging.

Every user mistake the issue lists is run as a user would (a subprocess, from a
project directory under tmp_path) and must end in one line on stderr, no
traceback, and the documented exit code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from helpers import BOARD_PASSWORD, REPO, booted, rk, wait_until
from rk3576_build.board.console import ConsoleError
from rk3576_build.cli import commands
from rk3576_build.cli import main as cli
from rk3576_build.config.recipe import load
from rk3576_build.config.workspace import Options
from rk3576_build.core import logs
from rk3576_build.core.errors import UserError
from rk3576_build.demo.board_kit import find_kit
from rk3576_build.pipeline.runner import run_doit
from rk3576_build.pipeline.tasks import RecipeTasks, _user_action


def one_line_error(result: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    """Assert: exit `code`, stderr one `rk3576-build: error:` line with each fragment, no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("rk3576-build: error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """`rk3576-build init` on the real recipe: a project directory outside the checkout."""
    directory = tmp_path_factory.mktemp("proj") / "myboard"
    result = rk("init", str(directory), cwd=directory.parent)
    assert result.returncode == 0, result.stderr
    return directory


def child_recipe(project: Path, name: str, keys: dict) -> Path:
    """A recipe extending the project's, with `keys` on top, its work dir in the project."""
    path = project / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"extends": "rk3576-build.yaml", "name": name,
                                    "workdir": f"build-{name}", **keys}))
    return path


# --------------------------------------------------------------------------- the registry


def test_version_help_and_every_command_in_help(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"rk3576-build {version('rk3576-build')}"
    assert cli.main(["--help"]) == 0
    usage = capsys.readouterr().out
    for name in ("run", "plan", "list", "info", "verify", "flash", "demo", "init", "shell", "clean",
                 "forget", "ignore", "reset-dep", "dumpdb", "help"):
        assert f"\n  {name} " in usage, name
        assert name in commands.names()
        assert cli.main(["help", name]) == 0, name
        assert len(capsys.readouterr().out.splitlines()) >= 3, name
    assert "exit codes: 0 success, 1" in usage


def test_a_command_registered_by_name_has_the_help_line_it_is_registered_with():
    for name, (_target, line) in commands.LAZY.items():
        assert commands.get(name).help == line, name  # --help shows the line without importing the command


def test_usage_mistakes_are_one_line_and_exit_2(project):
    one_line_error(rk("plan", "nonsense", cwd=project), 2, "no task named 'nonsense'")
    one_line_error(rk("lsit", cwd=project), 2, "unknown command 'lsit'", "did you mean 'list'")
    one_line_error(rk("list", "--recipe", cwd=project), 2, "--recipe needs a value")
    one_line_error(rk("run", "--no-such-option", cwd=project), 2, "run:")
    one_line_error(rk("--recipe", "nope.yaml", "list", cwd=project), 2, "recipe not found: nope.yaml")
    result = rk(cwd=project)
    assert result.returncode == 2 and "commands:" in result.stdout


def test_closed_pipe_is_quiet(project):
    proc = subprocess.Popen([sys.executable, "-m", "rk3576_build.cli", "plan"], cwd=project,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # `| head -1`
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert b"RUN" in first
    assert stderr == ""


def test_plan_and_list_json_for_pipelines(project):
    plan = rk("plan", "--json", cwd=project)
    assert plan.returncode == 0, plan.stderr
    data = json.loads(plan.stdout)
    names = [row["task"] for row in data["tasks"]]
    assert "fetch:sdk" in names and "manifest" in names
    assert data["would_run"] == sum(row["run"] for row in data["tasks"])
    listed = rk("list", "--json", cwd=project)
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["fetch:sdk"]["status"] == "run" and rows["fetch"]["group"] is True


# --------------------------------------------------------------------------- recipe and environment mistakes


def _deep(depth: int = 5000) -> str:
    return "${A:-" * depth + "x" + "}" * depth


RECIPE_MISTAKES = {
    "nested-variables": ({"description": _deep()}, "description: ${...} references nested too deeply"),
    "nul-in-filename": ({"sdk": {"filename": "MYD\0.tar.gz"}}, "sdk.filename: contains a NUL character"),
    "missing-dockerfile": ({"builder": {"dockerfile": "no/Dockerfile.builder"}}, "Dockerfile"),
    "series-names-missing-patch": ({"patches": {"dir": "bad-patches"}}, "0001-missing.patch"),
}


@pytest.mark.parametrize("case", sorted(RECIPE_MISTAKES))
def test_recipe_mistakes_are_one_line_and_exit_2(project, case):
    keys, message = RECIPE_MISTAKES[case]
    (project / "bad-patches").mkdir(exist_ok=True)
    (project / "bad-patches" / "series").write_text("0001-missing.patch\n")
    recipe = child_recipe(project, case, keys)
    for command in ("list", "plan"):
        one_line_error(rk("--recipe", str(recipe), command, cwd=project), 2, message)


def test_dumpdb_reads_the_sqlite_database(project):
    recipe = child_recipe(project, "dumpdb", {})
    one_line_error(rk("--recipe", str(recipe), "dumpdb", cwd=project), 2, "nothing has run")
    assert rk("--recipe", str(recipe), "ignore", "fetch:sdk", cwd=project).returncode == 0
    result = rk("--recipe", str(recipe), "dumpdb", cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("fetch:sdk -> ") and '"ignore:"' in result.stdout


def test_verify_on_a_closed_port_without_out_is_exit_2(project):
    port = closed_port()
    result = rk("verify", "--console", f"socket://127.0.0.1:{port}", cwd=project)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "unreachable" in result.stdout + result.stderr
    report = json.loads((project / "build" / "verify" / "verify-report.json").read_text())
    assert report["status"] == "error"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_disk_names_the_path_and_what_to_free(project, tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(full)]).returncode != 0:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI=true: cannot mount a tmpfs")
        pytest.skip("cannot mount a tmpfs here")
    try:
        workdir = full / "work"
        assert rk("--workdir", str(workdir), "plan", cwd=project).returncode == 0  # the db exists
        try:  # then the disk fills up
            with open(full / "filler", "wb") as filler:
                while True:
                    filler.write(b"\0" * 4096)
                    filler.flush()
        except OSError:
            pass
        result = rk("--workdir", str(workdir), "ignore", "fetch:sdk", cwd=project)
        line = one_line_error(result, 2, "no space left on the disk holding", str(workdir), "free space")
        assert "corrupted" not in result.stderr + result.stdout and "clean" in line
    finally:
        subprocess.run(["umount", str(full)])


# --------------------------------------------------------------------------- exit codes through doit


class _OnlyVerify:
    """The recipe's real verify task, alone: its upstream (build, flash) is not this test's subject."""

    @staticmethod
    def tasks(recipe):
        class Tasks(RecipeTasks):
            def all_tasks(self):
                return [{**task, "task_dep": []} for task in self.final_tasks() if task["name"] == "verify"]

        return Tasks(recipe, offline=True, echo=lambda line: None)


@pytest.mark.qemu
def test_run_verify_exit_1_on_a_wrong_version_2_on_a_dead_console(project, board_images, tmp_path, monkeypatch, capfd):
    def run_verify(console: str, password: str, expected: str = "RKNPU driver: v0.9.9") -> int:
        recipe = load(Options(recipe=str(child_recipe(project, "verify", {
            "flash": {"method": "upgrade_tool"},
            "verify": {"console": console, "expected": expected, "login_timeout": 120}})),
            workdir=str(tmp_path / "work")))
        monkeypatch.setenv("RK3576_CONSOLE_PASSWORD", password)
        capfd.readouterr()
        return run_doit(_OnlyVerify.tasks(recipe), "run", ["verify"])

    with booted(board_images("0.9.8"), tmp_path) as board:
        assert run_verify(board.url, BOARD_PASSWORD) == 1  # the board says v0.9.8
        err = capfd.readouterr().err
        assert "rk3576-build: error: verify:" in err and "v0.9.9" in err and "Traceback" not in err
        assert run_verify(board.url, "Wrong-pw-123") == 2  # the console refuses the login
        assert "Traceback" not in capfd.readouterr().err
    assert run_verify(f"socket://127.0.0.1:{closed_port()}", BOARD_PASSWORD) == 2
    assert "unreachable" in capfd.readouterr().err


def test_a_task_user_error_keeps_its_exit_code(project, tmp_path, capfd):
    """The mechanism alone (no board): a task's UserError code is the command's exit code."""
    def failing(error):
        def fail():
            raise error
        return fail

    class Tasks(RecipeTasks):
        error: UserError

        def all_tasks(self):
            return [{"name": "check", "actions": [_user_action(failing(self.error))], "uptodate": [False]}]

    recipe = load(Options(recipe=str(project / "rk3576-build.yaml"), workdir=str(tmp_path / "w")))
    for error, code in ((UserError("mismatch", exit_code=1), 1), (ConsoleError("console gone"), 2)):
        Tasks.error = error
        assert run_doit(Tasks(recipe), "run", ["check"]) == code
        err = capfd.readouterr().err
        assert f"rk3576-build: error: check: {error}" in err


def test_info_documents_and_keeps_its_exit_codes(project, tmp_path):
    """0: up to date, 1: the task would run (not an error), 2: no such task; its help says so."""
    shown = rk("help", "info", cwd=project)
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    assert "EXIT STATUS" in text and "0 the task is up to date" in text and "1 the task would run" in text
    assert "2 no such task" in text
    assert "1: it would run" in rk("--help", cwd=project).stdout
    driver = tmp_path / "rknpu_driver_0.9.8_20241009.tar.bz2"
    driver.write_bytes(b"a local driver tarball")
    recipe = child_recipe(project, "info", {"driver": {"url": str(driver), "sha256": hashlib.sha256(
        driver.read_bytes()).hexdigest()}})
    would_run = rk("--recipe", recipe.name, "info", "fetch:driver", cwd=project)
    assert would_run.returncode == 1 and "status     : run" in would_run.stdout, would_run.stderr
    assert "error" not in would_run.stderr
    assert rk("--recipe", recipe.name, "run", "fetch:driver", cwd=project).returncode == 0
    done = rk("--recipe", recipe.name, "info", "fetch:driver", cwd=project)
    assert done.returncode == 0 and "status     : up-to-date" in done.stdout, done.stdout + done.stderr
    one_line_error(rk("--recipe", recipe.name, "info", "fetch:drivr", cwd=project), 2,
                   "info: no task 'fetch:drivr'", "`rk3576-build list` shows the tasks")
    one_line_error(rk("--recipe", recipe.name, "info", cwd=project), 2, "must select *one* task")


# --------------------------------------------------------------------------- settings, init, clean


def test_settings_precedence_command_line_env_local_recipe(project, monkeypatch):
    monkeypatch.chdir(project)
    for name in ("RK3576_WORKDIR", "RK3576_OFFLINE", "RK3576_RECIPE"):
        monkeypatch.delenv(name, raising=False)
    assert load(Options()).workdir == project / "build"  # the project recipe, found in the cwd
    (project / "rk3576-build.local.yaml").write_text("workdir: from-local\noffline: true\n")
    try:
        assert load(Options()).workdir == project / "from-local"
        assert load(Options()).offline is True
        monkeypatch.setenv("RK3576_WORKDIR", str(project / "from-env"))
        monkeypatch.setenv("RK3576_OFFLINE", "0")
        assert load(Options()).workdir == project / "from-env"
        assert load(Options()).offline is False
        assert load(Options(workdir=str(project / "from-cli"))).workdir == project / "from-cli"
        monkeypatch.setenv("RK3576_OFFLINE", "1")
        assert load(Options(offline=False)).offline is False  # --online beats the environment
        monkeypatch.setenv("RK3576_OFFLINE", "maybe")
        with pytest.raises(UserError, match="RK3576_OFFLINE='maybe'"):
            load(Options())
        monkeypatch.delenv("RK3576_OFFLINE")
        monkeypatch.delenv("RK3576_WORKDIR")
    finally:
        (project / "rk3576-build.local.yaml").write_text("")
    # A shipped recipe's work dir is under the current directory, never in the tool's files.
    shipped = load(Options(recipe="demo"))
    assert shipped.workdir == project / "build" / "demo"


def test_shell_runs_no_check_and_a_wrong_accept_probe_is_one_line(project):
    """`shell` is for when the checks fail (its help says it runs none); a recipe's accept_probe naming
    no step is refused at load, before anything runs, with its file and key path."""
    shown = rk("help", "shell", cwd=project)
    assert shown.returncode == 0 and "--kernel" in shown.stdout
    assert "none of the checks (builder:probe, builder:check, kernel:preflight)" in " ".join(shown.stdout.split())
    recipe = child_recipe(project, "accept", {"builder": {"accept_probe": {"lunhc": "help omits it"}}})
    one_line_error(rk("--recipe", recipe.name, "shell", "-c", "true", cwd=project), 2,
                   f"{recipe.name}: builder.accept_probe.lunhc: no step named 'lunhc'", "(did you mean 'lunch'?)")
    assert not (project / "build-accept").exists(), "nothing ran"


def test_init_makes_a_project_that_extends_a_shipped_recipe(project):
    files = {p.name for p in project.iterdir()}
    assert {"rk3576-build.yaml", "rk3576-build.local.yaml", ".gitignore", "patches"} <= files
    data = yaml.safe_load((project / "rk3576-build.yaml").read_text())
    assert data["extends"] == "myd-lr3576-ubuntu" and data["workdir"] == "build"
    assert "build/" in (project / ".gitignore").read_text()
    assert (project / "patches" / "series").is_file()  # a copy of the shipped series
    recipe = load(Options(recipe=str(project / "rk3576-build.yaml")))
    assert recipe.name == "myboard" and recipe.lock_file == project / "rk3576-build.lock.yaml"
    assert recipe.builder.dockerfile.is_file() and not recipe.workdir.is_relative_to(REPO)
    one_line_error(rk("init", str(project), cwd=project.parent), 2, "already exists")
    wrong = rk("init", "--from", "nope", "x", cwd=project.parent)
    assert wrong.returncode == 2 and "invalid choice: 'nope'" in wrong.stderr and "Traceback" not in wrong.stderr


@pytest.mark.qemu  # the demo project needs this machine's board kit (found, never written down)
def test_init_from_demo_writes_no_path_of_this_machine(tmp_path, monkeypatch):
    kit = find_kit()
    result = rk("init", "--from", "demo", "demo-project", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    project = tmp_path / "demo-project"
    text = (project / "rk3576-build.yaml").read_text()
    for machine in (str(tmp_path), str(Path.home()), str(kit.root), kit.kernel_release, str(REPO)):
        assert machine not in text, machine

    def strings(value):
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        return [s for v in value for s in strings(v)] if isinstance(value, list) else [str(value)]
    assert not [s for s in strings(yaml.safe_load(text)) if s.startswith(("/", "~"))], text
    # The project runs: the kit is found when the recipe is loaded, or taken from $BOARD_KIT.
    assert rk("list", cwd=project).returncode == 0
    plan = rk("plan", "--json", cwd=project)
    assert plan.returncode == 0 and json.loads(plan.stdout)["would_run"] > 0, plan.stderr
    monkeypatch.delenv("BOARD_KIT", raising=False)
    recipe = load(Options(recipe=str(project / "rk3576-build.yaml")))
    assert [(m.source, m.target) for m in recipe.builder.mounts] == [(kit.root, "/opt/board-kit")]
    monkeypatch.setenv("BOARD_KIT", str(tmp_path))
    assert load(Options(recipe=str(project / "rk3576-build.yaml"))).builder.mounts[0].source == tmp_path
    monkeypatch.delenv("BOARD_KIT")
    monkeypatch.setenv("RK3576_KIT_DIR", str(tmp_path / "no-kit-here"))  # a machine without the kit
    assert load(Options(recipe=str(project / "rk3576-build.yaml"))).builder.mounts[0].source is None


def test_clean_removes_the_work_directory_only(project):
    recipe = child_recipe(project, "clean", {})
    workdir = project / "build-clean"
    assert rk("--recipe", str(recipe), "ignore", "fetch:sdk", cwd=project).returncode == 0
    assert (workdir / ".doit.db").exists()
    result = rk("--recipe", str(recipe), "clean", cwd=project)
    assert result.returncode == 0, result.stderr
    assert not workdir.exists() and f"removed {workdir}" in result.stderr
    (project / "not-ours").mkdir()
    one_line_error(rk("--recipe", str(recipe), "--workdir", str(project / "not-ours"), "clean", cwd=project),
                   2, "does not look like an rk3576-build work directory")
    assert (project / "not-ours").is_dir()


# --------------------------------------------------------------------------- logging


def test_logging_quiet_verbose_and_colour_only_on_a_terminal(tmp_path, monkeypatch):
    quiet = rk("-q", "init", str(tmp_path / "q"), cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == ""
    loud = rk("init", str(tmp_path / "l"), cwd=tmp_path)
    assert "wrote" in loud.stderr and "\x1b[" not in loud.stderr  # not a terminal: no colour

    master, slave = os.openpty()
    with open(slave, "w", closefd=True) as terminal:
        monkeypatch.delenv("NO_COLOR", raising=False)
        logs.setup(0, terminal).warning("coloured")
        monkeypatch.setenv("NO_COLOR", "1")
        logs.setup(0, terminal).warning("plain")
        terminal.flush()
        received: list[str] = []

        def both_lines() -> bool:  # the pty hands the lines over asynchronously
            if select.select([master], [], [], 0.05)[0]:
                received.append(os.read(master, 4096).decode())
            return "warning: plain" in "".join(received)

        wait_until(both_lines, "both lines on the terminal", timeout=10, interval=0)
        out = "".join(received)
    os.close(master)
    assert "\x1b[33mwarning: coloured\x1b[0m" in out and "warning: plain" in out
    assert "\x1b[33mwarning: plain" not in out
    logs.setup(0)


# --------------------------------------------------------------------------- interruption


def test_ctrl_c_is_exit_130_with_one_line(project, tmp_path):
    with socket.socket() as silent:  # accepts connections, never answers: the fetch hangs
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        recipe = child_recipe(project, "interrupted", {
            "downloads": str(tmp_path / "downloads"),
            "sdk": {"url": f"http://127.0.0.1:{silent.getsockname()[1]}/sdk.tar.gz"}})
        proc = subprocess.Popen([sys.executable, "-m", "rk3576_build.cli", "--recipe", str(recipe), "run", "fetch:sdk"],
                                cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        silent.setblocking(False)
        accepted: list[socket.socket] = []

        def connected() -> bool:  # the fetch is under way: Ctrl-C now
            with contextlib.suppress(BlockingIOError):
                accepted.append(silent.accept()[0])
            assert proc.poll() is None, proc.communicate()
            return bool(accepted)

        wait_until(connected, "the fetch connecting to the silent server", timeout=60)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        for connection in accepted:
            connection.close()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["rk3576-build: error: interrupted; the interrupted step is not recorded "
                                        "as done, the next run starts again there"]
