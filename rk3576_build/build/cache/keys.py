"""Portable cache keys: the sha256 of a step's inputs, never of paths, times or host names."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

KEY_FORMAT = 1  # bump when the key inputs change meaning (every entry is then a miss)


@dataclass(frozen=True)
class StepKey:
    key: str
    inputs: dict  # what went into the key, as `info` shows it


def step_key(inputs: Mapping) -> StepKey:
    """The cache key of a step: sha256 over its inputs (plain JSON data, canonical form).

    Pass digests and relative names, not host paths: a `Path` anywhere is refused, since the
    same inputs on two machines must give the same key.
    """
    plain = _plain_data(dict(inputs), "inputs")
    data = {"format": KEY_FORMAT, "inputs": plain}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return StepKey(hashlib.sha256(text.encode()).hexdigest(), plain)


def _plain_data(value, where: str):
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"{where}: keys must be strings")
        return {k: _plain_data(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_data(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"{where}: {type(value).__name__} is not portable key data (pass a digest or a name)")

