"""Load, merge, expand and validate a build recipe (YAML) into frozen dataclasses.

Every problem is found before any work starts and reported at once, each as `<file>: <key.path>: <problem>`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping

import yaml

from rk3576_build.core.errors import UserError
from rk3576_build.config.shipped import shipped_path

# Where the project's own recipes live (listed when a recipe path is wrong), checkout or wheel.
SHIPPED_DIR = shipped_path("recipes")
INPUTS = ("sdk", "driver", "patches", "overlays")  # what a step may depend on besides earlier steps
LUNCH_MODES = ("auto", "menu", "defconfig", "lunch-name", "chip")


class RecipeError(UserError):
    """A recipe that cannot be used; `errors` holds one `<file>: <key>: <problem>` line per problem."""

    def __init__(self, message: str, errors: list[str] | None = None):
        super().__init__(message)
        self.errors = errors if errors is not None else [message]


# --------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class _Spec:
    def to_dict(self) -> dict:
        """Plain, JSON-serialisable data (paths as strings, tuples as lists)."""
        return _plain(self)


@dataclass(frozen=True)
class SdkSpec(_Spec):
    url: str
    sha256: str | None
    filename: str | None
    strip_components: int
    kernel_dir: str


@dataclass(frozen=True)
class DriverSpec(_Spec):
    name: str
    version: str
    url: str
    sha256: str | None
    filename: str | None
    source_dir: str
    dest: str


@dataclass(frozen=True)
class PatchesSpec(_Spec):
    dir: Path | None


@dataclass(frozen=True)
class PreflightSpec(_Spec):
    accept: tuple[str, ...]


@dataclass(frozen=True)
class Mount(_Spec):
    source: Path | None  # None when it expanded to "" (e.g. an unset ${BOARD_KIT:-})
    target: str
    read_only: bool


@dataclass(frozen=True)
class BuilderSpec(_Spec):
    dockerfile: Path
    base: str
    build_args: dict[str, str]
    mounts: tuple[Mount, ...]
    env: dict[str, str]
    ccache: bool
    accept: tuple[str, ...]
    accept_probe: dict[str, str] = dataclasses.field(default_factory=dict)  # step name -> the recipe's reason


@dataclass(frozen=True)
class LunchSpec(_Spec):
    defconfig: str
    chip: str
    mode: str


@dataclass(frozen=True)
class Product(_Spec):
    path: str
    unchanged_ok: bool


# `command: ./build.sh <word>` (the old spelling) is the same as `target: <word>`.
_BUILDSH_COMMAND = re.compile(r"^\s*\./build\.sh\s+([A-Za-z0-9][\w.+:-]*)\s*$")


@dataclass(frozen=True)
class StepSpec(_Spec):
    name: str
    description: str
    target: tuple[str, ...]
    command: str | None
    privileged: bool
    depends: tuple[str, ...]
    produces: tuple[Product, ...]

    @property
    def targets(self) -> tuple[str, ...]:
        """The build.sh commands this step may run, first supported one wins; () for a raw command."""
        if self.target:
            return self.target
        match = _BUILDSH_COMMAND.match(self.command or "")
        return (match.group(1),) if match else ()

    @property
    def is_lunch(self) -> bool:
        return "lunch" in self.targets


@dataclass(frozen=True)
class VerifySpec(_Spec):
    expected: str
    console: str
    baud: int
    user: str
    password_env: str
    login_timeout: float
    command_timeout: float
    place: str | None
    rkllm: dict  # the RKLLM check's settings (rk3576_build/rkllm.py); it runs when rkllm.model is set


@dataclass(frozen=True)
class OverlaySpec(_Spec):
    source: Path  # a host directory whose tree goes into the root filesystem
    name: str


@dataclass(frozen=True)
class FlashSpec(_Spec):
    method: str
    tool: str | None


@dataclass(frozen=True)
class CacheSpec(_Spec):
    enabled: bool
    mirrors: tuple[str, ...]
    store: str | None
    trusted: tuple[str, ...] = ()   # public keys (or .pub files) whose signed entries are taken
    signing_key: Path | None = None  # signs what the store gets
    trust: str = "signed"           # "any": unsigned mirror entries are taken too


@dataclass(frozen=True)
class Recipe(_Spec):
    path: Path  # the recipe file, as given
    name: str
    description: str
    workdir: Path
    downloads: Path | None
    mirrors: tuple[str, ...]
    offline: bool
    sdk: SdkSpec
    driver: DriverSpec
    patches: PatchesSpec
    preflight: PreflightSpec
    builder: BuilderSpec
    lunch: LunchSpec
    steps: tuple[StepSpec, ...]
    artifacts: tuple[str, ...]
    verify: VerifySpec
    flash: FlashSpec
    lock_file: Path
    local_file: Path | None = None  # the merged <stem>.local.yaml, if there was one
    cache: CacheSpec = CacheSpec(True, (), None)  # the shared build cache (build/cache/)
    rootfs_overlays: tuple[OverlaySpec, ...] = ()  # host trees baked into the rootfs (tasks.py)

    def section(self, name: str) -> dict:
        """Expanded data of one top-level key as a plain dict (non-mapping keys come as {name: value})."""
        if name not in SCHEMA.keys:
            raise ValueError(f"no recipe section {name!r}")
        value = _plain(getattr(self, name))
        return value if isinstance(value, dict) else {name: value}

    def step(self, name: str) -> StepSpec:
        """The step called `name`; RecipeError naming the known steps otherwise."""
        for step in self.steps:
            if step.name == name:
                return step
        names = [s.name for s in self.steps]
        raise RecipeError(f"recipe {_cut(self.name)} has no step {_describe(name)}; its steps are: "
                          f"{_known(names)}{_did_you_mean(name, names)}")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- the schema

_INVALID = object()  # a value that failed validation (its error is already recorded)
REQUIRED = object()  # Key.default for keys a recipe must set


class Computed:
    """A default derived from other keys after the walk; `text` is how docs show it."""

    def __init__(self, text: str):
        self.text = text


@dataclass(frozen=True)
class Key:
    """One key: its type, its default (REQUIRED, a value or Computed) and what it is for."""

    type: "_Type"
    doc: str
    default: Any = REQUIRED


class _Type:
    """A value's type: converts and checks one raw YAML value, recording errors in the walk."""

    text = ""           # the type as docs/recipes.md shows it
    is_text = False     # True: an expanded ${...} stays a string; else it is re-read as a YAML scalar

    def convert(self, value: Any, path: tuple, ctx: "_Walk") -> Any:
        raise NotImplementedError


