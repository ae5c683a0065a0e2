"""Boards chosen by name (a recipe's flash.method): how a flashed board is brought up so verify can reach its console.

A real board (upgrade_tool, rkdeveloptool) is already up after flashing: verify reaches it by
the console its settings name, so its provider has no `boot`. A guest package registers a
provider of its own below as "module:attribute", imported only when a recipe names its method:
the demo's virtual board (QEMU) is one, so nothing on the build path imports the demo.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

# (the flashed board directory, a log file) -> the board's console URL while it is booted.
Boot = Callable[[Path, Path], AbstractContextManager[str]]

# Providers that live in guest packages, by flash method ("module:attribute", imported on first use).
REGISTERED = {"virtual": "rk3576_build.demo.provider:VIRTUAL"}


@dataclass(frozen=True)
class Provider:
    """What a flash method means for verify: `boot` brings the flashed board up (None: it is up already)."""

    method: str
    boot: Boot | None = None

    @property
    def log_name(self) -> str:
        """The log file of the board `boot` brings up, in the work directory's logs/."""
        return f"{self.method}-board.log"


def provider(method: str) -> Provider:
    """The provider of flash method `method`: a registered one, else a board that is up once flashed."""
    target = REGISTERED.get(method)
    if target is None:
        return Provider(method)
    module, _, name = target.partition(":")
    found = getattr(importlib.import_module(module), name)
    if not isinstance(found, Provider) or found.method != method:
        raise TypeError(f"{target} is not the provider of flash method {method!r}")
    return found
