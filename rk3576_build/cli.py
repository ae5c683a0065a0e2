"""`rk3576-build`: doit's own commands over a recipe's tasks, plus plan, verify, flash and demo."""

from __future__ import annotations

import fcntl
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from doit.cmd_base import DoitCmdBase, TaskLoader2
from doit.doit_cmd import DoitMain
from doit.loader import load_tasks

from .errors import UserError
from .recipe import Recipe, load_recipe
from .tasks import RecipeTasks

DEFAULT_RECIPE = "myd-lr3576-ubuntu.yaml"
# doit commands that change the build state: one build per work directory at a time.
LOCKING_COMMANDS = {"run", "clean", "forget", "ignore", "reset-dep", "strace"}
GROUP_DOCS = {
    "fetch": "download every source into the cache and verify it",
    "unpack": "unpack every source into the work directory",
    "kernel": "prepare the kernel tree: baseline, driver overlay, patches, preflight",
    "step": "run every build.sh step in the builder container",
}

USAGE = f"""usage: rk3576-build [--recipe RECIPE] [--offline] COMMAND [ARGS]

Builds RK3576 firmware from a YAML recipe (see docs/recipes.md for every key).

options:
  --recipe RECIPE  the recipe file (default: $RK3576_RECIPE, else recipes/{DEFAULT_RECIPE});
                   a <recipe>.local.yaml beside it is merged on top
  --offline        use only the download cache and local files (also RK3576_OFFLINE=1)

commands:
  run [TASK...]    build (default task: manifest); `run verify` also flashes and verifies
  plan [TASK...]   show what `run` would execute and why, running nothing
  list             every task with a one-line description (`list --status` shows what is stale)
  info TASK        a task's dependencies and why it would rerun
  forget, clean, ignore, dumpdb, reset-dep: doit's own (`rk3576-build help <command>`)
  verify [...]     check the driver version on a board's serial console (`verify --help`)
  flash [...]      flash update.img to a board (`flash --help`)
  demo [...]       the offline demo: build, flash and verify a virtual board (`demo --help`)
"""


def default_recipe_path() -> Path:
    """$RK3576_RECIPE, else ./recipes/<default>, else the recipes beside this package."""
    env = os.environ.get("RK3576_RECIPE")
    if env:
        return Path(env)
    local = Path("recipes") / DEFAULT_RECIPE
    if local.exists():
        return local
    return Path(__file__).resolve().parent.parent / "recipes" / DEFAULT_RECIPE


def recipe_variables() -> dict[str, str]:
    """Variables the tool provides to recipes (the environment still wins)."""
    from .demo.board_kit import find_kit

    kit = find_kit()
    return {"BOARD_KIT": str(kit.root)} if kit else {}


def load(recipe_path: str | Path) -> Recipe:
    return load_recipe(recipe_path, variables=recipe_variables())


def task_creators(recipe_tasks: RecipeTasks) -> dict:
    """doit `task_*` creators for a recipe: `fetch:sdk` becomes subtask `sdk` of `fetch`."""
    groups: dict[str, list[dict]] = defaultdict(list)
    singles: dict[str, dict] = {}
    for task in recipe_tasks.all_tasks():
        base, _, sub = task["name"].partition(":")
        if sub:
            groups[base].append({**task, "name": sub})
        else:
            singles[base] = {key: value for key, value in task.items() if key != "name"}

    def group_creator(items):
        def creator():
            yield from items
        return creator

    def single_creator(item):
        def creator():
            return item
        return creator

    creators = {}
    for base, items in groups.items():
        creators[f"task_{base}"] = group_creator(items)
        creators[f"task_{base}"].__doc__ = GROUP_DOCS.get(base, base)
    for base, item in singles.items():
        creators[f"task_{base}"] = single_creator(item)
    return creators


class RecipeLoader(TaskLoader2):
    """Hands doit the tasks of one recipe (loaded and validated before doit starts)."""

    def __init__(self, recipe_tasks: RecipeTasks):
        super().__init__()
        self.recipe_tasks = recipe_tasks

    def load_doit_config(self):
        self.recipe_tasks.layout.root.mkdir(parents=True, exist_ok=True)  # doit's db lives there
        return self.recipe_tasks.doit_config()

    def load_tasks(self, cmd, pos_args):
        return load_tasks(task_creators(self.recipe_tasks), self.cmd_names, cmd.execute_tasks)