def _describe(value: Any) -> str:
    """A value as an error message quotes it (never long)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return repr(value) if len(value) <= 76 else f"{value[:72]!r}... ({len(value)} characters)"
    return _cut(str(value))


def _cut(text: str, limit: int = 80) -> str:
    """`text` as an error message shows it: at most `limit` characters, then an ellipsis and the length."""
    return text if len(text) <= limit else f"{text[:limit - 3]}... ({len(text)} characters)"


def _known(names: list[str], limit: int = 20) -> str:
    """Names for a "known: ..." list: each cut to 40 characters, at most `limit` of them."""
    shown = ", ".join(_cut(n, 40) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _did_you_mean(word: str, choices: list[str]) -> str:
    if len(word) > 200:  # no typo is that long, and comparing long strings is slow
        return ""
    close = difflib.get_close_matches(word, [c for c in choices if len(c) <= 200], n=1)
    return f" (did you mean {_describe(close[0])}?)" if close else ""


class Str(_Type):
    """A string, optionally non-empty and passing `check` (which returns a problem or None)."""

    text = "string"
    is_text = True

    def __init__(self, check: Callable[[str], str | None] | None = None, nonempty: bool = False):
        self.check, self.nonempty = check, nonempty

    def convert(self, value, path, ctx):
        if not isinstance(value, str):
            hint = " (quote it)" if isinstance(value, (bool, int, float)) else ""
            return ctx.fail(path, f"expected a string, got {_describe(value)}{hint}")
        if self.nonempty and not value.strip():
            return ctx.fail(path, "expected a non-empty string")
        problem = self.check(value) if self.check else None
        return ctx.fail(path, problem) if problem else value


class PathT(_Type):
    """A host path; relative ones are resolved against the recipe's directory."""

    text = "path"
    is_text = True

    def convert(self, value, path, ctx):
        if not isinstance(value, str) or not value:
            return ctx.fail(path, f"expected a path, got {_describe(value)}")
        return ctx.resolve(value)


class Nullable(_Type):
    """`inner` or null; an empty string (e.g. an unset ${VAR:-}) also means null."""

    def __init__(self, inner: _Type):
        self.inner = inner
        self.text = f"{inner.text} or null"
        self.is_text = inner.is_text

    def convert(self, value, path, ctx):
        if value is None or value == "":
            return None
        return self.inner.convert(value, path, ctx)


class Bool(_Type):
    """A YAML boolean (never a string like 'yes please')."""

    text = "boolean"

    def convert(self, value, path, ctx):
        if not isinstance(value, bool):
            return ctx.fail(path, f"expected a boolean, got {_describe(value)}")
        return value


class Int(_Type):
    """An integer (not a boolean) of at least `minimum`."""

    text = "integer"

    def __init__(self, minimum: int):
        self.minimum = minimum

    def convert(self, value, path, ctx):
        if not isinstance(value, int) or isinstance(value, bool) or value < self.minimum:
            return ctx.fail(path, f"expected an integer >= {self.minimum}, got {_describe(value)}")
        return value


class Number(_Type):
    """A positive int or float (seconds), stored as float."""

    text = "number"

    def convert(self, value, path, ctx):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            return ctx.fail(path, f"expected a number > 0, got {_describe(value)}")
        return float(value)


class Choice(_Type):
    """One of a few fixed strings."""

    is_text = True

    def __init__(self, *values: str):
        self.values = values
        self.text = " or ".join(f'"{v}"' for v in values)

    def convert(self, value, path, ctx):
        if value not in self.values:
            options = ", ".join(repr(v) for v in self.values)
            hint = _did_you_mean(value, list(self.values)) if isinstance(value, str) else ""
            return ctx.fail(path, f"expected one of {options}, got {_describe(value)}{hint}")
        return value


