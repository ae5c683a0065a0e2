"""The shared build cache: a step's products stored under a portable key, like BitBake's sstate.

keys (portable step keys), products (what a step left), entry (the entry format: sparse,
zstd, one pass), gate (where a restore may write, all or nothing), backends (a directory,
an OCI registry), policy (mirrors first, the store last, signatures).
"""

from rk3576_build.build.cache.backends import PASSWORD_ENV, USER_ENV, DirBackend, OciBackend, open_backend
from rk3576_build.build.cache.entry import ARCHIVE, ARCHIVE_V1, INDEX, SIGNATURE, pack, parse_index, read_index, restore
from rk3576_build.build.cache.errors import CacheEntryError
from rk3576_build.build.cache.keys import StepKey, step_key
from rk3576_build.build.cache.policy import NAMESPACE, Cache, Restored, restore_or_build
from rk3576_build.build.cache.products import changed, collect, snapshot

__all__ = ["ARCHIVE", "ARCHIVE_V1", "INDEX", "NAMESPACE", "PASSWORD_ENV", "SIGNATURE", "USER_ENV", "Cache",
           "CacheEntryError", "DirBackend", "OciBackend", "Restored", "StepKey", "changed", "collect",
           "open_backend", "pack", "parse_index", "read_index", "restore", "restore_or_build", "snapshot",
           "step_key"]
