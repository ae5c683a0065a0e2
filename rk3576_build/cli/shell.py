"""`rk3576-build shell`: the builder container as a build step sees it, attached to the terminal.

A shell is for the moment the build does not work, so it needs only what a shell needs
(the SDK unpacked, the kernel tree if asked for, the builder image): never the probe,
the host checks or preflight, whose failures it reports in one line each as it opens.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rk3576_build.cli.base import Command, Context
from rk3576_build.core import logs

if TYPE_CHECKING:  # annotations only
    from rk3576_build.pipeline.tasks import RecipeTasks

log = logs.get(__name__)


def shell_inputs(*, kernel: bool = False) -> list[str]:
    """The tasks a shell waits for: the SDK tree and the builder image; with `kernel`, the prepared
    kernel tree (driver overlaid, patches applied) too. No gate: the shell must open when they fail."""
    return ["unpack:sdk", *(["kernel:patches"] if kernel else []), "builder:image"]


def gate_failures(recipe_tasks: RecipeTasks) -> list[str]:
    """One line per gate (probe, host check, preflight) whose last run failed."""
    from rk3576_build.pipeline.stamps import GATES, read_failure  # lazy: keeps --help fast

    return [f"{task} failed: {reason}; the shell is open anyway"
            for task in GATES if (reason := read_failure(recipe_tasks.layout, task))]


def open_shell(recipe_tasks: RecipeTasks, *, command: str | None = None, privileged: bool = False,
               kernel: bool = False) -> int:
    """Bring the shell's inputs up to date, then run bash (or `bash -c command`) in the builder; its status."""
    # lazy: keeps --help, init and verify fast (docker, doit)
    from rk3576_build.build.buildsh import _sdk_mount
    from rk3576_build.build.container import Mount, run_interactive
    from rk3576_build.pipeline.lock import lock_workdir
    from rk3576_build.pipeline.runner import run_doit
    from rk3576_build.pipeline.stamps import read_stamp

    layout = recipe_tasks.layout
    with lock_workdir(layout.lock):
        code = run_doit(recipe_tasks, "run", shell_inputs(kernel=kernel))
    if code != 0:
        return code
    image = read_stamp(layout.stamp("builder"))["tag"]
    real, inside = _sdk_mount(layout.sdk)
    mounts = [Mount(real, inside), *recipe_tasks._mounts()]
    argv = ["bash", "-c", command] if command is not None else ["bash", "-l"]
    for line in gate_failures(recipe_tasks):
        log.warning(line)
    if command is None:
        log.info("shell in %s at %s (exit to leave)", image, inside)
    return run_interactive(image, argv, workdir=inside, mounts=mounts, env=dict(recipe_tasks.recipe.builder.env),
                           privileged=privileged, warn=log.warning)


class Shell(Command):
    name = "shell"
    help = "a shell in the builder container, the SDK mounted as build steps see it (-c CMD: run CMD)"
    description = ("Unpack the SDK and build the builder image if needed (with --kernel, also prepare the "
                   "kernel tree), then open an interactive shell in the builder container with the SDK "
                   "mounted exactly as the steps see it: same path, uid, environment, mounts and compiler "
                   "cache. It runs none of the checks (builder:probe, builder:check, kernel:preflight): "
                   "it is for when they or a step fail. One that failed is named as the shell opens. For "
                   "`./build.sh help`, `./build.sh kconfig`, menuconfig, or poking at a failed step.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-c", dest="command", metavar="CMD",
                            help="run CMD (with bash -c) instead of an interactive shell; exit with its status")
        parser.add_argument("--privileged", action="store_true",
                            help="run the container privileged, like the rootfs steps")
        parser.add_argument("--kernel", action="store_true",
                            help="also prepare the kernel tree first (the driver overlaid, the patches applied)")

    def run(self, ctx: Context, args: argparse.Namespace) -> int:
        return open_shell(ctx.recipe_tasks(), command=args.command, privileged=args.privileged,
                          kernel=args.kernel)
