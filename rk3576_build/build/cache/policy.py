"""The cache's policy: read-only mirrors first, the read-write store last; a refused entry means a build.

Trust: an entry from a mirror must be signed (its index, which holds every file's sha256)
by one of `cache.trusted`, unless `cache.trust: any`; the store's own entries too once the
store signs (`cache.signing_key`), since then an unsigned one is not the store's. Signatures
are OpenSSH SSHSIG in the namespace NAMESPACE (core/signing.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from rk3576_build.build.cache.backends import open_backend
from rk3576_build.build.cache.entry import INDEX, SIGNATURE, pack, require_zstd, restore
from rk3576_build.build.cache.errors import CacheEntryError, CannotPlace
from rk3576_build.build.cache.products import changed, snapshot
from rk3576_build.core import signing
from rk3576_build.core.errors import UserError

log = logging.getLogger(__name__)

NAMESPACE = "rk3576-build-cache"
TRUST = ("signed", "any")


class _NotStorable(Exception):
    """What a step left cannot be stored (reported; the build goes on)."""


@dataclass
class Restored:
    url: str
    paths: list[str]


@dataclass
class Cache:
    """Backends in the order they are asked: read-only mirrors first, the read-write store last."""

    backends: list
    scratch: Path | None = None  # where an entry for a registry is packed (a work dir: entries can be big)
    report: Callable[[str], None] = dataclasses.field(default=log.warning)
    trusted: tuple[str, ...] = ()    # public keys ("TYPE BASE64") whose signatures are taken
    signing_key: Path | None = None  # signs what this cache stores
    trust: str = "signed"            # "any": unsigned entries from mirrors are taken too
    failed: set = dataclasses.field(default_factory=set)  # URLs of backends that failed: not asked again
    refused: set = dataclasses.field(default_factory=set)  # (URL, key) of entries refused

    @classmethod
    def from_urls(cls, mirrors: Iterable[str] = (), store: str | None = None, *, base_dir: Path | None = None,
                  scratch: Path | None = None, report: Callable[[str], None] = log.warning,
                  trusted: Iterable[str] = (), signing_key: str | Path | None = None,
                  trust: str = "signed") -> Cache:
        """A cache from URLs; relative paths (directories, keys) resolve against `base_dir`."""
        require_zstd()
        if trust not in TRUST:
            raise UserError(f"cache.trust: {trust!r} is not one of {', '.join(TRUST)}")
        backends = [open_backend(u, writable=False, base_dir=base_dir) for u in mirrors]
        if store:
            backends.append(open_backend(store, writable=True, base_dir=base_dir))
        keys = signing.load_trusted(list(trusted), base=base_dir)
        key_path = None
        if signing_key:
            key_path = Path(os.path.expanduser(str(signing_key)))
            key_path = key_path if key_path.is_absolute() else Path(base_dir or ".") / key_path
            if not key_path.is_file():
                raise UserError(f"cache.signing_key {key_path} not found: give an OpenSSH private key file "
                                "(or the .pub of a key in ssh-agent)")
            own = key_path if key_path.suffix == ".pub" else key_path.with_name(key_path.name + ".pub")
            if own.is_file():  # the store's own signatures are trusted
                keys += [k for k in signing.load_trusted(str(own)) if k not in keys]
        return cls(backends, scratch, report, tuple(keys), key_path, trust)

    @classmethod
    def from_spec(cls, spec, *, base_dir: Path | None = None, scratch: Path | None = None,
                  report: Callable[[str], None] = log.warning) -> Cache:
        """A cache from a recipe's `cache:` section (config's CacheSpec)."""
        return cls.from_urls(spec.mirrors, spec.store, base_dir=base_dir, scratch=scratch, report=report,
                             trusted=getattr(spec, "trusted", ()), signing_key=getattr(spec, "signing_key", None),
                             trust=getattr(spec, "trust", "signed"))

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

    def _verifier(self, backend) -> Callable[[bytes, bytes | None], None] | None:
        """The signature check for entries from `backend`; None when its entries need none."""
        if self.trust == "any" or (backend.writable and self.signing_key is None):
            return None

        def check(index: bytes, signature: bytes | None) -> None:
            if not signature:
                raise CacheEntryError("unsigned: name its signer's public key in cache.trusted "
                                      "(or set cache.trust: any to take unsigned entries)")
            if not self.trusted:
                raise CacheEntryError("signed, but cache.trusted names no signer to check it against")
            try:
                signing.verify(index, signature, list(self.trusted), NAMESPACE, label=INDEX)
            except signing.SignatureError as exc:
                raise CacheEntryError(str(exc)) from None
        return check

    def restore(self, key: str, root: Path) -> Restored | None:
        """Put the entry of `key` in place under `root` from the first backend with a good one.

        A damaged, partial, hostile or unsigned entry is refused and reported, and the next
        backend is asked; None means the step has to be built. An entry from a mirror is
        copied to the store.
        """
        for backend in self.backends:
            source = self._ask(backend, "fetch", key, backend.entry)
            if not source:
                continue
            # Like sstate from a mirror: the read-write store keeps a copy of what a mirror gave.
            stores = [s for s in self.backends if s is not backend and s.writable
                      and s.url not in self.failed and not self._ask(s, "look up", key, s.has)]
            with contextlib.ExitStack() as stack:
                copy = source.path
                if stores and copy is None:  # streamed from a registry: keep what is read for the store
                    copy = Path(stack.enter_context(self._scratch_dir()))
                    source.keep(copy)
                try:
                    paths = restore(source, root, key=key, verify=self._verifier(backend))
                except CacheEntryError as exc:
                    self.report(f"cache: refused entry {key[:12]} from {backend.url}: {exc}")
                    self.refused.add((backend.url, key))
                    continue
                except CannotPlace as exc:  # here, not the entry: no other backend's would fare better
                    self.report(f"cache: could not put entry {key[:12]} from {backend.url} in place ({exc}); "
                                "nothing of it was left; building the step")
                    return None
                except UserError:
                    raise
                except Exception as exc:  # the backend failed while streaming: the step builds
                    self.failed.add(backend.url)
                    self.report(f"cache: could not fetch {key[:12]} from {backend.url} ({type(exc).__name__}: "
                                f"{exc}); not using it again in this run")
                    continue
                for store in stores:
                    self._ask(store, "store", key, lambda k, store=store, copy=copy: store.store(k, copy) or True)
                return Restored(backend.url, paths)
        return None

    def save(self, key: str, root: Path, paths: Iterable[str], meta: Mapping | None = None) -> list[str]:
        """Store `paths` under `key` in every writable backend that lacks it; returns their URLs.

        A store that fails is reported, never fatal: the cache must not change the build.
        """
        # A writable backend whose entry was refused gets a good one in its place.
        targets = [b for b in self.backends if b.writable]
        targets = [b for b in targets if (b.url, key) in self.refused or not self._ask(b, "look up", key, b.has)]
        stored = []
        paths = list(paths)
        for backend in targets:
            replace = (backend.url, key) in self.refused
            try:
                ok = self._ask(backend, "store", key,
                               lambda k, b=backend, r=replace: self._write(b, k, root, paths, meta, r))
            except _NotStorable as exc:
                self.report(f"cache: not storing {key[:12]}: {exc}")
                break
            if ok:
                stored.append(backend.url)
                self.refused.discard((backend.url, key))
        return stored

    def _write(self, backend, key: str, root: Path, paths: list[str], meta: Mapping | None, replace: bool) -> bool:
        """Pack (and sign) the entry straight into what the backend stores."""
        with backend.writer(key, replace=replace, scratch=self.scratch) as entry_dir:
            try:
                pack(root, paths, entry_dir, key=key, meta=meta, archive_sha256=backend.wants_archive_sha256)
            except (CacheEntryError, ValueError, FileNotFoundError) as exc:
                raise _NotStorable(str(exc)) from None
            if self.signing_key is not None:
                try:
                    signature = signing.sign((entry_dir / INDEX).read_bytes(), self.signing_key, NAMESPACE)
                except UserError as exc:
                    raise _NotStorable(f"cannot sign it ({exc})") from None
                (entry_dir / SIGNATURE).write_bytes(signature)
        return True

    def _ask(self, backend, what: str, key: str, call):
        """`call(key)`'s answer, or None when the backend failed (reported; not asked again)."""
        if backend.url in self.failed:
            return None
        try:
            return call(key)
        except (UserError, _NotStorable):
            raise
        except CacheEntryError as exc:
            self.report(f"cache: refused entry {key[:12]} from {backend.url}: {exc}")
            self.refused.add((backend.url, key))
        except Exception as exc:  # a cache that fails must never fail the build
            self.failed.add(backend.url)
            self.report(f"cache: could not {what} {key[:12]} at {backend.url} ({type(exc).__name__}: {exc}); "
                        "not using it again in this run")
        return None


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
