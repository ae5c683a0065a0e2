"""Where entries live: a directory (local or a shared mount) and an OCI registry through `oras`.

The only module that knows them (and the only one that imports oras). Both read an entry
in place, streaming (a directory's files, a registry's blobs), so restoring makes no copy
in scratch; a directory is written in place too (a temporary directory renamed into place),
and a registry gets a multi-GB archive in chunks, each resumed from where the registry says
the upload stands when one fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import types
from pathlib import Path
from typing import Iterator, Protocol
from urllib.parse import urlsplit

import requests

from rk3576_build.build.cache.entry import ARCHIVE, BLOCK, ENTRY_FILES, INDEX, MEDIA_TYPES, LocalEntry, \
    VerifyingStream
from rk3576_build.build.cache.errors import CacheEntryError
from rk3576_build.core.errors import UserError
from rk3576_build.core.files import sha256_file
from rk3576_build.core.text import redact_url

# Environment credentials for an OCI cache (the Docker config is read too); never in a recipe.
USER_ENV, PASSWORD_ENV = "RK3576_CACHE_USER", "RK3576_CACHE_PASSWORD"
_LOOPBACK = ("localhost", "127.0.0.1", "::1")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TITLE = "org.opencontainers.image.title"
MAX_MANIFEST_BYTES = 1 << 20
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")


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
    """An OCI registry through `oras`: one artifact per key, tagged with the key.

    `oci://host[:port]/repo` (https; plain http for a loopback host, as Docker does) or
    `oci+http://...`. Credentials come from the Docker config (`docker login`) or
    RK3576_CACHE_USER/RK3576_CACHE_PASSWORD, never from the URL.
    """

    wants_archive_sha256 = True
    chunk_size = 32 << 20  # a layer goes up in chunks of this size (POST, PATCH..., PUT)
    retries = 3            # failed PATCHes of one upload, each resumed where the registry stands

    def __init__(self, url: str, *, writable: bool):
        parts = urlsplit(url)
        if parts.username or parts.password:
            raise UserError(f"cache URL {redact_url(url)}: credentials do not belong in a URL; use "
                            f"`docker login {parts.hostname}` or {USER_ENV}/{PASSWORD_ENV}")
        repo = parts.path.strip("/")
        if not parts.netloc or not repo or parts.query or parts.fragment or ":" in repo or "@" in repo:
            raise UserError(f"cache URL {url}: expected oci://host[:port]/repository")
        self.host, self.repo = parts.netloc, repo
        self.url = f"oci://{self.host}/{self.repo}"
        self.writable = writable
        self.insecure = parts.scheme == "oci+http" or parts.hostname in _LOOPBACK
        self._client = None
        self._auth = "token"

    @property
    def client(self):
        """oras's registry client, its auth scheme (basic or token) as the registry asks for it.

        Raises ConnectionError when the registry does not answer.
        """
        if self._client is None:
            try:
                import oras.provider  # the `cache` extra: only an OCI cache needs it
            except ImportError as exc:
                raise UserError(f"the OCI cache {self.url} needs the oras package: "
                                "pip install 'rk3576-build[cache]'") from exc
            try:
                challenge = requests.get(f"{'http' if self.insecure else 'https'}://{self.host}/v2/",
                                         timeout=10).headers.get("Www-Authenticate", "")
            except requests.RequestException as exc:
                raise ConnectionError(f"the registry is unreachable ({type(exc).__name__})") from None
            self._auth = "basic" if challenge.lower().startswith("basic") else "token"
            client = oras.provider.Registry(hostname=self.host, insecure=self.insecure, auth_backend=self._auth)
            # oras retries every failed request for about two minutes; a cache must fail fast (the step builds).
            client.do_request = types.MethodType(oras.provider.Registry.do_request.__wrapped__, client)
            user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
            if user and password:
                client.auth.set_basic_auth(user, password)
            self._client = client
        return self._client

    def _ref(self, key: str) -> str:
        return f"{self.host}/{self.repo}:{key}"

    def _container(self, key: str):
        """oras's view of the artifact of `key`, with the credentials for its registry loaded."""
        container = self.client.get_container(self._ref(key))
        docker_config = os.environ.get("DOCKER_CONFIG")
        configs = [os.path.join(docker_config, "config.json")] if docker_config else None
        if configs and not os.path.exists(configs[0]):
            configs = None
        self.client.auth.load_configs(container, configs=configs)
        if self._auth == "basic" and not getattr(self.client.auth, "_basic_auth", None):
            raise PermissionError(f"the registry asks for a login: run `docker login {self.host}` "
                                  f"or set {USER_ENV} and {PASSWORD_ENV}")
        return container

    def _url(self, path: str) -> str:
        return f"{self.client.prefix}://{path}"

    def has(self, key: str) -> bool:
        container = self._container(key)
        response = self.client.do_request(self._url(container.manifest_url()), "HEAD",
                                          headers={"Accept": OCI_MANIFEST})
        return response.status_code == 200

    def _layers(self, key: str) -> dict[str, tuple[str, int]] | None:
        """The artifact's files: name -> (sha256, size), from its manifest (read bounded); None: no artifact."""
        container = self._container(key)
        with self.client.do_request(self._url(container.manifest_url()), "GET",
                                    headers={"Accept": OCI_MANIFEST}, stream=True) as response:
            if response.status_code == 404:
                return None
            response.raise_for_status()
            data = response.raw.read(MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES:
            raise CacheEntryError(f"the artifact's manifest is larger than {MAX_MANIFEST_BYTES} bytes")
        layers = {}
        try:
            for layer in json.loads(data)["layers"]:
                name = (layer.get("annotations") or {}).get(TITLE)
                if name not in ENTRY_FILES or name in layers:
                    raise CacheEntryError(f"the artifact holds an unexpected layer {name!r}")
                digest = _DIGEST.fullmatch(layer["digest"])
                size = layer["size"]
                if digest is None or isinstance(size, bool) or not isinstance(size, int) or size < 0:
                    raise ValueError(f"layer {name}")
                layers[name] = (digest.group(1), size)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CacheEntryError(f"the artifact's manifest is unreadable ({exc})") from None
        return layers

    def entry(self, key: str) -> "OciEntry | None":
        """The artifact's files, streamed from the registry when read (no copy in scratch)."""
        layers = self._layers(key)
        return None if layers is None else OciEntry(self, self._container(key), layers)

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
        container = self._container(key)  # credentials, and a clear error without them
        entry_dir = Path(entry_dir)
        known = {}
        try:
            archive = json.loads((entry_dir / INDEX).read_bytes())["archive"]
            known[ARCHIVE] = archive["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        layers = []
        for name in ENTRY_FILES:
            path = entry_dir / name
            if path.is_file():
                digest, size = self._upload(container, path, known.get(name))
                layers.append({"mediaType": MEDIA_TYPES[name], "digest": f"sha256:{digest}", "size": size,
                               "annotations": {TITLE: name}})
        config, _ = self._upload_bytes(container, b"{}")
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": layers,
                    "config": {"mediaType": "application/vnd.unknown.config.v1+json", "digest": f"sha256:{config}",
                               "size": 2},
                    "annotations": {"org.opencontainers.image.description": "rk3576-build cache entry"}}
        response = self.client.do_request(self._url(container.manifest_url()), "PUT",
                                          headers={"Content-Type": OCI_MANIFEST}, json=manifest)
        if response.status_code not in (200, 201):
            raise OSError(f"the registry refused the manifest (HTTP {response.status_code})")

    def _blob_exists(self, container, digest: str) -> bool:
        response = self.client.do_request(self._url(container.get_blob_url(f"sha256:{digest}")), "HEAD")
        return response.status_code == 200

    def _start_upload(self, container) -> str:
        response = self.client.do_request(self._url(container.upload_blob_url()), "POST",
                                          headers={"Content-Length": "0"})
        location = self.client._get_location(response, container)
        if response.status_code != 202 or not location:
            raise OSError(f"the registry refused an upload (HTTP {response.status_code})")
        return location

    def _upload_status(self, container, session: str) -> tuple[str, int]:
        """Where an upload stands: its session URL and the bytes the registry holds; a new upload
        when the registry cannot say (Docker Distribution cannot once a PATCH's answer, which
        carries the session's next state, was lost)."""
        try:
            response = self.client.do_request(session, "GET")
            end = re.fullmatch(r"0-(\d+)", response.headers.get("Range", ""))
            location = self.client._get_location(response, container)
            if response.status_code == 204 and end and location:
                # "0-0" is what an empty upload says (and one of a single byte): go on from 0.
                return location, int(end.group(1)) + 1 if int(end.group(1)) else 0
        except requests.RequestException:
            pass
        return self._start_upload(container), 0

    def _upload(self, container, path: Path, digest: str | None = None) -> tuple[str, int]:
        """Upload a file as a blob in chunks (memory stays at one chunk); returns (sha256, size).

        A blob the registry already has is not sent again (e.g. after a run that stopped
        before its manifest); a failed chunk is resent from where the registry says the
        upload stands, up to `retries` times.
        """
        size = path.stat().st_size
        digest = digest or sha256_file(path)
        if self._blob_exists(container, digest):
            return digest, size
        session, offset, failures = self._start_upload(container), 0, 0
        with open(path, "rb") as fh:
            while offset < size:
                fh.seek(offset)
                chunk = fh.read(min(self.chunk_size, size - offset))
                headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(chunk)),
                           "Content-Range": f"{offset}-{offset + len(chunk) - 1}"}
                try:
                    response = self.client.do_request(session, "PATCH", data=chunk, headers=headers)
                    location = self.client._get_location(response, container)
                    if response.status_code == 202 and location:
                        session, offset = location, offset + len(chunk)
                        continue
                    reason = f"HTTP {response.status_code}"
                except requests.RequestException as exc:
                    reason = type(exc).__name__
                failures += 1
                if failures > self.retries:
                    raise ConnectionError(f"uploading {path.name} failed at byte {offset} of {size} ({reason})")
                session, offset = self._upload_status(container, session)
        separator = "&" if "?" in session else "?"
        response = self.client.do_request(f"{session}{separator}digest=sha256:{digest}", "PUT",
                                          headers={"Content-Length": "0"})
        if response.status_code != 201:
            raise OSError(f"the registry refused {path.name} (HTTP {response.status_code})")
        return digest, size

    def _upload_bytes(self, container, data: bytes) -> tuple[str, int]:
        with tempfile.NamedTemporaryFile(prefix="rk3576-cache-blob.") as tmp:
            tmp.write(data)
            tmp.flush()
            return self._upload(container, Path(tmp.name))


