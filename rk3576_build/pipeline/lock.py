"""The work directory's lock as the pipeline takes it: holding it also clears what a killed run left."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from rk3576_build.build.container import owned_by
from rk3576_build.config.workspace import work_lock
from rk3576_build.core import logs

_log = logs.get(__name__)


def lock_workdir(lock: Path) -> AbstractContextManager[None]:
    """One run per work directory; taking the lock removes the containers a killed run of it left running
    (container.owned_by), so two containers never build one tree."""
    return work_lock(lock, hold=lambda workdir: owned_by(workdir, _log.warning))