class ListOf(_Type):
    """A list of `item`; `post` checks the items together (e.g. step names and depends)."""

    def __init__(self, item: _Type, nonempty: bool = False, post: Callable | None = None):
        self.item, self.nonempty, self.post = item, nonempty, post
        self.text = ("list of mappings" if isinstance(item, Section) else
                     "list of strings or mappings" if isinstance(item, StrOrSection) else "list of strings")

    def convert(self, value, path, ctx):
        if value is None:
            value = []
        if not isinstance(value, list):
            return ctx.fail(path, f"expected a list, got {_describe(value)}")
        if self.nonempty and not value:
            return ctx.fail(path, "expected a non-empty list")
        items = [ctx.value(self.item, raw, path + (i,)) for i, raw in enumerate(value)]
        if self.post:
            self.post(items, value, path, ctx)
        return _INVALID if any(i is _INVALID for i in items) else tuple(items)


class OneOrList(_Type):
    """One string or a list of them (alternatives), stored as a tuple; [] and null mean ()."""

    text = "string or list of strings"
    is_text = True

    def __init__(self, item: "Str"):
        self.item = item

    def convert(self, value, path, ctx):
        if value is None:
            return ()
        if isinstance(value, str):
            value, path_of = [value], (lambda i: path)
        elif isinstance(value, list):
            path_of = (lambda i: path + (i,))
        else:
            return ctx.fail(path, f"expected a string or a list of strings, got {_describe(value)}")
        items = [ctx.value(self.item, raw, path_of(i)) for i, raw in enumerate(value)]
        return _INVALID if any(i is _INVALID for i in items) else tuple(items)


class StrOrSection(_Type):
    """A string as shorthand for a mapping whose `key` it sets, or that mapping in full."""

    def __init__(self, key: str, section: "Section"):
        self.key, self.section = key, section
        self.text = "string or mapping"

    def convert(self, value, path, ctx):
        if isinstance(value, str):
            value = {self.key: value}
        return self.section.convert(value, path, ctx)


class StrMap(_Type):
    """A mapping of names to strings (environment, build args); `check_name` vets each name."""

    text = "map of string to string"

    def __init__(self, check_name: Callable[[str], str | None] | None = None, value: "Str | None" = None):
        self.check_name, self.item = check_name, value or Str()

    def convert(self, value, path, ctx):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            return ctx.fail(path, f"expected a mapping, got {_describe(value)}")
        out = {}
        for key, raw in value.items():
            if not isinstance(key, str):
                out[key] = ctx.fail(path + (str(key),), "names must be strings (quote it)")
                continue
            problem = self.check_name(key) if self.check_name else None
            if problem:
                out[key] = ctx.fail(path + (key,), problem)
                continue
            out[key] = ctx.value(self.item, raw, path + (key,))
        return _INVALID if _INVALID in out.values() else out


class Section(_Type):
    """A mapping with fixed keys; converts to `cls` (a dataclass) when given."""

    text = "mapping"

    def __init__(self, keys: dict[str, Key], cls: type | None = None):
        self.keys, self.cls = keys, cls

    def convert(self, value, path, ctx):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            return ctx.fail(path, f"expected a mapping, got {_describe(value)}")
        start = len(ctx.errors)
        for key in value:
            if key not in self.keys:
                ctx.unknown_key(path, key, list(self.keys))
        out = {}
        for key, spec in self.keys.items():
            if key in value:
                out[key] = ctx.value(spec.type, value[key], path + (key,))
            elif spec.default is REQUIRED:
                out[key] = ctx.fail(path + (key,), "required key missing")
            elif isinstance(spec.default, Computed):
                out[key] = None  # filled in by _finish
            else:
                out[key] = ctx.value(spec.type, spec.default, path + (key,))
        if len(ctx.errors) > start:  # includes unknown keys, which leave no _INVALID behind
            return _INVALID
        return self.cls(**out) if self.cls else out


# Checks on single strings: each returns a problem or None.

def _hex64(v: str) -> str | None:
    return None if re.fullmatch(r"[0-9a-fA-F]{64}", v) else f"expected 64 hex digits, got {_describe(v)}"


def _version(v: str) -> str | None:
    return None if re.fullmatch(r"\d+\.\d+\.\d+", v) else f"expected a version X.Y.Z in digits (like 0.9.8), got {_describe(v)}"


def _defconfig(v: str) -> str | None:
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*_defconfig", v):
        return None
    return (f"expected a defconfig name ending in '_defconfig' (letters, digits, '_', '-', '.', '+'; "
            f"it goes on build.sh's command line), got {_describe(v)}")


def _chip(v: str) -> str | None:
    if re.fullmatch(r"[a-z0-9][a-z0-9_-]*", v):
        return None
    return f"expected a chip name like 'rk3576' (lowercase letters, digits, '-', '_'), got {_describe(v)}"


