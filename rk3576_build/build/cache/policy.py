"""The cache's policy: read-only mirrors first, the read-write store last; a refused entry means a build."""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

from rk3576_build.build.cache.backends import open_backend
from rk3576_build.build.cache.entry import CacheEntryError, pack, restore
from rk3576_build.build.cache.products import changed, snapshot
from rk3576_build.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Restored:
    url: str
    paths: list[str]


@dataclass
class Cache:
    """Backends in the order they are asked: read-only mirrors first, the read-write store last."""

    backends: list
    scratch: Path | None = None  # where entries are packed and fetched (a work dir: entries can be big)
    report: Callable[[str], None] = dataclasses.field(default=log.warning)
    failed: set = dataclasses.field(default_factory=set)  # URLs of backends that failed: not asked again
    refused: set = dataclasses.field(default_factory=set)  # (URL, key) of entries refused as damaged

    @classmethod
    def from_urls(cls, mirrors: Iterable[str] = (), store: str | None = None, *, base_dir: Path | None = None,
                  scratch: Path | None = None, report: Callable[[str], None] = log.warning) -> "Cache":
        backends = [open_backend(u, writable=False, base_dir=base_dir) for u in mirrors]
        if store:
            backends.append(open_backend(store, writable=True, base_dir=base_dir))
        return cls(backends, scratch, report)

    def _scratch_dir(self) -> tempfile.TemporaryDirectory:
        if self.scratch is not None:
            Path(self.scratch).mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryDirectory(prefix="rk3576-cache.", dir=self.scratch)

    def where(self, key: str) -> str | None:
        """The URL of the first backend holding `key` (what `plan` shows), None if none does."""
        for backend in self.backends:
            if self._ask(backend, "look up", key, backend.has):
                return backend.url
        return None

    def restore(self, key: str, root: Path) -> Restored | None:
        """Put the entry of `key` in place under `root` from the first backend with a good one.

        A damaged or partial entry is refused and reported, and the next backend is asked;
        None means the step has to be built. An entry from a mirror is copied to the store.
        """
        for backend in self.backends:
            with self._scratch_dir() as tmp:
                if not self._ask(backend, "fetch", key, lambda k: backend.fetch(k, Path(tmp))):
                    continue
                try:
                    restored = Restored(backend.url, restore(Path(tmp), root, key=key))
                except CacheEntryError as exc:
                    self.report(f"cache: refused entry {key[:12]} from {backend.url}: {exc}")
                    self.refused.add((backend.url, key))
                    continue
                # Like sstate from a mirror: the read-write store keeps a copy of what a mirror gave.
                for store in self.backends:
                    if store is not backend and store.writable and not self._ask(store, "look up", key, store.has):
                        self._ask(store, "store", key, lambda k: store.store(k, Path(tmp)) or True)
                return restored
        return None

    def save(self, key: str, root: Path, paths: Iterable[str], meta: Mapping | None = None) -> list[str]:
        """Store `paths` under `key` in every writable backend that lacks it; returns their URLs.

        A store that fails is reported, never fatal: the cache must not change the build.
        """
        # A writable backend whose entry was refused gets a good one in its place.
        targets = [b for b in self.backends if b.writable]
        targets = [b for b in targets if (b.url, key) in self.refused or not self._ask(b, "look up", key, b.has)]
        if not targets:
            return []
        stored = []
        with self._scratch_dir() as tmp:
            pack(root, paths, Path(tmp), key=key, meta=meta)
            for backend in targets:
                replace = (backend.url, key) in self.refused
                if self._ask(backend, "store", key, lambda k: backend.store(k, Path(tmp), replace=replace) or True):
                    stored.append(backend.url)
                    self.refused.discard((backend.url, key))
        return stored

    def _ask(self, backend, what: str, key: str, call) -> bool:
        if backend.url in self.failed:
            return False
        try:
            return bool(call(key))
        except UserError:
            raise
        except CacheEntryError as exc:
            self.report(f"cache: refused entry {key[:12]} from {backend.url}: {exc}")
        except Exception as exc:  # a cache that fails must never fail the build
            self.failed.add(backend.url)
            self.report(f"cache: could not {what} {key[:12]} at {backend.url} ({type(exc).__name__}: {exc}); "
                        "not using it again in this run")
        return False


def restore_or_build(cache: Cache | None, key: str, root: Path, build: Callable[[], None], *,
                     products: Iterable[str], meta: Mapping | None = None) -> dict:
    """Run one step through the cache: restore `key` under `root`, or `build()` and store the result.

    What is stored: the declared `products` and everything the build wrote where build.sh
    steps leave what the next ones read (see `snapshot`: e.g. parameter.txt, lunch's
    output/.config and device/rockchip/.chip). Returns the record
    for the step's stamp and the manifest: {"result": "built"|"restored", "key", "from"/"stored_to"}.
    """
    products = list(products)
    if cache is not None:
        restored = cache.restore(key, root)
        if restored is not None:
            missing = [p for p in products if not os.path.lexists(Path(root) / p)]
            if not missing:
                return {"result": "restored", "key": key, "from": restored.url}
            cache.report(f"cache: entry {key[:12]} from {restored.url} lacks {', '.join(missing)}; building")
    before = snapshot(root)
    build()
    stored = []
    if cache is not None:
        wrote = changed(before, snapshot(root))
        stored = cache.save(key, root, [*products, *wrote], meta)
    return {"result": "built", "key": key, "stored_to": stored}
