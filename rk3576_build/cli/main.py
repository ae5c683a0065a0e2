"""`rk3576-build`: global options, logging, one command from the registry, and honest exit codes.

Exit codes: 0 success; 1 a failed check or build; 2 a usage, recipe or environment
error (including a full disk); 128 + the signal when stopped: 130 Ctrl-C, 143 SIGTERM,
129 SIGHUP (the running step's container is removed, the step is not recorded as done).
A failed task keeps its own code (verify: 1 mismatch, 2 console unreachable). A closed
output pipe ends quietly.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from importlib import metadata
from typing import Sequence

from rk3576_build.cli import commands
from rk3576_build.core import logs
from rk3576_build.core.errors import UserError, raise_stopped
from rk3576_build.config.workspace import Options

log = logs.get("rk3576_build")
# Global options taken wherever they stand (long names only: doit's own -v must reach doit).
_ANYWHERE = {"--recipe": "recipe", "--workdir": "workdir"}


def version() -> str:
    try:
        return metadata.version("rk3576-build")
    except metadata.PackageNotFoundError:
        from rk3576_build import __version__

        return __version__


def split_global_options(argv: Sequence[str]) -> tuple[Options, list[str]]:
    """Take --recipe/--workdir/--offline/--online out of argv wherever they stand."""
    options = Options()
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
            setattr(options, _ANYWHERE[name], value)
        elif arg in ("--offline", "--online"):
            options.offline = arg == "--offline"
        elif arg == "--no-cache":
            options.cache = False
        elif arg == "--":
            rest.extend(args)
            break
        else:
            rest.append(arg)
    return options, rest


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
    options, rest = split_global_options(argv)
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
    return command.main(commands.Context(options), args.args)


def main(argv: Sequence[str] | None = None) -> int:
    # SIGTERM and SIGHUP (a closed terminal) unwind like Ctrl-C: containers, QEMU and the lock are released.
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, raise_stopped)
    try:
        code = run(sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()
        return code
    except commands.UsageError:
        return 2
    except UserError as exc:
        _error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        _error(f"{what}; the interrupted step is not recorded as done, the next run starts again there")
        return 128 + signum
    except BrokenPipeError:
        return _closed_pipe()
    except OSError as exc:
        from rk3576_build.pipeline.runner import disk_full_message, is_disk_full

        if not is_disk_full(exc):
            raise
        _error(disk_full_message(str(exc), exc.filename))
        return 2


def _error(text: str) -> None:
    if logs.get("rk3576_build").handlers:
        log.error(text)
    else:
        print(f"rk3576-build: error: {text}", file=sys.stderr)


def _closed_pipe() -> int:
    """The reader went away (`rk3576-build plan | head -1`): not an error, and nothing more to say."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # Python's final flush must not fail again
    return 0


if __name__ == "__main__":
    sys.exit(main())
