"""`rk3576-build init`: a project directory, the way kas users keep theirs.

    rk3576-build.yaml         extends a shipped recipe; your changes go here (commit it)
    rk3576-build.local.yaml   this machine's settings: SDK location, console (git-ignored)
    rk3576-build.lock.yaml    written on the first fetch: the pinned sha256s (commit it)
    patches/                  the kernel patch series (a copy of the shipped one)
    .gitignore                build/ and *.local.yaml
    build/                    the work directory
"""

from __future__ import annotations

import importlib
import re
import shutil
from pathlib import Path

import yaml

from rk3576_build.config.recipe import load_recipe, shipped_recipes
from rk3576_build.config.shipped import shipped_path
from rk3576_build.config.workspace import PROJECT_RECIPE
from rk3576_build.core.errors import UserError

LOCAL_TEMPLATE = """\
# This machine's settings for {recipe}, merged on top of it; not committed (.gitignore).
# Examples:
# sdk:
#   url: /data/myir/MYD-LR3576-Distribution-L6.1.75-V1.1.0.tar.gz
# verify:
#   console: /dev/ttyUSB0
"""
GITIGNORE = "build/\n*.local.yaml\n"
# Shipped recipes that need more than a copy: "module:function(directory) -> recipe keys".
EXTRA_SETTINGS = {"demo": "rk3576_build.demo.command:project_settings"}


def shipped_recipe_names() -> list[str]:
    return [path.stem for path in shipped_recipes()]


def _name(directory: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", directory.resolve().name).strip("-.") or "project"
    return name if name[0].isalnum() else f"p{name}"


def init_project(directory: Path, base: str, name: str | None = None) -> list[Path]:
    """Write a project that extends the shipped recipe `base`; the files written, in order."""
    if base not in shipped_recipe_names():
        raise UserError(f"init: no shipped recipe {base!r}; choose one of {', '.join(shipped_recipe_names())}")
    directory = Path(directory)
    recipe = directory / PROJECT_RECIPE
    if recipe.exists():
        raise UserError(f"init: {recipe} already exists; this directory is a project already")
    directory.mkdir(parents=True, exist_ok=True)
    keys: dict = {"extends": base, "name": name or _name(directory), "workdir": "build",
                  "patches": {"dir": "patches"}}
    if base in EXTRA_SETTINGS:
        module, _, function = EXTRA_SETTINGS[base].partition(":")
        keys.update(getattr(importlib.import_module(module), function)(directory.resolve()))
    header = (f"# rk3576-build project: the shipped recipe '{base}' plus the keys below, which replace\n"
              "# its own (docs/recipes.md lists every key). Relative paths are relative to this file.\n")
    written = []
    patches = directory / "patches"
    if not patches.exists():
        source = shipped_path("patches", base)
        shutil.copytree(source, patches) if source.is_dir() else patches.mkdir()
    written.append(patches)
    recipe.write_text(header + yaml.safe_dump(keys, sort_keys=False), encoding="utf-8")
    written.append(recipe)
    local = directory / PROJECT_RECIPE.replace(".yaml", ".local.yaml")
    if not local.exists():
        local.write_text(LOCAL_TEMPLATE.format(recipe=PROJECT_RECIPE), encoding="utf-8")
        written.append(local)
    gitignore = directory / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text(GITIGNORE, encoding="utf-8")
        written.append(gitignore)
    load_recipe(recipe)  # what init wrote must load; a RecipeError here is a bug in init
    return written
