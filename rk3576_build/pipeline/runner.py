"""doit's side of the command line: a recipe's tasks handed to doit's commands, and their exit codes.

tasks.py makes the task dicts; this module groups them for doit's loader, adds
`plan`, JSON output and a sqlite `dumpdb`, reports failures on stderr, and turns
what failed into the tool's exit code (a task's UserError keeps its own code).
"""

from __future__ import annotations

import errno
import json
import re
import sqlite3
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from doit.cmd_base import Command as DoitCommand
from doit.cmd_base import DoitCmdBase, TaskLoader2, get_loader
from doit.cmd_forget import Forget
from doit.cmd_ignore import Ignore
from doit.cmd_info import Info
from doit.cmd_list import List
from doit.cmd_resetdep import ResetDep
from doit.cmd_run import Run
from doit.cmdparse import CmdParseError
from doit.dependency import DatabaseException, SqliteDB
from doit.exceptions import InvalidCommand, InvalidDodoFile, InvalidTask
from doit.globals import Globals
from doit.loader import load_tasks
from doit.plugin import PluginDict
from doit.reporter import ConsoleReporter

from rk3576_build.build.container import StepFailed
from rk3576_build.core.errors import UserError
from rk3576_build.pipeline.tasks import RecipeTasks

BIN_NAME = "rk3576-build"
GROUP_DOCS = {
    "fetch": "download every source into the cache and verify it",
    "unpack": "unpack every source into the work directory",
    "kernel": "prepare the kernel tree: baseline, driver overlay, patches, preflight",
    "step": "run every build.sh step in the builder container",
    "builder": "the builder image, the build.sh command probe and the host checks",
    "app": "build every app of the recipe (apps:) in the builder container",
}
DISK_FULL = ("No space left on device", "database or disk is full", "[Errno 28]")


def task_creators(recipe_tasks: RecipeTasks) -> dict:
    """doit `task_*` creators for a recipe: `fetch:sdk` becomes subtask `sdk` of `fetch`."""
    groups: dict[str, list[dict]] = defaultdict(list)
    singles: dict[str, dict] = {}
    for task in recipe_tasks.all_tasks():
        base, _, sub = task["name"].partition(":")
        if sub:
            groups[base].append({**task, "name": sub})
        else:
            singles[base] = {key: value for key, value in task.items() if key != "name"}

    creators = {}
    for base, items in groups.items():
        creators[f"task_{base}"] = _creator(items, GROUP_DOCS.get(base, base))
    for base, item in singles.items():
        creators[f"task_{base}"] = _creator(item)
    return creators


def _creator(value: list[dict] | dict, doc: str | None = None):
    """A doit task creator: a group's subtasks (a generator) or one task."""
    if isinstance(value, list):
        def creator():
            yield from value
    else:
        def creator():
            return value
    creator.__doc__ = doc
    return creator


class Failures:
    """What failed in one doit run, and the exit code that follows from it."""

    def __init__(self) -> None:
        self.errors: list[UserError | None] = []  # one per failed task; None: not a UserError
        self.disk_full: str | None = None

    def exit_code(self, doit_code: int) -> int:
        if self.disk_full:
            return 2
        codes = [_code_of(error) for error in self.errors if error is not None]
        if codes:
            return max(codes)
        return doit_code


def _code_of(error: UserError) -> int:
    # A build step's own exit status is not the tool's: a failed step is a failed build.
    return 1 if isinstance(error, StepFailed) else error.exit_code


def reporter_class(failures: Failures, stderr=None):
    """doit's console reporter with failures on stderr, one clean line for a UserError."""

    class Reporter(ConsoleReporter):
        def __init__(self, outstream, options):
            super().__init__(outstream, options)
            self.errstream = stderr or sys.stderr

        def add_failure(self, task, fail):
            error = getattr(fail, "user_error", None)
            failures.errors.append(error)
            text = fail.get_msg()
            if any(marker in text for marker in DISK_FULL):
                failures.disk_full = text
            if not fail.report:
                return
            if error is not None:
                self.errstream.write(f"{BIN_NAME}: error: {task.name}: {error}\n")
            elif failures.disk_full:
                self.errstream.write(f"{BIN_NAME}: error: {task.name}: {disk_full_message(text)}\n")
            else:
                self.errstream.write(f"{fail.get_name()} - task {task.name}:\n{text}\n")

        def runtime_error(self, msg):
            if any(marker in msg for marker in DISK_FULL):
                failures.disk_full = msg
            self.errstream.write(f"{BIN_NAME}: error: {msg}\n")

        def add_success(self, task):
            super().add_success(task)
            save = getattr(getattr(Globals.dep_manager, "backend", None), "save", None)
            if save is not None:
                save()  # doit has just recorded the task's success (Runner.process_task_result)

        def complete_run(self):
            pass  # failures were reported as they happened, on stderr

    return Reporter


