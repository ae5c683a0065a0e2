"""`rk3576-build shell`: the builder container as a build step sees it, attached to the terminal."""

from __future__ import annotations

from . import logs
from .tasks import RecipeTasks, read_stamp
from .workspace import work_lock

log = logs.get(__name__)


def step_inputs(recipe_tasks: RecipeTasks) -> list[str]:
    """The tasks whose results the build steps read (sources, kernel tree, builder image), steps excluded."""
    tasks = recipe_tasks.all_tasks()
    producers = {str(target): task["name"] for task in tasks for target in task.get("targets", [])}
    wanted: list[str] = []
    for task in tasks:
        if not task["name"].startswith("step:"):
            continue
        for dep in task.get("file_dep", []):
            name = producers.get(str(dep))
            if name and not name.startswith("step:") and name not in wanted:
                wanted.append(name)
    return wanted


def open_shell(recipe_tasks: RecipeTasks, *, command: str | None = None, privileged: bool = False) -> int:
    """Bring the step inputs up to date, then run bash (or `bash -c command`) in the builder; its status."""
    from .buildsh import _sdk_mount
    from .container import Mount, run_interactive
    from .runner import run_doit

    layout = recipe_tasks.layout
    with work_lock(layout.lock):
        code = run_doit(recipe_tasks, "run", step_inputs(recipe_tasks))
    if code != 0:
        return code
    image = read_stamp(layout.stamp("builder"))["tag"]
    real, inside = _sdk_mount(layout.sdk)
    mounts = [Mount(real, inside), *recipe_tasks._mounts()]
    argv = ["bash", "-c", command] if command is not None else ["bash", "-l"]
    if command is None:
        log.info("shell in %s at %s (exit to leave)", image, inside)
    return run_interactive(image, argv, workdir=inside, mounts=mounts, env=dict(recipe_tasks.recipe.builder.env),
                           privileged=privileged, warn=log.warning)