def take_work_lock(recipe_tasks: RecipeTasks):
    """Hold an exclusive lock on the work directory for this process's lifetime."""
    layout = recipe_tasks.layout
    layout.root.mkdir(parents=True, exist_ok=True)
    handle = open(layout.lock, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError(f"another rk3576-build is using {layout.root} (lock {layout.lock}); "
                        "wait for it to finish") from None
    return handle


class Plan(DoitCmdBase):
    """`plan`: what `run` would execute, and why, without executing anything."""

    name = "plan"
    doc_purpose = "show what `run` would execute and why, without running anything"
    doc_usage = "[TASK ...]"
    doc_description = None

    def _execute(self, pos_args=None):
        tasks = {task.name: task for task in self.task_list}
        producers = {str(target): task.name for task in self.task_list for target in task.targets}
        wanted = self.sel_tasks or list(tasks)
        order: list[str] = []

        def visit(name: str) -> None:
            if name in order or name not in tasks:
                return
            task = tasks[name]
            for dep in list(task.task_dep) + [producers.get(str(f)) for f in task.file_dep]:
                if dep:
                    visit(dep)
            order.append(name)

        for name in wanted:
            if name not in tasks:
                raise UserError(f"plan: no task named '{name}' (see `rk3576-build list`)")
            visit(name)
        will_run: set[str] = set()
        for name in order:
            task = tasks[name]
            if not task.actions:
                continue
            status = self.dep_manager.get_status(task, tasks, get_log=True)
            upstream = sorted({producers[str(f)] for f in task.file_dep
                               if producers.get(str(f)) in will_run})
            reasons = _format_reasons(status.reasons)
            if upstream:
                reasons.append("after " + ", ".join(upstream) + " reruns")
            if status.status == "up-to-date" and not upstream:
                self.outstream.write(f"  up-to-date  {name}\n")
                continue
            will_run.add(name)
            self.outstream.write(f"  RUN         {name}: {'; '.join(reasons) or 'never ran'}\n")
        self.outstream.write(f"{len(will_run)} of {sum(1 for n in order if tasks[n].actions)} "
                             "tasks would run\n")
        return 0


def _format_reasons(reasons) -> list[str]:
    out = []
    labels = {"uptodate_false": "recipe section changed, output missing, or never ran",
              "has_no_dependencies": "no dependencies",
              "checker_changed": "dependency checker changed"}
    for key, value in reasons.items():
        if key in labels:
            out.append(labels[key])
        elif key == "missing_target":
            out.append("missing " + ", ".join(Path(v).name for v in value))
        elif key == "changed_file_dep":
            out.append("changed " + ", ".join(Path(v).name for v in value))
        elif key == "missing_file_dep":
            out.append("missing input " + ", ".join(Path(v).name for v in value))
        else:
            out.append(str(key).replace("_", " "))
    return out


class RkDoitMain(DoitMain):
    """doit's main with the `plan` command added."""

    BIN_NAME = "rk3576-build"

    def get_cmds(self):
        cmds = super().get_cmds()
        cmds[Plan.name] = Plan
        return cmds


def split_global_options(argv: Sequence[str]) -> tuple[dict, list[str]]:
    """Take --recipe/--offline out of argv wherever they stand; return (options, the rest)."""
    options = {"recipe": None, "offline": os.environ.get("RK3576_OFFLINE", "") in ("1", "true", "yes")}
    rest: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--recipe":
            if not args:
                raise UserError("--recipe needs a file, e.g. --recipe recipes/demo.yaml")
            options["recipe"] = args.pop(0)
        elif arg.startswith("--recipe="):
            options["recipe"] = arg.split("=", 1)[1]
        elif arg == "--offline":
            options["offline"] = True
        elif arg == "--":
            rest.extend(args)
            break
        else:
            rest.append(arg)
    return options, rest


def run(argv: Sequence[str]) -> int:
    options, rest = split_global_options(argv)
    if not rest or rest[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if rest else 2
    command = rest[0]
    if command == "demo":
        from .demo import command as demo

        return demo.main(rest[1:])
    recipe = load(options["recipe"] or default_recipe_path())
    recipe_tasks = RecipeTasks(recipe, offline=options["offline"])
    if command == "verify":
        from . import verify

        return verify.main(rest[1:], defaults=recipe.section("verify"),
                           default_out=recipe_tasks.layout.verify)
    if command == "flash":
        from . import flash

        return flash.main(rest[1:], defaults=recipe.section("flash"),
                          sdk_dir=recipe_tasks.layout.sdk, work_dir=recipe_tasks.layout.root)
    lock = take_work_lock(recipe_tasks) if command in LOCKING_COMMANDS else None
    try:
        return RkDoitMain(RecipeLoader(recipe_tasks)).run(rest)
    finally:
        if lock:
            lock.close()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except UserError as exc:
        print(f"rk3576-build: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("rk3576-build: interrupted; the interrupted step is not recorded as done, "
              "the next run starts again there", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
