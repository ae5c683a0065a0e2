"""Which recipe, which work directory, online or not: the settings, decided in one place.

Precedence, highest first: the command line, the environment, the recipe's
`<stem>.local.yaml`, the recipe itself.

| setting  | command line            | environment        | recipe / .local.yaml | otherwise                  |
|----------|-------------------------|--------------------|----------------------|----------------------------|
| recipe   | --recipe FILE or NAME   | RK3576_RECIPE      | -                    | ./rk3576-build.yaml, ./recipes/myd-lr3576-ubuntu.yaml, the shipped one |
| workdir  | --workdir DIR           | RK3576_WORKDIR     | workdir:             | ../build/<name> beside the recipe; for a shipped recipe ./build/<name> |
| offline  | --offline / --online    | RK3576_OFFLINE=1/0 | offline:             | false                      |
| cache    | --no-cache              | RK3576_CACHE=0/1   | cache.enabled:       | true (used when cache: names one) |
| downloads| -                       | RK3576_DL_DIR      | downloads:           | ~/.cache/rk3576-build/downloads |

(RK3576_DL_DIR and RK3576_OFFLINE=1 are applied by `recipe.load_recipe` already.)
A shipped recipe never gets its work directory or lock file inside the tool's
own files: they go under the current directory instead.
"""

from __future__ import annotations

import dataclasses
import fcntl
import importlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import yaml

from rk3576_build.core.errors import UserError
from rk3576_build.config.model import Recipe
from rk3576_build.config.recipe import load_recipe
from rk3576_build.config.shipped import is_installed, is_shipped, shipped_path

DEFAULT_RECIPE = "myd-lr3576-ubuntu"
PROJECT_RECIPE = "rk3576-build.yaml"  # what `init` writes; found in the current directory
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclasses.dataclass
class Options:
    """The settings a command line can give (None: not given)."""

    recipe: str | None = None
    workdir: str | None = None
    offline: bool | None = None
    cache: bool | None = None  # --no-cache: False


def env_flag(name: str) -> bool | None:
    """An on/off environment variable: True, False, or None when unset or empty."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UserError(f"{name}={os.environ[name]!r}: use 1 or 0 (true/false, yes/no, on/off)")


def recipe_path(given: str | None = None) -> Path:
    """The recipe file: --recipe (a path, or a shipped recipe's name), $RK3576_RECIPE, else the defaults."""
    given = given or os.environ.get("RK3576_RECIPE")
    if given:
        path = Path(given)
        shipped = shipped_path("recipes", f"{given}.yaml")
        if not path.is_file() and "/" not in given and shipped.is_file():
            return shipped
        return path
    for candidate in (Path(PROJECT_RECIPE), Path("recipes") / f"{DEFAULT_RECIPE}.yaml"):
        if candidate.is_file():
            return candidate
    return shipped_path("recipes", f"{DEFAULT_RECIPE}.yaml")


def _local_sets_workdir(recipe: Recipe) -> bool:
    if recipe.local_file is None:
        return False
    data = yaml.safe_load(recipe.local_file.read_text(encoding="utf-8"))
    return isinstance(data, dict) and "workdir" in data


def apply_settings(recipe: Recipe, options: Options) -> Recipe:
    """The recipe with the command line's and the environment's settings on top."""
    changes: dict = {}
    workdir = options.workdir or os.environ.get("RK3576_WORKDIR")
    shipped = is_shipped(recipe.path)
    if workdir:
        changes["workdir"] = Path(os.path.abspath(os.path.expanduser(workdir)))
    elif shipped and not _local_sets_workdir(recipe):
        changes["workdir"] = Path.cwd() / "build" / recipe.name
    if shipped and is_installed():
        changes["lock_file"] = changes.get("workdir", recipe.workdir) / f"{recipe.name}.lock.yaml"
    offline = options.offline if options.offline is not None else env_flag("RK3576_OFFLINE")
    if offline is not None:
        changes["offline"] = offline
    cache = options.cache if options.cache is not None else env_flag("RK3576_CACHE")
    if cache is not None:
        changes["cache"] = dataclasses.replace(recipe.cache, enabled=cache)
    return dataclasses.replace(recipe, **changes) if changes else recipe


class RuntimeVariables(Mapping):
    """Recipe variables the tool fills when a recipe names one the environment does not set:
    this machine's facts, found when the recipe is loaded, never written into a recipe."""

    # name -> "module:function() -> str | None", imported only when a recipe asks for the name
    # (so the demo package stays off the build path of every other recipe).
    PROVIDERS = {"BOARD_KIT": "rk3576_build.demo.board_kit:cached_kit_root"}

    def __init__(self) -> None:
        self._values: dict[str, str | None] = {}

    def __getitem__(self, name: str) -> str:
        if name not in self.PROVIDERS:
            raise KeyError(name)
        if name not in self._values:
            module, _, function = self.PROVIDERS[name].partition(":")
            self._values[name] = getattr(importlib.import_module(module), function)()
        if self._values[name] is None:
            raise KeyError(name)
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.PROVIDERS)

    def __len__(self) -> int:
        return len(self.PROVIDERS)


def load(options: Options) -> Recipe:
    """Load the recipe the options name and apply the settings above."""
    recipe = load_recipe(recipe_path(options.recipe), variables=RuntimeVariables())
    return apply_settings(recipe, options)


@contextmanager
def work_lock(lock: Path) -> Iterator[None]:
    """Hold an exclusive lock (a file in the work directory): one build per work directory at a time.

    Taking it first removes the containers a killed run of this work directory left running
    (container.owned_by), so two containers never build one tree.
    """
    workdir = lock.parent
    workdir.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another rk3576-build is using {workdir} (lock {lock}); "
                            "wait for it to finish") from None
        from rk3576_build.core import logs
        from rk3576_build.build.container import owned_by

        with owned_by(workdir, logs.get(__name__).warning):
            yield