def disk_full_message(text: str, where: Path | None = None) -> str:
    """The disk-full advice: which path, and what can be freed."""
    path = where or _path_in(text)
    return (f"no space left on the disk holding {path or 'the work directory'}: free space there "
            "(`rk3576-build clean` removes this recipe's work directory; the download cache "
            "~/.cache/rk3576-build can be trimmed; `docker system prune` frees old builder images), "
            "then run again")


def _path_in(text: str) -> str | None:
    for line in reversed(text.splitlines()):
        if "Errno 28" in line and ": '" in line:
            return line.rsplit(": '", 1)[1].rstrip("'")
    return None


def is_disk_full(exc: BaseException) -> bool:
    return (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or \
        any(marker in str(exc) for marker in DISK_FULL)


class SavingSqliteDB(SqliteDB):
    """doit's sqlite3 backend, also saved after each successful task (doit alone saves at the end of a
    run), so a killed run (SIGKILL, power loss) keeps the record of every task it finished."""

    _dirty: set[str]

    def save(self) -> None:
        for task_id in self._dirty:
            self._conn.execute("insert or replace into doit values (?,?)",
                               (task_id, self.codec.encode(self._cache[task_id])))
        self._conn.commit()
        self._dirty = set()


class RecipeLoader(TaskLoader2):
    """Hands doit the tasks of one recipe (loaded and validated before doit starts)."""

    def __init__(self, recipe_tasks: RecipeTasks | None, failures: Failures | None = None):
        super().__init__()
        self.recipe_tasks = recipe_tasks
        self.failures = failures or Failures()

    def load_doit_config(self):
        self.recipe_tasks.layout.root.mkdir(parents=True, exist_ok=True)  # doit's db lives there
        return {**self.recipe_tasks.doit_config(), "reporter": reporter_class(self.failures)}

    def load_tasks(self, cmd, pos_args):
        return load_tasks(task_creators(self.recipe_tasks), self.cmd_names, cmd.execute_tasks)


# --------------------------------------------------------------------------- our doit commands

PLAN_REASONS = {"uptodate_false": "recipe section changed, output missing, or never ran",
                "has_no_dependencies": "no dependencies",
                "checker_changed": "dependency checker changed"}
opt_json = {"name": "json", "long": "json", "type": bool, "default": False,
            "help": "print JSON (for pipelines) instead of text"}


class Plan(DoitCmdBase):
    """`plan`: what `run` would execute, and why, without executing anything."""

    name = "plan"
    doc_purpose = "show what `run` would execute and why, without running anything"
    doc_usage = "[TASK ...]"
    doc_description = None
    cmd_options = (opt_json,)

    def _execute(self, json: bool = False, pos_args: list[str] | None = None) -> int:
        tasks = {task.name: task for task in self.task_list}
        producers = {str(target): task.name for task in self.task_list for target in task.targets}
        order: list[str] = []

        def visit(name: str) -> None:
            if name in order or name not in tasks:
                return
            task = tasks[name]
            for dep in list(task.task_dep) + [producers.get(str(f)) for f in task.file_dep]:
                if dep:
                    visit(dep)
            order.append(name)

        for name in self.sel_tasks or list(tasks):
            if name not in tasks:
                raise UserError(f"plan: no task named '{name}' (see `rk3576-build list`)")
            visit(name)
        will_run: set[str] = set()
        rows: list[dict[str, Any]] = []
        for name in order:
            task = tasks[name]
            if not task.actions:
                continue
            status = self.dep_manager.get_status(task, tasks, get_log=True)
            upstream = sorted({producers[str(f)] for f in task.file_dep
                               if producers.get(str(f)) in will_run})
            reasons = _format_reasons(status.reasons)
            if upstream:
                reasons.append("after " + ", ".join(upstream) + " reruns")
            runs = not (status.status == "up-to-date" and not upstream)
            if runs:
                will_run.add(name)
            rows.append({"task": name, "run": runs, "reasons": reasons if runs else []})
            if (task.meta or {}).get("runs"):  # a build step: the build.sh command it runs
                rows[-1]["runs"] = task.meta["runs"]
            if runs and (task.meta or {}).get("cache_key"):  # the build cache would restore it
                source = self.loader.recipe_tasks.cache_where(task.meta["cache_key"])
                if source:
                    rows[-1]["restore_from"] = source
        if json:
            _write_json(self.outstream, {"tasks": rows, "would_run": len(will_run)})
            return 0
        for row in rows:
            cmd = f" [{row['runs']}]" if row.get("runs") else ""
            if row.get("restore_from"):
                self.outstream.write(f"  RESTORE     {row['task']}{cmd}: from {row['restore_from']}\n")
            elif row["run"]:
                self.outstream.write(f"  RUN         {row['task']}{cmd}: {'; '.join(row['reasons']) or 'never ran'}\n")
            else:
                self.outstream.write(f"  up-to-date  {row['task']}{cmd}\n")
        self.outstream.write(f"{len(will_run)} of {len(rows)} tasks would run\n")
        return 0


def _format_reasons(reasons) -> list[str]:
    out = []
    for key, value in reasons.items():
        if key in PLAN_REASONS:
            out.append(PLAN_REASONS[key])
        elif key == "missing_target":
            out.append("missing " + ", ".join(Path(v).name for v in value))
        elif key == "changed_file_dep":
            out.append("changed " + ", ".join(Path(v).name for v in value))
        elif key == "missing_file_dep":
            out.append("missing input " + ", ".join(Path(v).name for v in value))
        else:
            out.append(str(key).replace("_", " "))
    return out


def _write_json(stream, data) -> None:
    stream.write(json.dumps(data, indent=1) + "\n")


class ListTasks(List):
    """doit's `list`, plus `--json`: every task (subtasks included) with its doc and status."""

    name = "list"
    doc_purpose = "every task with a one-line description (--status: what is stale)"
    cmd_options = List.cmd_options + (opt_json,)

    def _execute(self, subtasks=False, quiet=True, status=False, private=False, list_deps=False,
                 template=None, sort="name", json=False, pos_args=None):
        if not json:
            return super()._execute(subtasks, quiet, status, private, list_deps, template, sort, pos_args)
        tasks = {task.name: task for task in self.task_list}
        rows = []
        for task in self.task_list:
            row = {"name": task.name, "doc": task.doc, "group": bool(task.task_dep and not task.actions)}
            if task.actions:
                row["status"] = self.dep_manager.get_status(task, tasks).status
            rows.append(row)
        _write_json(self.outstream, rows)
        return 0


class DumpDB(DoitCommand):
    """`dumpdb`: doit's dependency records, read from the sqlite3 database this tool uses."""

    name = "dumpdb"
    doc_purpose = "print what doit recorded for each task (the sqlite3 dependency database)"
    doc_usage = ""
    doc_description = None
    dep_file: Path | None = None

    def execute(self, opt_values, pos_args):
        path = self.dep_file
        if path is None or not path.exists():
            raise UserError(f"no dependency database yet at {path}: nothing has run in this work directory")
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
                rows = conn.execute("select task_id, task_data from doit order by task_id").fetchall()
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{path} is not a readable doit sqlite3 database ({exc}); "
                            "`rk3576-build clean` starts the work directory afresh") from None
        for task_id, data in rows:
            self.outstream.write(f"{task_id} -> {json.dumps(json.loads(data), indent=1, sort_keys=True)}\n")
        return 0

    @property
    def outstream(self):
        return sys.stdout


