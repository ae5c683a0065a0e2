"""Recipe value types (strings, paths, lists, sections...) and the walk that converts raw YAML with them.

Each type converts one raw value and records its problems in the walk, so every problem is reported at once.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rk3576_build.config.expand import ExpandError, expand
from rk3576_build.config.quoting import describe, did_you_mean, listed
from rk3576_build.core.text import cut

INVALID = object()  # a value that failed validation (its error is already recorded)
REQUIRED = object()  # Key.default for keys a recipe must set


class Computed:
    """A default derived from other keys after the walk; `text` is how docs show it."""

    def __init__(self, text: str):
        self.text = text


@dataclass(frozen=True)
class Key:
    """One key: its type, its default (REQUIRED, a value or Computed) and what it is for."""

    type: _Type
    doc: str
    default: Any = REQUIRED


class _Type:
    """A value's type: converts and checks one raw YAML value, recording errors in the walk."""

    text = ""           # the type as docs/recipes.md shows it
    is_text = False     # True: an expanded ${...} stays a string; else it is re-read as a YAML scalar

    def convert(self, value: Any, path: tuple, ctx: Walk) -> Any:
        raise NotImplementedError



class Str(_Type):
    """A string, optionally non-empty and passing `check` (which returns a problem or None)."""

    text = "string"
    is_text = True

    def __init__(self, check: Callable[[str], str | None] | None = None, nonempty: bool = False):
        self.check, self.nonempty = check, nonempty

    def convert(self, value, path, ctx):
        if not isinstance(value, str):
            hint = " (quote it)" if isinstance(value, (bool, int, float)) else ""
            return ctx.fail(path, f"expected a string, got {describe(value)}{hint}")
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
            return ctx.fail(path, f"expected a path, got {describe(value)}")
        return ctx.resolve(value)


class UrlOrPath(_Type):
    """A URL (scheme://..., or git's user@host:path), kept as given; anything else is a host path, made absolute
    against the recipe's directory (a local git clone)."""

    text = "URL or path"
    is_text = True
    URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://|[\w.-]+@[\w.-]+:")

    def convert(self, value, path, ctx):
        if not isinstance(value, str) or not value.strip():
            return ctx.fail(path, f"expected a URL or a path, got {describe(value)}")
        return value if self.URL.match(value) else str(ctx.resolve(value))


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
            return ctx.fail(path, f"expected a boolean, got {describe(value)}")
        return value


class Int(_Type):
    """An integer (not a boolean) of at least `minimum`."""

    text = "integer"

    def __init__(self, minimum: int):
        self.minimum = minimum

    def convert(self, value, path, ctx):
        if not isinstance(value, int) or isinstance(value, bool) or value < self.minimum:
            return ctx.fail(path, f"expected an integer >= {self.minimum}, got {describe(value)}")
        return value


class Number(_Type):
    """A positive int or float (seconds), stored as float."""

    text = "number"

    def convert(self, value, path, ctx):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            return ctx.fail(path, f"expected a number > 0, got {describe(value)}")
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
            hint = did_you_mean(value, list(self.values)) if isinstance(value, str) else ""
            return ctx.fail(path, f"expected one of {options}, got {describe(value)}{hint}")
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
            return ctx.fail(path, f"expected a list, got {describe(value)}")
        if self.nonempty and not value:
            return ctx.fail(path, "expected a non-empty list")
        items = [ctx.value(self.item, raw, path + (i,)) for i, raw in enumerate(value)]
        if self.post:
            self.post(items, value, path, ctx)
        return INVALID if any(i is INVALID for i in items) else tuple(items)


class OneOrList(_Type):
    """One string or a list of them (alternatives), stored as a tuple; [] and null mean ()."""

    text = "string or list of strings"
    is_text = True

    def __init__(self, item: Str):
        self.item = item

    def convert(self, value, path, ctx):
        if value is None:
            return ()
        if isinstance(value, str):
            items = [ctx.value(self.item, value, path)]
        elif isinstance(value, list):
            items = [ctx.value(self.item, raw, path + (i,)) for i, raw in enumerate(value)]
        else:
            return ctx.fail(path, f"expected a string or a list of strings, got {describe(value)}")
        return INVALID if any(i is INVALID for i in items) else tuple(items)


class StrOrSection(_Type):
    """A string as shorthand for a mapping whose `key` it sets, or that mapping in full."""

    def __init__(self, key: str, section: Section):
        self.key, self.section = key, section
        self.text = "string or mapping"

    def convert(self, value, path, ctx):
        if isinstance(value, str):
            value = {self.key: value}
        return self.section.convert(value, path, ctx)


class StrMap(_Type):
    """A mapping of names to strings (environment, build args); `check_name` vets each name."""

    text = "map of string to string"

    def __init__(self, check_name: Callable[[str], str | None] | None = None, value: Str | None = None):
        self.check_name, self.item = check_name, value or Str()

    def convert(self, value, path, ctx):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            return ctx.fail(path, f"expected a mapping, got {describe(value)}")
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
        return INVALID if INVALID in out.values() else out


class MapOf(_Type):
    """A mapping of names to sections, so a recipe that `extends:` another can change one entry by its name;
    `check_name` vets each name, which goes into the item's `name_field`."""

    def __init__(self, item: Section, check_name: Callable[[str], str | None], name_field: str = "name"):
        self.item, self.check_name, self.name_field = item, check_name, name_field
        self.text = "mapping of name to mapping"

    def convert(self, value, path, ctx):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            return ctx.fail(path, f"expected a mapping of names to mappings, got {describe(value)}")
        out = {}
        for key, raw in value.items():
            problem = "names must be strings (quote it)" if not isinstance(key, str) else self.check_name(key)
            if problem:
                out[str(key)] = ctx.fail(path + (str(key),), problem)
                continue
            item = ctx.value(self.item, raw, path + (key,))
            out[key] = item if item is INVALID else dataclasses.replace(item, **{self.name_field: key})
        return INVALID if INVALID in out.values() else out


class Section(_Type):
    """A mapping with fixed keys; converts to `cls` (a dataclass) when given."""

    text = "mapping"

    def __init__(self, keys: dict[str, Key], cls: type | None = None):
        self.keys, self.cls = keys, cls

    def convert(self, value, path, ctx):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            return ctx.fail(path, f"expected a mapping, got {describe(value)}")
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
        if len(ctx.errors) > start:  # includes unknown keys, which leave no INVALID behind
            return INVALID
        return self.cls(**out) if self.cls else out



# --------------------------------------------------------------------------- the walk


class Walk:
    """State of one validation pass: where errors go, how variables and paths resolve."""

    def __init__(self, lookup: Callable[[str], str | None], base_dir: Path, owner: Callable[[tuple], str]):
        self.lookup, self.base_dir, self.owner = lookup, base_dir, owner
        self.errors: list[str] = []

    def fail(self, path: tuple, problem: str) -> object:
        self.errors.append(f"{self.owner(path)}: {_key_path(path)}: {problem}")
        return INVALID

    def value(self, kind: _Type, raw: Any, path: tuple) -> Any:
        """Expand variables in a string, then convert it as `kind`."""
        if isinstance(raw, str):
            if "\0" in raw:
                return self.fail(path, "contains a NUL character (\\0); remove it")
            try:
                expanded, used = expand(raw, self.lookup)
            except ExpandError as exc:
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
            hint = did_you_mean(str(key), known) or f"; known keys: {listed(known, 40)}"
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
        part = part if isinstance(part, int) else cut(str(part), 40)
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out

