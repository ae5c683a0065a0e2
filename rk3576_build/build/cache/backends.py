"""Where entries live: a directory (local or a shared mount) and an OCI registry (through
core/oci.py, the project's one registry edge).

Both read an entry in place, streaming (a directory's files, a registry's blobs), so
restoring makes no copy in scratch; a directory is written in place too (a temporary
directory renamed into place), and a registry gets a multi-GB archive in chunks, each
resumed from where the registry says the upload stands when one fails. A registry that
fails is an OSError here and a damaged blob a CacheEntryError: for the cache, neither is
the user's error (the step builds).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from rk3576_build.build.cache.entry import ARCHIVE, BLOCK, ENTRY_FILES, INDEX, MEDIA_TYPES, LocalEntry
from rk3576_build.build.cache.errors import CacheEntryError
from rk3576_build.core import oci
from rk3576_build.core.errors import UserError
from rk3576_build.core.text import redact_url

# Environment credentials for an OCI cache (the Docker config is read too); never in a recipe.
USER_ENV, PASSWORD_ENV = "RK3576_CACHE_USER", "RK3576_CACHE_PASSWORD"
MAX_MANIFEST_BYTES = 1 << 20


@contextlib.contextmanager
def _as_cache_errors() -> Iterator[None]:
    """The registry's failures as the cache sees them: a damaged blob is a refused entry, any
    other failure (unreachable, a login missing, a refusal) a failed backend."""
    try:
        yield
    except oci.DigestMismatch as exc:
        raise CacheEntryError(str(exc)) from None
    except oci.RegistryError as exc:
        raise ConnectionError(str(exc)) from None


class Backend(Protocol):
    """Where entries live. `entry` gives an entry's files to read in place (None: not there);
    `writer` a directory to pack an entry into, stored when the block ends."""

    url: str
    writable: bool
    wants_archive_sha256: bool  # pack should record the archive's digest (a registry names blobs by it)

    def has(self, key: str) -> bool: ...

    def entry(self, key: str): ...

    def writer(self, key: str, *, replace: bool = False, scratch: Path | None = None
               ) -> contextlib.AbstractContextManager[Path]: ...

    def store(self, key: str, entry_dir: Path, *, replace: bool = False) -> None: ...


class DirBackend:
    """A directory, local or a shared mount: `<dir>/<key[:2]>/<key>/{index.json,products.zst,...}`.

    An entry appears by renaming a complete temporary directory, so readers never see half of one.
    """

    wants_archive_sha256 = False

    def __init__(self, path: Path, *, writable: bool):
        self.path = Path(path)
        self.url = f"dir:{self.path}"
        self.writable = writable

    def _entry(self, key: str) -> Path:
        return self.path / key[:2] / key

    def has(self, key: str) -> bool:
        return (self._entry(key) / INDEX).is_file()

    def entry(self, key: str) -> LocalEntry | None:
        """The entry's files, read where they are (no copy)."""
        return LocalEntry(self._entry(key)) if self.has(key) else None

    @contextlib.contextmanager
    def writer(self, key: str, *, replace: bool = False, scratch: Path | None = None) -> Iterator[Path]:
        """A temporary directory beside the entry's place; renamed into place when the block ends."""
        final = self._entry(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.partial.", dir=final.parent))
        try:
            yield tmp
            self._commit(tmp, final, replace)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def store(self, key: str, entry_dir: Path, *, replace: bool = False) -> None:
        """Add a copy of the entry in `entry_dir`; `replace` puts it in place of a refused one."""
        if self._entry(key).exists() and not replace:
            return
        with self.writer(key, replace=replace) as tmp:
            for name in ENTRY_FILES:
                if (Path(entry_dir) / name).is_file():
                    shutil.copyfile(Path(entry_dir) / name, tmp / name)

    def _commit(self, tmp: Path, final: Path, replace: bool) -> None:
        if final.exists() and not replace:
            return  # another writer was first: same key, same content
        tmp.chmod(0o755)
        damaged = tmp.with_name(tmp.name + ".damaged")
        try:
            if replace and final.exists():
                os.rename(final, damaged)
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.exists():  # another writer won the race otherwise
                    raise
        finally:
            shutil.rmtree(damaged, ignore_errors=True)


class OciBackend:
    """An OCI registry: one artifact per key, tagged with the key.

    `oci://host[:port]/repo` (https; plain http for a loopback host, as Docker does) or
    `oci+http://...`. Credentials come from the Docker config (`docker login`) or
    RK3576_CACHE_USER/RK3576_CACHE_PASSWORD, never from the URL.
    """

    wants_archive_sha256 = True

    def __init__(self, url: str, *, writable: bool):
        parts = urlsplit(url)
        if parts.username or parts.password:
            raise UserError(f"cache URL {redact_url(url)}: credentials do not belong in a URL; use "
                            f"`docker login {parts.hostname}` or {USER_ENV}/{PASSWORD_ENV}")
        ref = oci.parse_reference(url, tag=False, what="cache URL")
        self.host, self.repo, self.insecure = ref.host, ref.repository, ref.insecure
        self.url = f"oci://{self.host}/{self.repo}"
        self.writable = writable
        self.registry = oci.Registry(self.host, insecure=self.insecure, user_env=USER_ENV, password_env=PASSWORD_ENV)

    @property
    def chunk_size(self) -> int:
        """Bytes per PATCH of an upload."""
        return self.registry.chunk_size

    @chunk_size.setter
    def chunk_size(self, value: int) -> None:
        self.registry.chunk_size = value

    def has(self, key: str) -> bool:
        with _as_cache_errors():
            return self.registry.manifest_exists(self.repo, key)

    def _layers(self, key: str) -> dict[str, tuple[str, int]] | None:
        """The artifact's files: name -> (digest, size), from its manifest (read bounded); None: no artifact."""
        with _as_cache_errors():
            pulled = self.registry.pull_manifest(self.repo, key, max_bytes=MAX_MANIFEST_BYTES)
        if pulled is None:
            return None
        layers = {}
        try:
            for layer in pulled[0]["layers"]:
                name = (layer.get("annotations") or {}).get(oci.TITLE)
                if name not in ENTRY_FILES or name in layers:
                    raise CacheEntryError(f"the artifact holds an unexpected layer {name!r}")
                digest, size = layer["digest"], layer["size"]
                if not oci.DIGEST_RE.fullmatch(str(digest)) or isinstance(size, bool) or not isinstance(size, int) \
                        or size < 0:
                    raise ValueError(f"layer {name}")
                layers[name] = (digest, size)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CacheEntryError(f"the artifact's manifest is unreadable ({exc})") from None
        return layers

    def entry(self, key: str) -> OciEntry | None:
        """The artifact's files, streamed from the registry when read (no copy in scratch)."""
        layers = self._layers(key)
        return None if layers is None else OciEntry(self, layers)

    @contextlib.contextmanager
    def writer(self, key: str, *, replace: bool = False, scratch: Path | None = None) -> Iterator[Path]:
        """A scratch directory, pushed when the block ends (the one local copy: an upload can resume from it)."""
        if scratch is not None:
            Path(scratch).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="rk3576-cache.", dir=scratch) as tmp:
            yield Path(tmp)
            self.store(key, Path(tmp), replace=replace)

    def store(self, key: str, entry_dir: Path, *, replace: bool = False) -> None:
        """Push the entry in `entry_dir` (a push replaces the tag, so `replace` needs nothing more)."""
        entry_dir = Path(entry_dir)
        known = {}
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            known[ARCHIVE] = "sha256:" + json.loads((entry_dir / INDEX).read_bytes())["archive"]["sha256"]
        layers = []
        with _as_cache_errors():
            for name in ENTRY_FILES:
                path = entry_dir / name
                if path.is_file():
                    digest, size = self.registry.push_blob(self.repo, path, known.get(name))
                    layers.append({"mediaType": MEDIA_TYPES[name], "digest": digest, "size": size,
                                   "annotations": {oci.TITLE: name}})
            config, size = self.registry.push_bytes(self.repo, oci.EMPTY_JSON_DATA)
            self.registry.push_manifest(self.repo, key, {
                "schemaVersion": 2, "mediaType": oci.OCI_MANIFEST, "layers": layers,
                "config": {"mediaType": oci.EMPTY_JSON, "digest": config, "size": size},
                "annotations": {"org.opencontainers.image.description": "rk3576-build cache entry"}})


