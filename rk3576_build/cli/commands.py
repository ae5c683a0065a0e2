"""Every `rk3576-build` command: one registered class each (name, help, arguments, run).

doit's commands (run, list, info, plan, forget, ignore, reset-dep, dumpdb) are
registered here too, as thin classes over runner.py, so `--help` and
`help <command>` cover them all. The demo's command lives in the demo package
and is registered by name, so nothing here imports it until it is asked for.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
from pathlib import Path
from typing import Sequence

from rk3576_build.core import logs
from rk3576_build.core.errors import UserError
from rk3576_build.config.model import Recipe
from rk3576_build.config.recipe import load
from rk3576_build.config.workspace import Options

log = logs.get(__name__)


class Context:
    """What a command gets: the global options, and the recipe they select (loaded on first use)."""

    def __init__(self, options: Options):
        self.options = options
        self._recipe: Recipe | None = None

    def recipe(self) -> Recipe:
        if self._recipe is None:
            self._recipe = load(self.options)
        return self._recipe

    def recipe_tasks(self):
        from rk3576_build.pipeline.tasks import RecipeTasks

        recipe = self.recipe()
        return RecipeTasks(recipe, offline=recipe.offline, echo=logs.get("rk3576_build.build").info)


class Command:
    """One command: `name`, a one-line `help`, its arguments and what it does."""

    name = ""
    help = ""
    description = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this command's arguments (none by default)."""

    def parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=f"rk3576-build {self.name}",
                                         description=self.description or self.help)
        self.add_arguments(parser)
        return parser

    def help_text(self) -> str:
        return self.parser().format_help()

    def parse(self, argv: Sequence[str]) -> argparse.Namespace:
        try:
            return self.parser().parse_args(list(argv))
        except SystemExit as exc:  # argparse printed the usage and the problem, or --help
            if exc.code in (0, None):
                raise
            raise UsageError() from None

    def main(self, ctx: Context, argv: Sequence[str]) -> int:
        return self.run(ctx, self.parse(argv))

    def run(self, ctx: Context, args: argparse.Namespace) -> int:
        raise NotImplementedError


class UsageError(UserError):
    """argparse has already printed what is wrong; exit 2 without another line."""

    def __init__(self):
        super().__init__("")


# --------------------------------------------------------------------------- doit's commands


class DoitCommand(Command):
    """A doit command over the recipe's tasks; doit parses its options (`help <name>` lists them)."""

    def help_text(self) -> str:
        from rk3576_build.pipeline.runner import doit_help

        return doit_help(self.name)

    def main(self, ctx: Context, argv: Sequence[str]) -> int:
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


def _doit_command(name: str, text: str) -> type[DoitCommand]:
    return type(f"Doit_{name}", (DoitCommand,), {"name": name, "help": text})


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


DOIT = [
    _doit_command("run", "build (default task: manifest); `run verify` also flashes and verifies"),
    _doit_command("plan", "show what `run` would execute and why, running nothing (--json)"),
    _doit_command("list", "every task with a one-line description (--status: what is stale; --json)"),
    Info,
    _doit_command("forget", "forget that tasks ran (they run again next time)"),
    _doit_command("ignore", "skip a task on later runs"),
    _doit_command("reset-dep", "record the current state of every task's inputs as up to date"),
    _doit_command("dumpdb", "print what doit recorded for each task (its sqlite3 database)"),
]


# --------------------------------------------------------------------------- our commands


class Clean(Command):
    name = "clean"
    help = "remove the recipe's work directory (unpacked SDK, build outputs, logs, build state)"
    description = ("Remove the recipe's work directory: the unpacked SDK and kernel tree, the build "
                   "outputs, step logs, verify reports and doit's records, so the next run starts "
                   "from the downloads. The download cache and the builder image are kept.")

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="say what would be removed")

    def run(self, ctx, args):
        from rk3576_build.pipeline.lock import lock_workdir
        from rk3576_build.pipeline.tasks import Layout

        layout = Layout(ctx.recipe())
        root = layout.root
        if not root.exists():
            log.info("nothing to clean: %s does not exist", root)
            return 0
        if not (layout.dep_file.exists() or layout.state.exists()):
            raise UserError(f"{root} does not look like an rk3576-build work directory (no "
                            f"{layout.dep_file.name}, no state/); not removing it")
        if args.dry_run:
            print(f"would remove {root}")
            return 0
        with lock_workdir(layout.lock):
            for entry in root.iterdir():
                if entry != layout.lock:
                    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        layout.lock.unlink(missing_ok=True)
        root.rmdir()
        log.info("removed %s (downloads and the builder image are kept)", root)
        return 0


class Verify(Command):
    name = "verify"
    help = "check the driver version on a board's serial console (exit 0 pass, 1 mismatch, 2 unreachable)"

    def help_text(self):
        from rk3576_build.board import verify

        return verify.build_parser().format_help()

    def main(self, ctx, argv):
        from rk3576_build.board import verify
        from rk3576_build.pipeline.tasks import Layout

        recipe = ctx.recipe()
        return verify.main(list(argv), defaults=recipe.section("verify"), default_out=Layout(recipe).verify,
                           chip=recipe.lunch.chip)


