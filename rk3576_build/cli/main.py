"""`rk3576-build`: global options, logging, one command from the registry, and honest exit codes.

Exit codes: 0 success; 1 a failed check or build; 2 a usage, recipe or environment
error (including a full disk); 128 + the signal when stopped: 130 Ctrl-C, 143 SIGTERM,
129 SIGHUP (the running step's container is removed, the step is not recorded as done).
A failed task keeps its own code (verify: 1 mismatch, 2 console unreachable). A closed
output pipe ends quietly. cli/base.py's `finish` turns each ending into its line and code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rk3576_build import __version__
from rk3576_build.cli import commands
from rk3576_build.cli.base import Context, finish
from rk3576_build.core import logs, signals
from rk3576_build.core.errors import UserError

# Global options taken wherever they stand (long names only: doit's own -v must reach doit).
_ANYWHERE = {"--recipe": "recipe", "--workdir": "workdir"}


def version() -> str:
    from importlib import metadata  # lazy: keeps --help fast (only --version asks)

    try:
        return metadata.version("rk3576-build")
    except metadata.PackageNotFoundError:
        return __version__


def split_global_options(argv: Sequence[str]) -> tuple[dict, list[str]]:
    """Take --recipe/--workdir/--offline/--online/--no-cache out of argv wherever they stand.

    Returns the settings given (the fields of config.workspace.Options) and the rest of argv.
    """
    given: dict = {}
    rest: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, eq, value = arg.partition("=")
        if name in _ANYWHERE:
            if not eq:
                if not args:
                    raise UserError(f"{name} needs a value, e.g. {name} "
                                    + ("recipes/demo.yaml" if name == "--recipe" else "build/mine"))
                value = args.pop(0)
            given[_ANYWHERE[name]] = value
        elif arg in ("--offline", "--online"):
            given["offline"] = arg == "--offline"
        elif arg == "--no-cache":
            given["cache"] = False
        elif arg == "--":
            rest.extend(args)
            break
        else:
            rest.append(arg)
    return given, rest


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rk3576-build", add_help=False)
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("--version", action="store_true")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("-q", "--quiet", action="count", default=0)
    parser.add_argument("command", nargs="?")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def run(argv: Sequence[str]) -> int:
    given, rest = split_global_options(argv)
    args, unknown = _parser().parse_known_args(rest)
    if unknown:  # an option before the command that is not ours
        raise UserError(f"unknown option {unknown[0]}; `rk3576-build --help` lists the options")
    logs.setup(args.verbose - args.quiet)
    if args.version:
        print(f"rk3576-build {version()}")
        return 0
    if args.help or not args.command:
        print(commands.usage(), end="")
        return 0 if args.help else 2
    command = commands.get(args.command)
    return command.main(Context(given), args.args)


def main(argv: Sequence[str] | None = None) -> int:
    # SIGTERM and SIGHUP (a closed terminal) unwind like Ctrl-C: containers, QEMU and the lock are released.
    signals.install()
    return finish(lambda: run(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
