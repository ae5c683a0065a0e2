"""doit entry point: `doit` here runs the same tasks as `rk3576-build`.

Pick the recipe with `doit <command> recipe=recipes/demo.yaml` or $RK3576_RECIPE;
the tasks themselves come from rk3576_build (tasks.py), not from this file.
"""

from doit import get_var

from rk3576_build.cli import default_recipe_path, load, task_creators
from rk3576_build.tasks import RecipeTasks

_recipe_tasks = RecipeTasks(load(get_var("recipe", str(default_recipe_path()))))
DOIT_CONFIG = _recipe_tasks.doit_config()
globals().update(task_creators(_recipe_tasks))