def _buildsh_target(v: str) -> str | None:
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*(:[A-Za-z0-9_.+:-]+)?", v):
        return None
    return (f"expected a build.sh command like 'uboot' or 'kernel:cmds' (letters, digits, "
            f"'_', '-', '.', '+', ':'), got {_describe(v)}")


def _env_name(v: str) -> str | None:
    if not v.startswith("RK_"):
        return None
    return (f"{_cut(v)} is refused: Rockchip's build.sh treats RK_* variables in its environment as custom "
            "overrides and stops to ask (`read -t 10 -p \"Press enter to continue.\"`), which fails at "
            "once without a terminal and ends the build. Put the setting in the SDK's defconfig "
            "(device/rockchip/.chips/<chip>/<name>_defconfig, or `./build.sh menuconfig`) instead")


def _step_name(v: str) -> str | None:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", v):
        return (f"invalid step name {_describe(v)}: use lowercase letters, digits, '-' and '_', "
                "starting with a letter or digit")
    if v in INPUTS:
        return f"{_describe(v)} names an input ({', '.join(INPUTS)}); call the step something else"
    return None


def _recipe_name(v: str) -> str | None:
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", v):
        return None
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
        return f"name {_describe(v)} is too long: at most 100 characters (it names the work directory)"
    return f"invalid name {_describe(v)}: use letters, digits, '.', '-' and '_' (it names the work directory)"


def _absolute(v: str) -> str | None:
    return None if v.startswith("/") else f"expected an absolute path inside the container, got {_describe(v)}"


def _inside(where: str) -> Callable[[str], str | None]:
    """A relative path that stays inside `where` (no absolute path, no '..', not the root itself)."""

    def check(v: str) -> str | None:
        parts = PurePosixPath(v).parts
        if not parts or v.startswith("/") or ".." in parts or str(PurePosixPath(v)) == ".":
            return f"expected a relative path inside {where} without '..', got {_describe(v)}"
        return None

    return check


def _check_steps(items: list, raw: list, path: tuple, ctx: "_Walk") -> None:
    """Step names are unique and each `depends` entry is an input or an earlier step."""
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        data = raw[index] if isinstance(raw[index], dict) else {}
        name = item.name if item is not _INVALID else data.get("name")
        if item is not _INVALID and bool(item.target) == bool(item.command):
            ctx.fail(path + (index,), "set exactly one of target (the build.sh command, with "
                                      "alternatives: [u-boot, uboot]) and command (a shell command)")
        if isinstance(name, str) and name in seen:
            ctx.fail(path + (index, "name"), f"duplicate step name {_describe(name)} (also steps[{seen[name]}])")
        depends = item.depends if item is not _INVALID else data.get("depends")
        if isinstance(depends, (list, tuple)):
            known = list(INPUTS) + list(seen)
            later = _names(raw[index:])
            for d_index, dep in enumerate(depends):
                if not isinstance(dep, str) or dep in known:
                    continue
                where = path + (index, "depends", d_index)
                if dep == name:
                    ctx.fail(where, f"step {_describe(dep)} cannot depend on itself")
                elif dep in later:
                    ctx.fail(where, f"step {_describe(dep)} is not defined before this step; a step may only "
                                    "depend on earlier steps")
                else:
                    ctx.fail(where, f"unknown input {_describe(dep)}; known: {_known(known)}"
                                    f"{_did_you_mean(dep, known)}")
        if isinstance(name, str) and name not in seen:
            seen[name] = index


def _overlay_name(v: str) -> str | None:
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
        return None
    return f"invalid overlay name {_describe(v)}: use letters, digits, '.', '-' and '_' (it names a directory in the SDK)"


def _check_overlays(items: list, raw: list, path: tuple, ctx: "_Walk") -> None:
    """Overlay names (given, or the source directory's name) are valid and unique."""
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        if item is _INVALID:
            continue
        name = item.name or item.source.name
        problem = None if item.name else _overlay_name(name)
        if problem:
            ctx.fail(path + (index, "source"), f"{problem}; set name")
        elif name in seen:
            ctx.fail(path + (index, "name"), f"duplicate overlay name {_describe(name)} (also rootfs_overlays[{seen[name]}]); "
                                             "set a different name")
        else:
            seen[name] = index


def _names(raw_steps: list) -> list[str]:
    return [s["name"] for s in raw_steps if isinstance(s, dict) and isinstance(s.get("name"), str)]


def _section(cls, **keys: Key) -> Section:
    return Section(keys, cls)


