"""Load a build recipe (YAML): read it, follow `extends`, merge its <stem>.local.yaml, then expand and validate it.

Every problem is found before any work starts and reported at once, each as `<file>: <key.path>: <problem>`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from rk3576_build.config.combinators import ListOf, MapOf, Nullable, PathT, Section, StrOrSection, UrlOrPath, Walk
from rk3576_build.config.model import APP_OVERLAY_PREFIX, AppSpec, Recipe, RecipeError
from rk3576_build.config.quoting import describe, did_you_mean, listed
from rk3576_build.config.schema import SCHEMA
from rk3576_build.config.shipped import shipped_path
from rk3576_build.config.workspace import (
    Options,
    RuntimeVariables,
    apply_settings,
    environment_value,
    recipe_overrides,
    recipe_path,
)

# Where the project's own recipes live (listed when a recipe path is wrong), checkout or wheel.
SHIPPED_DIR = shipped_path("recipes")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")  # a scheme: http:, https:, file:


if TYPE_CHECKING:
    _SafeLoader = yaml.SafeLoader
else:  # libyaml's loader when PyYAML has it: several times faster
    _SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_SafeLoader):
    """Safe YAML loader that refuses duplicate keys (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                continue  # unhashable keys: the base constructor reports them
            if key in seen and key != "<<":
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {describe(key)}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path, shown: str, required: bool) -> tuple[Any, list[str]]:
    """The YAML document in `path` and the errors reading it (as `<file>: ...` lines)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if not required:
            return None, []
        return None, [f"recipe not found: {shown}; {_shipped_text()}"]
    except IsADirectoryError:
        return None, [f"{shown}: is a directory, not a recipe file; {_shipped_text()}"]
    except UnicodeDecodeError:
        return None, [f"{shown}: not UTF-8 text"]
    except OSError as exc:
        return None, [f"{shown}: cannot read it: {exc.strerror}"]
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return None, [f"{shown}: {where}invalid YAML: {exc.problem or exc.context}"]
    except yaml.YAMLError as exc:
        return None, [f"{shown}: invalid YAML: {exc}"]
    if data is None and not required:
        return {}, []  # an empty local override changes nothing
    if data is None:
        return None, [f"{shown}: the file is empty; a recipe needs at least name, sdk, driver, "
                      "lunch, steps and artifacts (see docs/recipes.md)"]
    if not isinstance(data, dict):
        return None, [f"{shown}: expected a mapping of recipe keys, got {describe(data)}"]
    return data, []


def shipped_recipes() -> list[Path]:
    """The recipes that come with the project (not their .local/.lock companions)."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p for p in SHIPPED_DIR.glob("*.yaml")
                  if not p.name.endswith((".local.yaml", ".lock.yaml")))


def _shipped_text() -> str:
    found = shipped_recipes()
    if not found:
        return "no shipped recipes were found"
    cwd = Path.cwd()
    shown = [str(p.relative_to(cwd)) if p.is_relative_to(cwd) else str(p) for p in found]
    return "the shipped recipes are: " + ", ".join(shown)


def _merge(base: Any, over: Any) -> Any:
    """Deep merge: mappings merge key by key; lists and scalars in `over` replace."""
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for key, value in over.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    return over


def _set_in(data: Any, path: tuple) -> bool:
    """Whether `data` (a local override) sets the value at `path` (itself or a list/scalar above it)."""
    for part in path:
        if isinstance(data, dict):
            if part not in data:
                return False
            data = data[part]
        else:
            return True  # a list or scalar that replaced everything below it
    return True


def _lookup(variables: Mapping[str, str], recipe_dir: Path) -> Callable[[str], str | None]:
    def lookup(name: str) -> str | None:
        if name == "RECIPE_DIR":
            return str(recipe_dir)
        value = environment_value(name)
        if value is None:
            value = variables.get(name)
        return None if value is None else str(value)
    return lookup


# --------------------------------------------------------------------------- extends


