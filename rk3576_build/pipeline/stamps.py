"""What the stages record under <workdir>/state: JSON stamps, gate records, and the state of a step's products.

A stamp holds only deterministic content, written atomically (a half-written stamp must
never count as done): a stage that reruns with the same inputs rewrites the same bytes,
so the doit tasks that depend on it (file_dep) stay up to date.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from rk3576_build.config.layout import Layout
from rk3576_build.config.model import Product
from rk3576_build.core.errors import UserError
from rk3576_build.core.files import json_sha256, write_json

# The checks every build step waits for (task -> the short name of its records); `shell` waits for none.
GATES = {"builder:probe": "probe", "builder:check": "check", "kernel:preflight": "preflight"}


def write_stamp(path: Path, data: dict) -> None:
    """Write a stamp atomically, keys sorted (equal data, equal bytes), readable by all like any file here."""
    write_json(path, data, mode=0o644)


def read_stamp(path: Path) -> dict:
    return json.loads(path.read_text())


def digest(data: Any) -> str:
    """sha256 of `data` as canonical JSON (keys sorted)."""
    return json_sha256(data)


def file_digest(path: Path) -> str:
    """sha256 of a stamp's bytes (stamps are small)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- a step's products -------------------------------------------------------------------

ProductState = list | None


def product_state(path: Path) -> ProductState:
    """A product's identity and times, of the link itself and of what it points to; None when absent."""
    try:
        link = os.lstat(path)
    except FileNotFoundError:
        return None
    try:
        real = os.stat(path)
    except FileNotFoundError:
        return [link.st_ino, link.st_mtime_ns, link.st_ctime_ns, None]  # a dangling link
    return [link.st_ino, link.st_mtime_ns, link.st_ctime_ns, [real.st_ino, real.st_mtime_ns, real.st_ctime_ns]]


def unwritten_products(sdk: Path, products: Iterable[Product], before: dict) -> list[str]:
    """What a step did not do: products missing afterwards, or left as they were (unless unchanged_ok)."""
    problems = []
    for product in products:
        after = product_state(sdk / product.path)
        if after is None or after[3] is None:
            problems.append(f"did not produce {product.path}")
        elif after == before.get(product.path) and not product.unchanged_ok:
            problems.append(f"did not write {product.path} (it is exactly as before the step)")
    return problems


# -- the gates' records ------------------------------------------------------------------

class _HasLayout(Protocol):
    layout: Layout


Stage = TypeVar("Stage", bound=Callable[..., None])


class GateFailed(UserError):
    """A gate's failure whose one-line reason (`summary`, what `shell` shows) is not its message's first line."""

    def __init__(self, message: str, exit_code: int | None = None, *, summary: str):
        super().__init__(message, exit_code)
        self.summary = summary


def gate(task: str) -> Callable[[Stage], Stage]:
    """A gate stage that records why it failed (`failed-<gate>.json`, read by `shell`) and clears it on passing.

    A GateFailed's `summary` is the one-line reason; any other UserError's is its first line.
    """
    def wrap(method: Stage) -> Stage:
        @functools.wraps(method)
        def run(self: _HasLayout, *args: Any, **kwargs: Any) -> None:
            record = self.layout.failed(GATES[task])
            try:
                method(self, *args, **kwargs)
            except UserError as exc:
                summary = (exc.summary if isinstance(exc, GateFailed) else None) \
                    or str(exc).strip().splitlines()[0].rstrip(":")
                write_stamp(record, {"task": task, "summary": summary, "error": str(exc), "time": time.time()})
                raise
            record.unlink(missing_ok=True)
        return run  # type: ignore[return-value]
    return wrap


def read_failure(layout: Layout, task: str) -> str | None:
    """The one-line reason `task` (a gate) failed on its last run; None when it passed or never ran."""
    record = layout.failed(GATES[task])
    try:
        return read_stamp(record)["summary"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