class OciEntry:
    """An artifact's files, each streamed from the registry and checked against its layer's digest."""

    path = None

    def __init__(self, backend: OciBackend, container, layers: dict[str, tuple[str, int]]):
        self.backend, self.container, self.layers = backend, container, layers
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
            data = b"".join(iter(lambda: stream.read(BLOCK), b""))
        return data

    @contextlib.contextmanager
    def open(self, name: str, size: int, sha256: str | None) -> Iterator[VerifyingStream]:
        if name not in self.layers:
            raise CacheEntryError(f"the artifact lacks {name}")
        digest, layer_size = self.layers[name]
        if layer_size != size or (sha256 is not None and sha256 != digest):
            raise CacheEntryError(f"{name}: the artifact's layer ({layer_size} bytes, {digest[:12]}) is not what "
                                  f"the index says ({size} bytes)")
        client = self.backend.client
        with contextlib.ExitStack() as stack:
            response = stack.enter_context(client.do_request(
                self.backend._url(self.container.get_blob_url(f"sha256:{digest}")), "GET", stream=True))
            response.raise_for_status()
            tee = stack.enter_context(open(self.keep_dir / name, "wb")) if self.keep_dir else None
            yield VerifyingStream(response.raw, size, digest, tee=tee,
                                  mismatch=f"{name}: the download does not match its digest (cut short or damaged)")


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

