"""`rk3576-build shell`: the builder container as a build step sees it, attached to the terminal.

A shell is for the moment the build does not work, so it needs only what a shell needs
(the SDK unpacked, the kernel tree if asked for, the builder image): never the probe,
the host checks or preflight, whose failures it reports in one line each as it opens.
"""

from __future__ import annotations

from rk3576_build.core import logs
from rk3576_build.build.buildsh import _sdk_mount
from rk3576_build.build.container import Mount, run_interactive
from rk3576_build.pipeline.lock import lock_workdir
from rk3576_build.pipeline.runner import run_doit
from rk3576_build.pipeline.stages import GATES, read_failure
from rk3576_build.pipeline.tasks import RecipeTasks, read_stamp

log = logs.get(__name__)


def shell_inputs(*, kernel: bool = False) -> list[str]:
    """The tasks a shell waits for: the SDK tree and the builder image; with `kernel`, the prepared
    kernel tree (driver overlaid, patches applied) too. No gate: the shell must open when they fail."""
    return ["unpack:sdk", *(["kernel:patches"] if kernel else []), "builder:image"]


def gate_failures(recipe_tasks: RecipeTasks) -> list[str]:
    """One line per gate (probe, host check, preflight) whose last run failed."""
    return [f"{task} failed: {reason}; the shell is open anyway"
            for task in GATES if (reason := read_failure(recipe_tasks.layout, task))]


def open_shell(recipe_tasks: RecipeTasks, *, command: str | None = None, privileged: bool = False,
               kernel: bool = False) -> int:
    """Bring the shell's inputs up to date, then run bash (or `bash -c command`) in the builder; its status."""
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
