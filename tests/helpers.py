"""Plumbing the tests share: the repository's path and the real command line in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"  # the steering repo's shared/ (CI clones it beside this one)


def rk(*args: str, cwd: Path = REPO, env: dict | None = None, timeout: float = 300,
       keep_settings: bool = False) -> subprocess.CompletedProcess:
    """`rk3576-build ARGS` as a user runs it: a subprocess, its own environment (RK3576_* settings
    of the caller dropped unless `keep_settings`), output captured as text."""
    environ = {k: v for k, v in os.environ.items() if keep_settings or not k.startswith("RK3576_")}
    return subprocess.run([sys.executable, "-m", "rk3576_build.cli", *args], cwd=cwd, capture_output=True,
                          text=True, env={**environ, **(env or {})}, timeout=timeout)
