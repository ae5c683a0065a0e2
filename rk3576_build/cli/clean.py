"""`rk3576-build clean`: remove the recipe's work directory, keeping the downloads and the builder image."""

from __future__ import annotations

import argparse
import shutil

from rk3576_build.cli.base import Command, Context
from rk3576_build.core import logs
from rk3576_build.core.errors import UserError

log = logs.get(__name__)


class Clean(Command):
    name = "clean"
    help = "remove the recipe's work directory (unpacked SDK, build outputs, logs, build state)"
    description = ("Remove the recipe's work directory: the unpacked SDK and kernel tree, the build "
                   "outputs, step logs, verify reports and doit's records, so the next run starts "
                   "from the downloads. The download cache and the builder image are kept.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="say what would be removed")

    def run(self, ctx: Context, args: argparse.Namespace) -> int:
        # lazy: keeps --help fast (the layout loads the recipe model; the lock, the docker edge)
        from rk3576_build.config.layout import Layout
        from rk3576_build.pipeline.lock import lock_workdir

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
                if entry == layout.lock:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        layout.lock.unlink(missing_ok=True)
        root.rmdir()
        log.info("removed %s (downloads and the builder image are kept)", root)
        return 0