SCHEMA = _section(
    None,
    name=Key(Str(_recipe_name), "the recipe's name; names the default work directory"),
    description=Key(Str(), "one line shown by `list` and in the manifest", ""),
    workdir=Key(PathT(), "where the state, the logs, the SDK tree and doit's database live",
                Computed("../build/<name>")),
    downloads=Key(Nullable(PathT()), "download cache; null: the default cache "
                  "(~/.cache/rk3576-build/downloads); $RK3576_DL_DIR overrides", None),
    mirrors=Key(ListOf(Str(nonempty=True)), "premirrors: URL prefixes or directories tried "
                "before each download's own URL", []),
    offline=Key(Bool(), "never use the network; RK3576_OFFLINE=1 also turns it on", False),
    sdk=Key(_section(
        SdkSpec,
        url=Key(Str(), "the SDK tarball: a URL, file:// URL or local path; may be empty "
                "(the fetch step then says how to get MYIR's SDK)"),
        sha256=Key(Nullable(Str(_hex64)), "expected sha256 (64 hex digits); null: pinned on "
                   "first fetch in the lock file", None),
        filename=Key(Nullable(Str()), "name in the download cache; null: the URL's last part", None),
        strip_components=Key(Int(0), "leading directories stripped when unpacking", 1),
        kernel_dir=Key(Str(_inside("the SDK")), "the kernel tree, relative to the SDK root", "kernel"),
    ), "the vendor SDK source tarball"),
    driver=Key(_section(
        DriverSpec,
        name=Key(Str(nonempty=True), "the driver's name", "rknpu"),
        version=Key(Str(_version), "the driver version, X.Y.Z in digits; the expected console line uses it"),
        url=Key(Str(nonempty=True), "the driver tarball: a URL, file:// URL or local path"),
        sha256=Key(Nullable(Str(_hex64)), "expected sha256 (64 hex digits); null: pinned on "
                   "first fetch in the lock file", None),
        filename=Key(Nullable(Str()), "name in the download cache; null: the URL's last part", None),
        source_dir=Key(Str(_inside("the tarball")), "the driver's directory inside the tarball",
                       "drivers/rknpu"),
        dest=Key(Str(_inside("the kernel tree")), "where it goes in the kernel tree (replaced, "
                 "not merged)", "drivers/rknpu"),
    ), "the driver tarball overlaid onto the kernel tree"),
    patches=Key(_section(
        PatchesSpec,
        dir=Key(Nullable(PathT()), "directory of patches applied to the kernel tree after the "
                "overlay (its `series` file gives the order); null: no patches", None),
    ), "the patch series", {}),
    preflight=Key(_section(
        PreflightSpec,
        accept=Key(ListOf(Str(nonempty=True)), "ids of preflight findings to accept instead of "
                   "stopping the build", []),
    ), "kernel-tree checks before the long build", {}),
    builder=Key(_section(
        BuilderSpec,
        dockerfile=Key(PathT(), "the builder image's Dockerfile", "../Dockerfile.builder"),
        base=Key(Str(nonempty=True), "base image, passed as build arg BASE", "ubuntu:22.04"),
        build_args=Key(StrMap(), "more docker build args", {}),
        mounts=Key(ListOf(_section(
            Mount,
            source=Key(Nullable(PathT()), "host path; empty (an unset ${VAR:-}) -> null, which "
                       "the build refuses when it runs"),
            target=Key(Str(_absolute), "absolute path inside the container"),
            read_only=Key(Bool(), "mount read-only", False),
        )), "extra bind mounts into the container", []),
        env=Key(StrMap(_env_name), "environment of every build step; RK_* names are refused "
                "(build.sh stops on them): they belong in the SDK defconfig", {}),
        ccache=Key(Bool(), "share a compiler cache (a Docker volume) with every build step", True),
        accept=Key(ListOf(Str(nonempty=True)), "ids of host-check problems (builder:check) to accept "
                   "instead of stopping the build", []),
        accept_probe=Key(StrMap(value=Str(nonempty=True)), "step name -> why: the step runs its first target "
                         "although builder:probe found no sign build.sh accepts it (the finding accepted, "
                         "with a warning on every run)", {}),
    ), "the Docker image the build steps run in", {}),
    lunch=Key(_section(
        LunchSpec,
        defconfig=Key(Str(_defconfig), "the board defconfig the lunch step selects"),
        chip=Key(Str(_chip), "the chip whose defconfigs (device/rockchip/.chips/<chip>/) are offered; "
                 "used by the chip mode", "rk3576"),
        mode=Key(Choice(*LUNCH_MODES), "how the lunch step selects it: menu (answer `./build.sh "
                 "lunch` by name), defconfig (`./build.sh <defconfig>`), lunch-name (`./build.sh "
                 "lunch:<defconfig>`), chip (`./build.sh <chip>:<defconfig>`, for a fresh tree), "
                 "auto (chip when device/rockchip/.chip is missing, else menu)", "auto"),
    ), "how the board is selected"),
    steps=Key(ListOf(_section(
        StepSpec,
        name=Key(Str(_step_name), "unique step name: [a-z0-9][a-z0-9_-]*, not sdk/driver/patches/overlays"),
        description=Key(Str(), "shown by `list`", ""),
        target=Key(OneOrList(Str(_buildsh_target)), "the build.sh command, or alternatives of which "
                   "the first the SDK's build.sh supports runs", []),
        command=Key(Nullable(Str()), "a shell command run as is instead of a target "
                    "(`./build.sh <word>` counts as target <word>)", None),
        privileged=Key(Bool(), "run the container privileged (loop devices, binfmt)", False),
        depends=Key(ListOf(Str()), "inputs (sdk, driver, patches) and earlier steps whose change "
                    "reruns this step", []),
        produces=Key(ListOf(StrOrSection("path", _section(
            Product,
            path=Key(Str(_inside("the SDK")), "a file the step must write, relative to the SDK root"),
            unchanged_ok=Key(Bool(), "the file must exist afterwards but may stay unchanged", False),
        ))), "files the step must write (a path, or {path, unchanged_ok}); one not written "
             "fails the step, one missing later reruns it", []),
    ), nonempty=True, post=_check_steps), "the build steps, in order"),
    artifacts=Key(ListOf(Str(_inside("the SDK")), nonempty=True), "the build's outputs, relative "
                  "to the SDK root; recorded with checksums in the manifest"),
    rootfs_overlays=Key(ListOf(_section(
        OverlaySpec,
        source=Key(PathT(), "a host directory (relative to the recipe); its tree is copied into the root "
                   "filesystem as the SDK's RK_ROOTFS_OVERLAY_DIRS does"),
        name=Key(Nullable(Str(_overlay_name)), "the overlay's name in the SDK and the manifest; null: the "
                 "source directory's name", None),
    ), post=_check_overlays), "host directories baked into the root filesystem; a step lists `overlays` in "
       "`depends` to rerun when one changes", []),
    verify=Key(_section(
        VerifySpec,
        expected=Key(Str(nonempty=True), "the line `cat /sys/kernel/debug/rknpu/version` must print",
                     Computed("RKNPU driver: v<driver.version>")),
        console=Key(Str(nonempty=True), "serial device or pyserial URL (socket://, rfc2217://)",
                    "/dev/ttyUSB0"),
        baud=Key(Int(1), "baud rate", 115200),
        user=Key(Str(nonempty=True), "login user", "root"),
        password_env=Key(Str(nonempty=True), "environment variable holding the login password "
                         "(unset: verify prompts)", "RK3576_CONSOLE_PASSWORD"),
        login_timeout=Key(Number(), "seconds to wait for the login prompt after boot", 300),
        command_timeout=Key(Number(), "seconds to wait for a command's output", 30),
        place=Key(Nullable(Str(nonempty=True)), "labgrid place whose serial console (and power "
                  "switch) verify uses instead of verify.console; null: none", None),
        rkllm=Key(_section(
            None,
            model=Key(Nullable(Str()), "the .rkllm model's path on the board; set: verify runs the RKLLM "
                      "check; null: no check", None),
            program=Key(Nullable(Str()), "the demo program on the board; null: /usr/bin/llm_demo", None),
            args=Key(Nullable(Str()), "its arguments with {model}, {max_new_tokens}, {max_context_len}; "
                     "null: '{model} {max_new_tokens} {max_context_len}' (llm_demo's)", None),
            lib_dir=Key(Nullable(Str()), "LD_LIBRARY_PATH for librkllmrt.so on the board; null: unset", None),
            max_new_tokens=Key(Nullable(Int(1)), "max_new_tokens; null: 256", None),
            max_context_len=Key(Nullable(Int(1)), "max_context_len; null: 2048", None),
            prompt=Key(Nullable(Str()), "the question typed at `user: `, or a preset's number; null: \"0\"", None),
            freq_script=Key(Nullable(Str()), "script on the board run first to pin frequencies "
                            "(rknn-llm's fix_freq_rk3576.sh); null: none", None),
            min_generate_tokens_per_s=Key(Nullable(Number()), "fail below this generate speed; null: no limit", None),
            max_init_ms=Key(Nullable(Number()), "fail above this model init time (ms); null: no limit", None),
            max_peak_memory_gb=Key(Nullable(Number()), "fail above this peak memory (GB); null: no limit", None),
            load_timeout=Key(Nullable(Number()), "seconds for the model to load; null: 120", None),
            answer_timeout=Key(Nullable(Number()), "seconds for the answer and its table; null: 300", None),
        ), "the RKLLM check: run the demo program, parse the runtime's lines and figures", {}),
    ), "the on-board check over the serial console", {}),
    flash=Key(_section(
        FlashSpec,
        method=Key(Choice("upgrade_tool", "rkdeveloptool", "virtual"), "how update.img reaches "
                   "the board", "upgrade_tool"),
        tool=Key(Nullable(Str()), "path to the flashing tool; null: found on PATH", None),
    ), "flashing the board", {}),
    cache=Key(_section(
        CacheSpec,
        enabled=Key(Bool(), "use the build cache; --no-cache or RK3576_CACHE=0 turn it off for a run", True),
        mirrors=Key(ListOf(Str(nonempty=True)), "read-only caches asked first, in order: dir:PATH, a "
                    "directory (relative to the recipe) or oci://host[:port]/repository", []),
        store=Key(Nullable(Str(nonempty=True)), "the read-write cache, asked last; every step built "
                  "is stored there; null: none", None),
        trusted=Key(ListOf(Str(nonempty=True)), "signers whose entries are taken: OpenSSH public key "
                    "lines, or .pub/allowed_signers files (relative to the recipe)", []),
        signing_key=Key(Nullable(PathT()), "OpenSSH private key (or the .pub of a key in ssh-agent) that "
                        "signs every entry stored; its own entries are then trusted, unsigned ones in the "
                        "store refused; null: entries are stored unsigned", None),
        trust=Key(Choice("signed", "any"), "signed: a mirror's entry must be signed by a trusted key; "
                  "any: unsigned mirror entries are taken too (anyone who can write the mirror decides "
                  "what goes into the image)", "signed"),
    ), "the shared build cache of step products", {}),
)


