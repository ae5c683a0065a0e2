"""doit entry point: `doit` here runs the same tasks as `rk3576-build`.

Pick the recipe with `doit <command> recipe=recipes/demo.yaml` or $RK3576_RECIPE
(the same settings as the command line: workspace.py); the tasks themselves come
from rk3576_build (tasks.py), not from this file.
"""

from doit import get_var

from rk3576_build.config.recipe import load
from rk3576_build.config.workspace import Options
from rk3576_build.pipeline.runner import task_creators as _creators  # (a task_* name would be a task)
from rk3576_build.pipeline.tasks import RecipeTasks

_recipe = load(Options(recipe=get_var("recipe")))
_recipe_tasks = RecipeTasks(_recipe, offline=_recipe.offline)
DOIT_CONFIG = _recipe_tasks.doit_config()
globals().update(_creators(_recipe_tasks))