class OciEntry:
    """An artifact's files, each streamed from the registry and checked against its layer's digest."""

    path = None

    def __init__(self, backend: OciBackend, layers: dict[str, tuple[str, int]]):
        self.backend, self.layers = backend, layers
        self.keep_dir: Path | None = None

    def keep(self, directory: Path) -> None:
        """Also copy what is read into `directory` (for a store that wants the entry too)."""
        self.keep_dir = Path(directory)

    def read(self, name: str, limit: int) -> bytes | None:
        if name not in self.layers:
            return None
        size = self.layers[name][1]
        if size > limit:
            raise CacheEntryError(f"{name} is {size} bytes, more than an entry's may be ({limit})")
        with self.open(name, size, None) as stream:
            return b"".join(iter(lambda: stream.read(BLOCK), b""))

    @contextlib.contextmanager
    def open(self, name: str, size: int, sha256: str | None) -> Iterator[_BlobStream]:
        if name not in self.layers:
            raise CacheEntryError(f"the artifact lacks {name}")
        digest, layer_size = self.layers[name]
        if layer_size != size or (sha256 is not None and f"sha256:{sha256}" != digest):
            raise CacheEntryError(f"{name}: the artifact's layer ({layer_size} bytes, {digest[:19]}) is not what "
                                  f"the index says ({size} bytes)")
        with contextlib.ExitStack() as stack:
            tee = stack.enter_context(open(self.keep_dir / name, "wb")) if self.keep_dir else None
            with _as_cache_errors():
                reader = stack.enter_context(self.backend.registry.open_blob(
                    self.backend.repo, digest, size, label=name, tee=tee))
            yield _BlobStream(reader)


class _BlobStream:
    """A blob being read, its failures as the cache's (see _as_cache_errors)."""

    def __init__(self, reader: oci.VerifiedReader):
        self.reader = reader

    def read(self, n: int = -1) -> bytes:
        with _as_cache_errors():
            return self.reader.read(n)

    def drain(self) -> None:
        while self.read(BLOCK):
            pass


def open_backend(url: str, *, writable: bool, base_dir: Path | None = None) -> Backend:
    """A backend from a URL: `oci://`/`oci+http://`, `dir:PATH`, `file://PATH` or a plain path
    (relative ones against `base_dir`, e.g. the recipe's directory)."""
    if url.startswith(("oci://", "oci+http://")):
        return OciBackend(url, writable=writable)
    if url.startswith("file://"):
        path = urlsplit(url).path
    elif url.startswith("dir:"):
        path = url[len("dir:"):]
    elif "://" in url:
        raise UserError(f"cache URL {redact_url(url)}: use dir:PATH, a path, or oci://host[:port]/repository")
    else:
        path = url
    if not path:
        raise UserError(f"cache URL {url!r}: no directory")
    path = os.path.expanduser(path)
    return DirBackend(Path(base_dir or ".", path) if not os.path.isabs(path) else Path(path), writable=writable)

