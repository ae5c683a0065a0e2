"""Progress bars for long transfers and extractions: shown on a terminal, quiet in logs and CI."""

from __future__ import annotations

import os
import sys

from tqdm import tqdm


def progress_enabled(requested: bool | None = None) -> bool:
    """Resolve a progress switch: None means auto (stderr is a TTY and CI is not set)."""
    if requested is not None:
        return requested
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return False
    return sys.stderr.isatty()


def make_progress(total: int | None, desc: str, unit: str = "B", *,
                  enabled: bool | None = None, initial: int = 0) -> tqdm:
    """A tqdm bar (bytes scaled to KiB/MiB, rate, ETA), disabled unless `progress_enabled()`."""
    scaled = unit == "B"
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=scaled,
                unit_divisor=1024 if scaled else 1000, initial=initial,
                disable=not progress_enabled(enabled), leave=False,
                dynamic_ncols=True, file=sys.stderr)