def schema_table() -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, description) for every key in SCHEMA, as docs/recipes.md lists them."""
    rows: list[tuple[str, str, str, str]] = []

    def walk(section: Section, prefix: str) -> None:
        for name, key in section.keys.items():
            dotted = prefix + name
            rows.append((dotted, key.type.text, _default_text(key.default), key.doc))
            inner = key.type.item if isinstance(key.type, ListOf) else key.type
            inner = inner.section if isinstance(inner, StrOrSection) else inner
            if isinstance(inner, Section):
                walk(inner, dotted + ("[]." if isinstance(key.type, ListOf) else "."))

    walk(SCHEMA, "")
    return rows


def _default_text(default: Any) -> str:
    if default is REQUIRED:
        return "required"
    if isinstance(default, Computed):
        return default.text
    return json.dumps(default)


def documented_keys() -> set[str]:
    """Dotted key paths in SCHEMA, e.g. "sdk.url", "steps[].depends", "builder.mounts[].read_only"."""
    return {row[0] for row in schema_table()}


# --------------------------------------------------------------------------- variables

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")  # a scheme: http:, https:, file:


class _ExpandError(Exception):
    pass


def _expand(text: str, lookup: Callable[[str], str | None]) -> tuple[str, bool]:
    """Expand ${VAR}, ${VAR:-default} (nested) and $$; returns (result, whether a ${...} was used)."""
    used = False

    def parse(i: int, in_default: bool, active: bool) -> tuple[str, int]:
        nonlocal used
        out: list[str] = []
        while i < len(text):
            if text.startswith("$$", i):
                out.append("$")
                i += 2
            elif text.startswith("${", i):
                used = True
                match = _NAME.match(text, i + 2)
                if not match:
                    raise _ExpandError(_bad_ref(text))
                name, i = match.group(), match.end()
                value = lookup(name) if active else ""
                if text.startswith(":-", i):
                    default, i = parse(i + 2, True, active and not value)
                    value = value or default
                elif text.startswith("}", i):
                    if active and value is None:
                        raise _ExpandError(f"undefined variable ${{{_cut(name, 40)}}} (set it in the "
                                           f"environment or use ${{{_cut(name, 40)}:-default}})")
                else:
                    raise _ExpandError(_bad_ref(text))
                if not text.startswith("}", i):
                    raise _ExpandError(_bad_ref(text))
                out.append(value or "")
                i += 1
            elif in_default and text[i] == "}":
                return "".join(out), i
            else:
                out.append(text[i])
                i += 1
        if in_default:
            raise _ExpandError(_bad_ref(text))
        return "".join(out), i

    result, _ = parse(0, False, True)
    return result, used


def _bad_ref(text: str) -> str:
    return (f"bad variable reference in {_describe(text)}: use ${{NAME}} or ${{NAME:-default}} "
            "(write $$ for a literal $)")


# --------------------------------------------------------------------------- the walk


class _Walk:
    """State of one validation pass: where errors go, how variables and paths resolve."""

    def __init__(self, lookup: Callable[[str], str | None], base_dir: Path, owner: Callable[[tuple], str]):
        self.lookup, self.base_dir, self.owner = lookup, base_dir, owner
        self.errors: list[str] = []

    def fail(self, path: tuple, problem: str) -> object:
        self.errors.append(f"{self.owner(path)}: {_key_path(path)}: {problem}")
        return _INVALID

    def value(self, kind: _Type, raw: Any, path: tuple) -> Any:
        """Expand variables in a string, then convert it as `kind`."""
        if isinstance(raw, str):
            if "\0" in raw:
                return self.fail(path, "contains a NUL character (\\0); remove it")
            try:
                expanded, used = _expand(raw, self.lookup)
            except _ExpandError as exc:
                return self.fail(path, str(exc))
            except RecursionError:
                return self.fail(path, "${...} references nested too deeply; flatten them")
            # "${JOBS:-4}" for an integer key: read the expansion the way YAML reads a scalar
            raw = expanded if kind.is_text or not used else _scalar(expanded)
        return kind.convert(raw, path, self)

    def unknown_key(self, path: tuple, key: Any, known: list[str]) -> None:
        if isinstance(key, str) and key.lower() in ("password", "passwd"):
            self.fail(path + (key,), "passwords never go in a recipe; export the variable named "
                                     "by verify.password_env, or verify prompts")
        else:
            hint = _did_you_mean(str(key), known) or f"; known keys: {_known(known, 40)}"
            self.fail(path + (str(key),), f"unknown key{hint}")

    def resolve(self, value: str) -> Path:
        return Path(os.path.abspath(self.base_dir / os.path.expanduser(value)))


def _scalar(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (bool, int, float)) else text


def _key_path(path: tuple) -> str:
    out = ""
    for part in path:
        part = part if isinstance(part, int) else _cut(str(part), 40)
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


# --------------------------------------------------------------------------- files


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """Safe YAML loader that refuses duplicate keys (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                continue  # unhashable keys: the base constructor reports them
            if key in seen and key != "<<":
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {_describe(key)}", key_node.start_mark)
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
        return None, [f"{shown}: expected a mapping of recipe keys, got {_describe(data)}"]
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
        if name in os.environ:
            return os.environ[name]
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
        return None, [f"{shown}: extends: expected a shipped recipe's name or a recipe path, got {_describe(base)}"]
    path = Path(os.path.abspath(Path(os.path.abspath(given)).parent / os.path.expanduser(base)))
    try:
        if not path.is_file() and "/" not in base:
            path = SHIPPED_DIR / f"{base.removesuffix('.yaml')}.yaml"
        path.resolve().stat()
    except OSError as exc:  # e.g. a name too long for a file name: no recipe can be there
        if not isinstance(exc, FileNotFoundError):
            return None, [f"{shown}: extends: {_describe(base)}: cannot read it: {exc.strerror}"]
    if path.resolve() in seen or path.resolve() == Path(os.path.abspath(given)).resolve():
        return None, [f"{shown}: extends: {_describe(base)} extends itself (a cycle through {path})"]
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
    if isinstance(value, str):
        value = value.replace("${RECIPE_DIR}", str(base_dir).replace("$", "$$"))
        inner = kind.inner if isinstance(kind, Nullable) else kind
        if isinstance(inner, PathT) and value and not value.startswith(("/", "~", "$")):
            value = str(base_dir / value)
        return value
    if isinstance(value, list):
        item = kind.item if isinstance(kind, ListOf) else None
        if kind is SCHEMA.keys["mirrors"].type:  # directory mirrors are paths too
            return [str(base_dir / m) if isinstance(m, str) and not _URL.match(m)
                    and not m.startswith(("/", "~", "$")) else m for m in value]
        return [_rebase(v, item, base_dir) for v in value]
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

    walk = _Walk(_lookup(variables or {}, recipe_dir), recipe_dir, owner)
    values = SCHEMA.convert(data, (), walk)
    if walk.errors:
        _raise(shown, walk.errors)
    return _finish(values, given, recipe_dir, local if override is not None else None, walk)


def _finish(values: dict, given: Path, recipe_dir: Path, local: Path | None, walk: _Walk) -> Recipe:
    """Fill the computed defaults and the environment's overrides, then build the Recipe."""
    if values["workdir"] is None:
        values["workdir"] = walk.resolve(f"../build/{values['name']}")
    if values["verify"].expected is None:
        values["verify"] = dataclasses.replace(
            values["verify"], expected=f"RKNPU driver: v{values['driver'].version}")
    if os.environ.get("RK3576_DL_DIR"):
        values["downloads"] = Path(os.path.abspath(os.path.expanduser(os.environ["RK3576_DL_DIR"])))
    if os.environ.get("RK3576_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        values["offline"] = True
    # A mirror that is a directory, not a URL, is a path like any other: relative to the recipe.
    values["mirrors"] = tuple(m if _URL.match(m) else str(walk.resolve(m)) for m in values["mirrors"])
    values["rootfs_overlays"] = tuple(dataclasses.replace(o, name=o.name or o.source.name)
                                      for o in values["rootfs_overlays"])
    users = [s.name for s in values["steps"] if "overlays" in s.depends]
    if users and not values["rootfs_overlays"]:
        walk.fail(("steps",), f"step {_describe(users[0])} depends on 'overlays' but rootfs_overlays is empty")
    elif values["rootfs_overlays"] and not users:
        walk.fail(("rootfs_overlays",), "no step depends on 'overlays': add it to the rootfs step's depends "
                                        "(the overlays are applied before that step and rerun it when they change)")
    _check_accept_probe(values["builder"].accept_probe, values["steps"], walk)
    if walk.errors:
        _raise(str(given), walk.errors)
    return Recipe(path=given, lock_file=recipe_dir / f"{given.stem}.lock.yaml",
                  local_file=Path(os.path.abspath(local)) if local else None, **values)


def _check_accept_probe(accepted: dict[str, str], steps: tuple, walk: _Walk) -> None:
    """builder.accept_probe names steps that run a build.sh target (the probe checks nothing else)."""
    targets = {s.name: s.targets for s in steps}
    for name in accepted:
        where = ("builder", "accept_probe", name)
        if name not in targets:
            walk.fail(where, f"no step named {_describe(name)}; the steps are: {_known(list(targets))}"
                             f"{_did_you_mean(name, list(targets))}")
        elif not targets[name]:
            walk.fail(where, f"step {_describe(name)} runs a shell command, not a build.sh target: the probe "
                             "does not check it, so there is nothing to accept")


def _raise(shown: str, errors: list[str]) -> None:
    if len(errors) == 1:
        raise RecipeError(errors[0], errors)
    lines = [f"recipe {shown} has {len(errors)} errors:"] + [f"  {e}" for e in errors]
    raise RecipeError("\n".join(lines), errors)