def _extends(data: dict, given: Path, shown: str, seen: tuple = ()) -> tuple[Any, list[str]]:
    """`extends: NAME|PATH`: this recipe's keys on top of another recipe (a shipped recipe's
    name, or a path relative to this recipe). The base keeps its own relative paths and
    ${RECIPE_DIR}; its `workdir` is never inherited (the work dir belongs to this recipe)."""
    if "extends" not in data:
        return data, []
    data = dict(data)
    base = data.pop("extends")
    if not isinstance(base, str) or not base.strip():
        return None, [f"{shown}: extends: expected a shipped recipe's name or a recipe path, got {describe(base)}"]
    path = Path(os.path.abspath(Path(os.path.abspath(given)).parent / os.path.expanduser(base)))
    try:
        if not path.is_file() and "/" not in base:
            path = SHIPPED_DIR / f"{base.removesuffix('.yaml')}.yaml"
        path.resolve().stat()
    except OSError as exc:  # e.g. a name too long for a file name: no recipe can be there
        if not isinstance(exc, FileNotFoundError):
            return None, [f"{shown}: extends: {describe(base)}: cannot read it: {exc.strerror}"]
    if path.resolve() in seen or path.resolve() == Path(os.path.abspath(given)).resolve():
        return None, [f"{shown}: extends: {describe(base)} extends itself (a cycle through {path})"]
    base_data, errors = _read_yaml(path, str(path), required=True)
    if not errors:
        base_data, errors = _extends(base_data, path, str(path), seen + (Path(os.path.abspath(given)).resolve(),))
    if errors:
        return None, [f"{shown}: extends: {e}" for e in errors]
    base_data = _rebase(base_data, SCHEMA, path.parent)
    base_data.pop("workdir", None)
    return _merge(base_data, data), []


def _rebase(value: Any, kind: Any, base_dir: Path) -> Any:
    """A base recipe's data with ${RECIPE_DIR} and its relative paths made absolute (its own directory)."""
    if isinstance(kind, StrOrSection):  # a string is the shorthand for the section's key
        kind = kind.section.keys[kind.key].type if isinstance(value, str) else kind.section
    if isinstance(value, str):
        value = value.replace("${RECIPE_DIR}", str(base_dir).replace("$", "$$"))
        inner = kind.inner if isinstance(kind, Nullable) else kind
        is_path = isinstance(inner, PathT) or (isinstance(inner, UrlOrPath) and not inner.URL.match(value))
        if is_path and value and not value.startswith(("/", "~", "$")):
            value = str(base_dir / value)
        return value
    if isinstance(value, list):
        item = kind.item if isinstance(kind, ListOf) else None
        if kind is SCHEMA.keys["mirrors"].type:  # directory mirrors are paths too
            return [str(base_dir / m) if isinstance(m, str) and not _URL.match(m)
                    and not m.startswith(("/", "~", "$")) else m for m in value]
        return [_rebase(v, item, base_dir) for v in value]
    if isinstance(value, dict) and isinstance(kind, MapOf):
        return {k: _rebase(v, kind.item, base_dir) for k, v in value.items()}
    if isinstance(value, dict):
        keys = kind.keys if isinstance(kind, Section) else {}
        return {k: _rebase(v, keys[k].type if k in keys else None, base_dir) for k, v in value.items()}
    return value


def load_recipe(path: str | Path, *, variables: Mapping[str, str] | None = None) -> Recipe:
    """Read, merge (with <stem>.local.yaml), expand and validate a recipe; RecipeError lists every problem."""
    given = Path(path)
    shown = str(path)
    recipe_dir = Path(os.path.abspath(given)).parent
    local = given.with_name(given.stem + ".local.yaml")
    data, errors = _read_yaml(given, shown, required=True)
    if not errors:
        data, errors = _extends(data, given, shown)
    override, local_errors = _read_yaml(local, str(local), required=False)
    errors += local_errors
    if errors:
        _raise(shown, errors)
    if override is not None:
        data = _merge(data, override)

    def owner(key_path: tuple) -> str:
        return str(local) if override and key_path and _set_in(override, key_path) else shown

    walk = Walk(_lookup(variables or {}, recipe_dir), recipe_dir, owner)
    values = SCHEMA.convert(data, (), walk)
    if walk.errors:
        _raise(shown, walk.errors)
    return _finish(values, given, recipe_dir, local if override is not None else None, walk)


def load(options: Options) -> Recipe:
    """Load the recipe the options name (config/workspace.py) and apply the settings on top."""
    recipe = load_recipe(recipe_path(options.recipe), variables=RuntimeVariables())
    return apply_settings(recipe, options)


