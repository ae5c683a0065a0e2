"""What a command is (kas-style: a class with a name, a help line, its arguments and `run`), what it runs in,
and the one place that turns how a command ended into its message and exit code."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rk3576_build.core import logs, signals
from rk3576_build.core.errors import UserError

if TYPE_CHECKING:  # annotations only: the modules themselves load on first use (see Context)
    from rk3576_build.config.model import Recipe
    from rk3576_build.config.workspace import Options
    from rk3576_build.pipeline.tasks import RecipeTasks

log = logs.get("rk3576_build")


class Context:
    """What a command gets: the global options, and the recipe they select (loaded on first use)."""

    def __init__(self, given: dict | None = None):
        self.given = dict(given or {})  # the global options the command line gave (Options' fields)
        self._options: Options | None = None
        self._recipe: Recipe | None = None

    @property
    def options(self) -> Options:
        if self._options is None:
            # lazy: keeps --help fast (the settings module loads yaml and the recipe model)
            from rk3576_build.config.workspace import Options

            self._options = Options(**self.given)
        return self._options

    def recipe(self) -> Recipe:
        if self._recipe is None:
            from rk3576_build.config.recipe import load  # lazy: keeps --help fast

            self._recipe = load(self.options)
        return self._recipe

    def recipe_tasks(self) -> RecipeTasks:
        from rk3576_build.pipeline.tasks import RecipeTasks  # lazy: keeps --help, init and verify fast (doit)

        recipe = self.recipe()
        return RecipeTasks(recipe, offline=recipe.offline, echo=logs.get("rk3576_build.build").info)


class Command:
    """One command: `name`, a one-line `help`, its arguments (`add_arguments`) and what it does (`run`)."""

    name = ""
    help = ""
    description = ""

    def configure(self, ctx: Context) -> None:
        """Take what the arguments' defaults need from the recipe, before parsing (nothing by default)."""

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
        self.configure(ctx)
        return self.run(ctx, self.parse(argv))

    def run(self, ctx: Context, args: argparse.Namespace) -> int:
        raise NotImplementedError


class UsageError(UserError):
    """argparse has already printed what is wrong; exit 2 without another line."""

    def __init__(self) -> None:
        super().__init__("")


# --------------------------------------------------------------------------- how a command ends


def print_error(text: str) -> None:
    """The one error line, `rk3576-build: error: ...` on stderr (core/logs.py's format, set up if it is not yet)."""
    if not log.handlers:
        logs.setup()
    log.error(text)


def finish(call: Callable[[], int]) -> int:
    """Run a command; its exit code. Errors end as one line and a code: 2 for a usage, recipe or
    environment error (a full disk too), a UserError's own code (verify: 1 or 2), 128 + the signal
    when stopped (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP); a closed output pipe ends quietly with 0."""
    try:
        code = call()
        sys.stdout.flush()
        return code
    except UsageError:
        return 2
    except UserError as exc:
        print_error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print_error(f"{signals.describe(exc)}; the interrupted step is not recorded as done, "
                    "the next run starts again there")
        return signals.exit_code(exc)
    except BrokenPipeError:
        return _closed_pipe()
    except OSError as exc:
        # lazy: keeps --help fast (the runner imports doit); only a failed run gets here
        from rk3576_build.pipeline.runner import disk_full_message, is_disk_full

        if not is_disk_full(exc):
            raise
        print_error(disk_full_message(str(exc), exc.filename))
        return 2


def _closed_pipe() -> int:
    """The reader went away (`rk3576-build plan | head -1`): not an error, and nothing more to say."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # Python's final flush must not fail again
    return 0