# name -> doit command class; the CLI registers one command for each.
DOIT_COMMANDS = {cls.get_name(): cls for cls in (Run, ListTasks, Info, Plan, Forget, Ignore, ResetDep, DumpDB)}
# doit commands that change the build state: one build per work directory at a time.
LOCKING = {"run", "forget", "ignore", "reset-dep"}


def run_doit(recipe_tasks: RecipeTasks, name: str, args: list[str], failures: Failures | None = None) -> int:
    """Run doit's command `name` with `args` over the recipe's tasks; returns the tool's exit code.
    `failures`: where to collect what failed (the matrix reports why a variant's build failed)."""
    failures = failures if failures is not None else Failures()
    loader = RecipeLoader(recipe_tasks, failures)
    cmds = PluginDict(DOIT_COMMANDS)
    get_loader({}, loader, cmds)
    cls = DOIT_COMMANDS[name]
    if cls is DumpDB:
        cls = type("DumpDB", (DumpDB,), {"dep_file": recipe_tasks.layout.dep_file})
    # doit's default output stream is the sys.stdout of its import time; use today's.
    config = {"run": {"outfile": sys.stdout}, "BACKEND": {"sqlite3": f"{__name__}:SavingSqliteDB"}}
    command = cls(task_loader=loader, config=config, bin_name=BIN_NAME, cmds=cmds, opt_vals={})
    try:
        code = command.parse_execute(list(args))
    except (CmdParseError, InvalidCommand, InvalidTask, InvalidDodoFile) as exc:
        if isinstance(exc, InvalidCommand):
            exc.bin_name = BIN_NAME
        text = str(exc).strip().splitlines()[0].replace("Error parsing Command: ", "")
        text = re.sub(r"\s*\(parsing options: .*\)(\. Got: .*)?$", "", text)
        raise UserError(f"{name}: {text} (`{BIN_NAME} help {name}` shows its options, "
                        f"`{BIN_NAME} list` the tasks)") from None
    except (DatabaseException, sqlite3.Error, OSError) as exc:
        if is_disk_full(exc):
            where = getattr(exc, "filename", None) or recipe_tasks.layout.dep_file
            raise UserError(disk_full_message(str(exc), where)) from None
        if isinstance(exc, OSError):
            raise
        raise UserError(f"doit's dependency database {recipe_tasks.layout.dep_file}: {exc}") from None
    if failures.disk_full:
        sys.stderr.write(f"{BIN_NAME}: error: {disk_full_message(failures.disk_full)}\n")
    return failures.exit_code(code)


def doit_help(name: str) -> str:
    """doit's own help text for one of its commands (options, usage)."""
    cls = DOIT_COMMANDS[name]
    return cls(task_loader=RecipeLoader(None), config={}, bin_name=BIN_NAME, cmds=PluginDict(DOIT_COMMANDS)).help()