class Flash(Command):
    name = "flash"
    help = "flash update.img to a board (upgrade_tool, rkdeveloptool, or the virtual board)"

    def help_text(self):
        from rk3576_build.board import flash

        return flash._parser("upgrade_tool").format_help()

    def main(self, ctx, argv):
        from rk3576_build.board import flash
        from rk3576_build.pipeline.tasks import Layout

        recipe = ctx.recipe()
        layout = Layout(recipe)
        return flash.main(list(argv), defaults=recipe.section("flash"), sdk_dir=layout.sdk, work_dir=layout.root)


class Init(Command):
    name = "init"
    help = "make a project directory: a recipe extending a shipped one, its .local.yaml, patches/, .gitignore"

    def add_arguments(self, parser):
        from rk3576_build.config.project import shipped_recipe_names

        parser.add_argument("directory", nargs="?", default=".", type=Path,
                            help="the project directory (default: the current one)")
        parser.add_argument("--from", dest="base", default="myd-lr3576-ubuntu",
                            choices=shipped_recipe_names(),
                            help="the shipped recipe to extend (default: myd-lr3576-ubuntu)")
        parser.add_argument("--name", help="the recipe's name (default: the directory's name)")

    def run(self, ctx, args):
        from rk3576_build.config.project import init_project

        written = init_project(args.directory, args.base, name=args.name)
        for path in written:
            log.info("wrote %s", path)
        log.info("next: cd %s && rk3576-build plan", args.directory)
        return 0


class Shell(Command):
    name = "shell"
    help = "a shell in the builder container, the SDK mounted as build steps see it (-c CMD: run CMD)"
    description = ("Unpack the SDK and build the builder image if needed (with --kernel, also prepare the "
                   "kernel tree), then open an interactive shell in the builder container with the SDK "
                   "mounted exactly as the steps see it: same path, uid, environment, mounts and compiler "
                   "cache. It runs none of the checks (builder:probe, builder:check, kernel:preflight): "
                   "it is for when they or a step fail. One that failed is named as the shell opens. For "
                   "`./build.sh help`, `./build.sh kconfig`, menuconfig, or poking at a failed step.")

    def add_arguments(self, parser):
        parser.add_argument("-c", dest="command", metavar="CMD",
                            help="run CMD (with bash -c) instead of an interactive shell; exit with its status")
        parser.add_argument("--privileged", action="store_true",
                            help="run the container privileged, like the rootfs steps")
        parser.add_argument("--kernel", action="store_true",
                            help="also prepare the kernel tree first (the driver overlaid, the patches applied)")

    def run(self, ctx, args):
        from rk3576_build.cli.shell import open_shell

        return open_shell(ctx.recipe_tasks(), command=args.command, privileged=args.privileged,
                          kernel=args.kernel)


class Help(Command):
    name = "help"
    help = "show the help of a command"

    def add_arguments(self, parser):
        parser.add_argument("topic", nargs="?", help="a command")

    def run(self, ctx, args):
        if not args.topic:
            print(usage())
            return 0
        print(get(args.topic).help_text())
        return 0


# Commands that live elsewhere, imported only when used ("module:Class").
LAZY = {"demo": "rk3576_build.demo.command:DemoCommand", "matrix": "rk3576_build.cli.matrix:MatrixCommand"}
ORDER = ["init", "run", "plan", "list", "info", "shell", "flash", "verify", "matrix", "clean", "demo",
         "forget", "ignore", "reset-dep", "dumpdb", "help"]
_CLASSES = {cls.name: cls for cls in [*DOIT, Clean, Verify, Flash, Init, Shell, Help]}


def names() -> list[str]:
    return ORDER


def get(name: str) -> Command:
    """The command called `name`; UserError naming the known ones otherwise."""
    if name in _CLASSES:
        return _CLASSES[name]()
    if name in LAZY:
        module, _, cls = LAZY[name].partition(":")
        return getattr(importlib.import_module(module), cls)()
    import difflib

    close = difflib.get_close_matches(name, ORDER, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise UserError(f"unknown command '{name}'{hint}; `rk3576-build --help` lists them")


GLOBAL_HELP = """\
usage: rk3576-build [-v | -q] [--recipe RECIPE] [--workdir DIR] [--offline | --online] [--no-cache] COMMAND [ARGS]

Builds RK3576 firmware from a YAML recipe (docs/recipes.md lists every key).

options:
  --recipe RECIPE  a recipe file or a shipped recipe's name (default: $RK3576_RECIPE, else
                   ./rk3576-build.yaml, ./recipes/myd-lr3576-ubuntu.yaml, the shipped one)
  --workdir DIR    the work directory (default: $RK3576_WORKDIR, else the recipe's workdir)
  --offline        use only the download cache and local files (also RK3576_OFFLINE=1)
  --online         allow downloads even if the recipe or RK3576_OFFLINE say offline
  --no-cache       build every step here: no restore from, no store to the build cache
                   (also RK3576_CACHE=0)
  -v, --verbose    more detail; -q, --quiet: warnings and errors only (-qq: errors only)
  --version        print the version
  (command line > environment > <recipe>.local.yaml > recipe; NO_COLOR turns colour off)

exit codes: 0 success, 1 a failed check or build, 2 a usage, recipe or environment error,
128 + the signal when stopped (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP)

commands:
"""


def usage() -> str:
    lines = []
    for name in ORDER:
        text = _CLASSES[name].help if name in _CLASSES else get(name).help
        lines.append(f"  {name:<10} {text}")
    return GLOBAL_HELP + "\n".join(lines) + "\n\n`rk3576-build help COMMAND` shows a command's options.\n"
