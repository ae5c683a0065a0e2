"""doit's commands (run, plan, list, info, forget, ignore, reset-dep, dumpdb) over the recipe's tasks.

doit parses their options; `help <name>` shows doit's own help for them. The ones that
change the build state hold the work directory's lock.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from rk3576_build.cli.base import Command, Context
from rk3576_build.core.errors import UserError


class DoitCommand(Command):
    """A doit command over the recipe's tasks; doit parses its options (`help <name>` lists them)."""

    def help_text(self) -> str:
        from rk3576_build.pipeline.runner import doit_help  # lazy: keeps --help fast (doit)

        return doit_help(self.name)

    def main(self, ctx: Context, argv: Sequence[str]) -> int:
        # lazy: keeps --help, init and verify fast (doit, and the lock's docker edge)
        from rk3576_build.pipeline.lock import lock_workdir
        from rk3576_build.pipeline.runner import LOCKING, run_doit

        if any(arg in ("-h", "--help") for arg in argv):
            print(self.help_text())
            return 0
        recipe_tasks = ctx.recipe_tasks()
        if self.name not in LOCKING:
            return run_doit(recipe_tasks, self.name, list(argv))
        with lock_workdir(recipe_tasks.layout.lock):
            return run_doit(recipe_tasks, self.name, list(argv))

    def run(self, ctx: Context, args: argparse.Namespace) -> int:
        raise NotImplementedError("doit parses a doit command's arguments (main)")


def doit_command(name: str, text: str) -> type[DoitCommand]:
    """The class of doit's command `name`, with its one-line help."""

    class Doit(DoitCommand):
        pass

    Doit.name, Doit.help = name, text
    Doit.__qualname__ = Doit.__name__ = f"Doit_{name.replace('-', '_')}"
    return Doit


class Info(DoitCommand):
    """doit's `info`, with its exit codes in its help and an unknown task as a usage error."""

    name = "info"
    help = "a task's dependencies and why it would rerun (exit 0: up to date, 1: it would run)"
    EXIT_CODES = """
EXIT STATUS
    0   the task is up to date: `run` would skip it (always 0 with --no-status)
    1   the task would run: its reasons are listed (not an error; for scripts, like a check)
    2   no such task, not exactly one task, or a recipe or environment error
"""

    def help_text(self) -> str:
        return super().help_text().rstrip("\n") + "\n" + self.EXIT_CODES

    def main(self, ctx: Context, argv: Sequence[str]) -> int:
        tasks = [arg for arg in argv if not arg.startswith("-")]
        if len(tasks) == 1 and not any(arg in ("-h", "--help") for arg in argv):
            known = {task["name"] for task in ctx.recipe_tasks().all_tasks()}
            if tasks[0] not in known | {name.partition(":")[0] for name in known}:
                raise UserError(f"info: no task {tasks[0][:80]!r}; `rk3576-build list` shows the tasks")
        return super().main(ctx, argv)


COMMANDS: list[type[DoitCommand]] = [
    doit_command("run", "build (default task: manifest); `run verify` also flashes and verifies"),
    doit_command("plan", "show what `run` would execute and why, running nothing (--json)"),
    doit_command("list", "every task with a one-line description (--status: what is stale; --json)"),
    Info,
    doit_command("forget", "forget that tasks ran (they run again next time)"),
    doit_command("ignore", "skip a task on later runs"),
    doit_command("reset-dep", "record the current state of every task's inputs as up to date"),
    doit_command("dumpdb", "print what doit recorded for each task (its sqlite3 database)"),
]