def _finish(values: dict, given: Path, recipe_dir: Path, local: Path | None, walk: Walk) -> Recipe:
    """Fill the computed defaults and the environment's overrides, then build the Recipe."""
    if values["workdir"] is None:
        values["workdir"] = walk.resolve(f"../build/{values['name']}")
    if values["verify"].expected is None:
        values["verify"] = dataclasses.replace(
            values["verify"], expected=f"RKNPU driver: v{values['driver'].version}")
    values.update(recipe_overrides())
    # A mirror that is a directory, not a URL, is a path like any other: relative to the recipe.
    values["mirrors"] = tuple(m if _URL.match(m) else str(walk.resolve(m)) for m in values["mirrors"])
    values["rootfs_overlays"] = tuple(dataclasses.replace(o, name=o.name or o.source.name)
                                      for o in values["rootfs_overlays"])
    apps = [a for a in values["apps"].values() if a.enabled]
    _check_apps(values["apps"], values["rootfs_overlays"], walk)
    users = [s.name for s in values["steps"] if "overlays" in s.depends]
    if users and not values["rootfs_overlays"] and not apps:
        walk.fail(("steps",), f"step {describe(users[0])} depends on 'overlays' but rootfs_overlays is empty"
                              + (" and no app is enabled" if values["apps"] else ""))
    elif values["rootfs_overlays"] and not users:
        walk.fail(("rootfs_overlays",), "no step depends on 'overlays': add it to the rootfs step's depends "
                                        "(the overlays are applied before that step and rerun it when they change)")
    elif apps and not users:
        walk.fail(("apps",), "no step depends on 'overlays': add it to the rootfs step's depends (the apps' "
                             "install trees are rootfs overlays, applied before that step and rerun it when they "
                             "change)")
    _check_accept_probe(values["builder"].accept_probe, values["steps"], walk)
    if walk.errors:
        _raise(str(given), walk.errors)
    return Recipe(path=given, lock_file=recipe_dir / f"{given.stem}.lock.yaml",
                  local_file=Path(os.path.abspath(local)) if local else None, **values)


def _check_apps(apps: dict[str, AppSpec], overlays: tuple, walk: Walk) -> None:
    """Each app's source is one of a tarball, a git commit or a directory; each file one of a path or a URL
    with its sha256; no rootfs overlay takes an app's overlay name."""
    taken = {o.name for o in overlays}
    for name, app in apps.items():
        where = ("apps", name)
        src = app.source
        given = [k for k in ("url", "git", "dir") if getattr(src, k)]
        if len(given) != 1:
            walk.fail(where + ("source",), "set exactly one of url (a tarball, with sha256), git (with commit) "
                                           f"and dir (a local directory); got {listed(given) if given else 'none'}")
        elif src.url and not src.sha256:
            walk.fail(where + ("source", "sha256"), "a source tarball needs its sha256 (64 hex digits): "
                                                    "`sha256sum` of the file you checked")
        elif src.git and not src.commit:
            walk.fail(where + ("source", "commit"), "a git source needs the commit to build (40 hex digits): "
                                                    "`git rev-parse <tag>^{commit}` in a clone")
        for key, kind in (("commit", "git"), ("sha256", "url"), ("filename", "url")):
            if getattr(src, key) and not getattr(src, kind):
                walk.fail(where + ("source", key), f"{key} goes with {kind}, which is not set")
        for index, item in enumerate(app.files):
            at = where + ("files", index)
            if bool(item.source) == bool(item.url):
                walk.fail(at, "set exactly one of source (a local file or directory) and url (with sha256)")
            elif item.url and not item.sha256:
                walk.fail(at + ("sha256",), "a file from a URL needs its sha256 (64 hex digits)")
            elif item.source and (item.sha256 or item.filename):
                walk.fail(at, "sha256 and filename go with url; a local source is used as it is")
        if app.enabled and app.overlay_name in taken:
            walk.fail(where, f"the app's install tree is the rootfs overlay {describe(app.overlay_name)}, and "
                             "rootfs_overlays has one of that name: rename that overlay (overlay names starting "
                             f"with {APP_OVERLAY_PREFIX!r} belong to apps)")


def _check_accept_probe(accepted: dict[str, str], steps: tuple, walk: Walk) -> None:
    """builder.accept_probe names steps that run a build.sh target (the probe checks nothing else)."""
    targets = {s.name: s.targets for s in steps}
    for name in accepted:
        where = ("builder", "accept_probe", name)
        if name not in targets:
            walk.fail(where, f"no step named {describe(name)}; the steps are: {listed(list(targets))}"
                             f"{did_you_mean(name, list(targets))}")
        elif not targets[name]:
            walk.fail(where, f"step {describe(name)} runs a shell command, not a build.sh target: the probe "
                             "does not check it, so there is nothing to accept")


def _raise(shown: str, errors: list[str]) -> None:
    if len(errors) == 1:
        raise RecipeError(errors[0], errors)
    lines = [f"recipe {shown} has {len(errors)} errors:"] + [f"  {e}" for e in errors]
    raise RecipeError("\n".join(lines), errors)

