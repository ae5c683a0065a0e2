"""Every `rk3576-build` command, registered in one place: one class per command, one module each (kas-style).

doit's commands (run, plan, list, info, forget, ignore, reset-dep, dumpdb) are thin classes
over pipeline/runner.py (cli/doit.py), so `--help` and `help <command>` cover them all. The
demo's command lives in the demo package and is registered by name ("module:Class"): nothing
imports the demo until it is asked for.
"""

from __future__ import annotations

import argparse
import difflib
import importlib

from rk3576_build.cli import doit
from rk3576_build.cli.base import Command, Context
from rk3576_build.cli.clean import Clean
from rk3576_build.cli.flash import Flash
from rk3576_build.cli.init import Init
from rk3576_build.cli.matrix import MatrixCommand
from rk3576_build.cli.publish import Publish
from rk3576_build.cli.pull import Pull
from rk3576_build.cli.rebuild_check import RebuildCheck
from rk3576_build.cli.release import Release
from rk3576_build.cli.shell import Shell
from rk3576_build.cli.verify import Verify
from rk3576_build.cli.verify_release import VerifyRelease
from rk3576_build.core.errors import UserError

# Commands of guest packages, imported only when used: ("module:Class", the help line `--help` shows).
LAZY = {"demo": ("rk3576_build.demo.command:DemoCommand",
                 "the offline demo: build, flash and verify a virtual board (sample SDK and driver)")}


class Help(Command):
    name = "help"
    help = "show the help of a command"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("topic", nargs="?", help="a command")

    def run(self, ctx: Context, args: argparse.Namespace) -> int:
        print(get(args.topic).help_text() if args.topic else usage())
        return 0


_OURS: list[type[Command]] = [Init, *doit.COMMANDS, Shell, Flash, Verify, MatrixCommand, Release, VerifyRelease,
                              RebuildCheck, Publish, Pull, Clean, Help]
_CLASSES = {cls.name: cls for cls in _OURS}
# In the order `--help` lists them.
ORDER = ["init", "run", "plan", "list", "info", "shell", "flash", "verify", "matrix", "release", "verify-release",
         "rebuild-check", "publish", "pull", "clean", "demo", "forget", "ignore", "reset-dep", "dumpdb", "help"]


def names() -> list[str]:
    return ORDER


def get(name: str) -> Command:
    """The command called `name`; UserError naming the closest known one otherwise."""
    if name in _CLASSES:
        return _CLASSES[name]()
    if name in LAZY:
        module, _, cls = LAZY[name][0].partition(":")
        command: Command = getattr(importlib.import_module(module), cls)()
        return command
    close = difflib.get_close_matches(name, names(), n=1)
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
    width = max(map(len, names()))
    lines = [f"  {name:<{width}} {LAZY[name][1] if name in LAZY else get(name).help}" for name in names()]
    return GLOBAL_HELP + "\n".join(lines) + "\n\n`rk3576-build help COMMAND` shows a command's options.\n"
