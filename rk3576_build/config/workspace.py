"""The settings, decided in one place: every environment variable the tool reads is read here.

Precedence, highest first: the command line, the environment, the recipe's
`<stem>.local.yaml`, the recipe itself.

| setting   | command line          | environment        | recipe / .local.yaml | otherwise          |
|-----------|-----------------------|--------------------|----------------------|--------------------|
| recipe    | --recipe FILE or NAME | RK3576_RECIPE      | -                    | (1)                |
| workdir   | --workdir DIR         | RK3576_WORKDIR     | workdir:             | (2)                |
| offline   | --offline / --online  | RK3576_OFFLINE=1/0 | offline:             | false              |
| cache     | --no-cache            | RK3576_CACHE=0/1   | cache.enabled:       | true (3)           |
| downloads | -                     | RK3576_DL_DIR      | downloads:           | (4)                |

(1) ./rk3576-build.yaml, ./recipes/myd-lr3576-ubuntu.yaml, the shipped one.
(2) ../build/<name> beside the recipe; for a shipped recipe ./build/<name>.
(3) used when cache: names one.  (4) $XDG_CACHE_HOME/rk3576-build/downloads (~/.cache/...).

RK3576_DL_DIR and RK3576_OFFLINE=1 apply to every recipe as it loads (`recipe_overrides`).
Also read here: RK3576_STALL_TIMEOUT (seconds without download progress), RK3576_MAX_UNPACK
(cap on an archive's unpacked size), RK3576_KIT_DIR (the demo's board kits), XDG_CACHE_HOME.
A shipped recipe never gets its work directory or lock file inside the tool's
own files: they go under the current directory instead.
"""

from __future__ import annotations

import dataclasses
import fcntl
import importlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import yaml

from rk3576_build.config.model import Recipe
from rk3576_build.config.shipped import is_installed, is_shipped, shipped_path
from rk3576_build.core.errors import UserError

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


def environment_value(name: str) -> str | None:
    """A recipe's ${NAME} as the environment sets it (None: unset)."""
    return os.environ.get(name)


def recipe_overrides() -> dict[str, Any]:
    """What the environment sets in every recipe as it loads: downloads ($RK3576_DL_DIR), offline (RK3576_OFFLINE=1)."""
    changes: dict[str, Any] = {}
    if os.environ.get("RK3576_DL_DIR"):
        changes["downloads"] = Path(os.path.abspath(os.path.expanduser(os.environ["RK3576_DL_DIR"])))
    if os.environ.get("RK3576_OFFLINE", "").strip().lower() in _TRUE:
        changes["offline"] = True
    return changes


def user_cache_dir() -> Path:
    """The tool's per-user cache: $XDG_CACHE_HOME/rk3576-build, else ~/.cache/rk3576-build."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rk3576-build"


def default_downloads_dir(configured: str | Path | None = None) -> Path:
    """The download cache: $RK3576_DL_DIR, else `configured`, else the XDG cache dir."""
    env = os.environ.get("RK3576_DL_DIR")
    if env:
        return Path(env).expanduser()
    if configured:
        return Path(configured).expanduser()
    return user_cache_dir() / "downloads"


def board_kit_dir() -> Path:
    """Where the demo's board kits live: $RK3576_KIT_DIR, else <user cache>/board-kit."""
    env = os.environ.get("RK3576_KIT_DIR")
    if env:
        return Path(env)
    return user_cache_dir() / "board-kit"


def stall_seconds(default: float) -> float:
    """How long a download may go without progress: $RK3576_STALL_TIMEOUT seconds, else `default`."""
    value = os.environ.get("RK3576_STALL_TIMEOUT")
    try:
        return float(value) if value else default
    except ValueError:
        raise UserError(f"RK3576_STALL_TIMEOUT must be a number of seconds, got {value!r}") from None


def unpack_cap(default: int) -> int:
    """The cap on an archive's unpacked size: $RK3576_MAX_UNPACK (e.g. 128G, 500M), else `default`."""
    value = os.environ.get("RK3576_MAX_UNPACK", "").strip()
    if not value:
        return default
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", value, re.IGNORECASE)
    if not match:
        raise UserError(f"RK3576_MAX_UNPACK must be a size such as 64G, 500M or 1048576, got {value!r}")
    scale = 1 << (10 * " KMGT".index(match.group(2).upper() or " "))
    return int(float(match.group(1)) * scale)


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
    PROVIDERS = {"BOARD_KIT": "rk3576_build.demo.board_kit:cached_kit_root",
                 "DEMO_APPS": "rk3576_build.demo.sample_apps:sample_apps_dir"}

    def __init__(self) -> None:
        self._values: dict[str, str | None] = {}

    def __getitem__(self, name: str) -> str:
        if name not in self.PROVIDERS:
            raise KeyError(name)
        if name not in self._values:
            module, _, function = self.PROVIDERS[name].partition(":")
            self._values[name] = getattr(importlib.import_module(module), function)()
        value = self._values[name]
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.PROVIDERS)

    def __len__(self) -> int:
        return len(self.PROVIDERS)


@contextmanager
def work_lock(lock: Path, hold: Callable[[Path], AbstractContextManager[Any]] | None = None) -> Iterator[None]:
    """Hold an exclusive lock (a file in the work directory): one build per work directory at a time.

    While it is held, `hold(work directory)` is entered too: the caller's claim on what a killed
    run of this work directory left (the pipeline passes the builder containers' clean-up).
    """
    workdir = lock.parent
    workdir.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another rk3576-build is using {workdir} (lock {lock}); "
                            "wait for it to finish") from None
        if hold is None:
            yield
        else:
            with hold(workdir):
                yield
