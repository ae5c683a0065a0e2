"""`rk3576-build init`: a project directory with a recipe extending a shipped one."""

from __future__ import annotations

import argparse
from pathlib import Path

from rk3576_build.cli.base import Command, Context
from rk3576_build.core import logs

log = logs.get(__name__)


class Init(Command):
    name = "init"
    help = "make a project directory: a recipe extending a shipped one, its .local.yaml, patches/, .gitignore"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from rk3576_build.config.project import shipped_recipe_names  # lazy: keeps --help fast (yaml, schema)

        parser.add_argument("directory", nargs="?", default=".", type=Path,
                            help="the project directory (default: the current one)")
        parser.add_argument("--from", dest="base", default="myd-lr3576-ubuntu",
                            choices=shipped_recipe_names(),
                            help="the shipped recipe to extend (default: myd-lr3576-ubuntu)")
        parser.add_argument("--name", help="the recipe's name (default: the directory's name)")

    def run(self, ctx: Context, args: argparse.Namespace) -> int:
        from rk3576_build.config.project import init_project  # lazy: keeps --help fast (yaml, schema)

        written = init_project(args.directory, args.base, name=args.name)
        for path in written:
            log.info("wrote %s", path)
        log.info("next: cd %s && rk3576-build plan", args.directory)
        return 0
