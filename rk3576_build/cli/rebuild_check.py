"""`rk3576-build rebuild-check`: build the recipe again in a fresh work directory and compare (docs/release.md).

The second build is `<workdir>.rebuild`, made afresh from the same recipe and lock file (the
recorded inputs), with the build cache and ccache off; every artifact the two manifests list is
compared by sha256, diffoscope reports what differs. Exit 0 bit-identical, 1 a difference.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from rk3576_build.cli.base import Command, Context
from rk3576_build.core import logs
from rk3576_build.core.errors import UserError

if TYPE_CHECKING:  # annotations only: the layout loads the recipe model (see run)
    from rk3576_build.config.layout import Layout

log = logs.get(__name__)


class RebuildCheck(Command):
    name = "rebuild-check"
    help = "build again in a fresh work directory (no cache) and compare every artifact (exit 0 same, 1 differ)"
    description = ("Build the recipe a second time in <workdir>.rebuild, fresh, from the same recipe and lock file, "
                   "without the build cache and ccache, then compare every artifact the two manifests list by "
                   "sha256; diffoscope reports each difference. The build in <workdir> must be finished "
                   "(`rk3576-build run`). Exit 0 when bit-identical, 1 when an artifact differs.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", type=Path, metavar="DIR",
                            help="where rebuild-check.json and diffoscope's reports go (default: "
                                 "<workdir>/rebuild-check)")

    def run(self, ctx: Context, args: argparse.Namespace) -> int:
        # lazy: keeps --help fast (doit, the recipe model, the lock's docker edge)
        from rk3576_build.config.layout import Layout
        from rk3576_build.config.recipe import load
        from rk3576_build.pipeline.lock import lock_workdir
        from rk3576_build.pipeline.runner import run_doit
        from rk3576_build.pipeline.tasks import RecipeTasks
        from rk3576_build.release.rebuild import SUMMARY, compare_work_dirs

        first = ctx.recipe()
        layout = Layout(first)
        if not layout.manifest.is_file():
            raise UserError(f"no finished build in {layout.root} (no {layout.manifest.name}): run "
                            "`rk3576-build run` first, then rebuild-check")
        out = (args.out or layout.rebuild_check).absolute()
        if out.exists() and any(out.iterdir()) and not (out / SUMMARY).is_file():
            raise UserError(f"--out {out} is not empty and holds no earlier rebuild check: choose another directory")
        second_root = layout.rebuild_root()
        loaded = load(dataclasses.replace(ctx.options, workdir=str(second_root), cache=False))
        # The same recorded inputs (the first build's pins), no compiler cache.
        second = dataclasses.replace(loaded, lock_file=first.lock_file,
                                     builder=dataclasses.replace(loaded.builder, ccache=False))
        tasks = RecipeTasks(second, offline=second.offline, echo=logs.get("rk3576_build.build").info)
        with lock_workdir(layout.lock):
            _remove_work_dir(tasks.layout)
            log.info("rebuild-check: building again in %s (fresh, no build cache, no ccache)", second_root)
            with lock_workdir(tasks.layout.lock):
                code = run_doit(tasks, "run", ["manifest"])
            if code != 0:
                raise UserError(f"rebuild-check: the second build failed; logs in {tasks.layout.logs}",
                                exit_code=code)
            if out.exists():
                shutil.rmtree(out)  # an earlier check's reports
            result = compare_work_dirs(layout.root, second_root, out)
        print(result.summary())
        log.info("rebuild-check: %s (the second build stays in %s)", out / SUMMARY, second_root)
        return result.exit_status


def _remove_work_dir(layout: Layout) -> None:
    """Remove an earlier second work directory; refuse a directory that is not one (`clean`'s test)."""
    root = layout.root
    if not root.exists():
        return
    left = {entry.name for entry in root.iterdir()}
    if not (layout.dep_file.exists() or layout.state.exists() or left <= {layout.lock.name}):
        raise UserError(f"{root} exists and is not an rk3576-build work directory: move it away for rebuild-check")
    shutil.rmtree(root)
