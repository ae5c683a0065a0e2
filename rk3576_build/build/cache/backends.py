"""Where entries live: a directory (local or a shared mount) and an OCI registry through `oras`.

The only module that knows them (and the only one that imports oras).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import types
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from rk3576_build.build.cache.entry import ENTRY_FILES, INDEX, MEDIA_TYPES, CacheEntryError
from rk3576_build.errors import UserError
from rk3576_build.fetch import redact_url
from rk3576_build.manifest import sha256_file

# Environment credentials for an OCI cache (the Docker config is read too); never in a recipe.
USER_ENV, PASSWORD_ENV = "RK3576_CACHE_USER", "RK3576_CACHE_PASSWORD"
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


class Backend(Protocol):
    """Where entries live. `fetch` copies an entry's files into `dest` (False: not there)."""

    url: str
    writable: bool

    def has(self, key: str) -> bool: ...

    def fetch(self, key: str, dest: Path) -> bool: ...

    def store(self, key: str, entry_dir: Path, *, replace: bool = False) -> None: ...


class DirBackend:
    """A directory, local or a shared mount: `<dir>/<key[:2]>/<key>/{index.json,products.tar.gz}`.

    An entry appears by renaming a complete temporary directory, so readers never see half of one.
    """

    def __init__(self, path: Path, *, writable: bool):
        self.path = Path(path)
        self.url = f"dir:{self.path}"
        self.writable = writable

    def _entry(self, key: str) -> Path:
        return self.path / key[:2] / key

    def has(self, key: str) -> bool:
        return (self._entry(key) / INDEX).is_file()

    def fetch(self, key: str, dest: Path) -> bool:
        if not self.has(key):
            return False
        for name in ENTRY_FILES:
            source = self._entry(key) / name
            if source.exists():  # a missing archive is reported by restore()
                shutil.copyfile(source, Path(dest) / name)
        return True

    def store(self, key: str, entry_dir: Path, *, replace: bool = False) -> None:
        """Add the entry; `replace` puts it in place of a damaged one under the same key."""
        final = self._entry(key)
        if final.exists() and not replace:
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.partial.", dir=final.parent))
        try:
            for name in ENTRY_FILES:
                shutil.copyfile(Path(entry_dir) / name, tmp / name)
                with open(tmp / name, "rb") as fh:
                    os.fsync(fh.fileno())
            tmp.chmod(0o755)
            if replace and final.exists():
                os.rename(final, tmp.with_name(tmp.name + ".damaged"))
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.exists():  # another writer won the race otherwise: same key, same content
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(tmp.with_name(tmp.name + ".damaged"), ignore_errors=True)


class OciBackend:
    """An OCI registry through `oras`: one artifact per key, tagged with the key.

    `oci://host[:port]/repo` (https; plain http for a loopback host, as Docker does) or
    `oci+http://...`. Credentials come from the Docker config (`docker login`) or
    RK3576_CACHE_USER/RK3576_CACHE_PASSWORD, never from the URL.
    """

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
                import oras.provider
            except ImportError as exc:
                raise UserError(f"the OCI cache {self.url} needs the oras package: "
                                "pip install 'rk3576-build[cache]'") from exc
            import requests

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

    def has(self, key: str) -> bool:
        container = self._container(key)
        response = self.client.do_request(f"{self.client.prefix}://{container.manifest_url()}", "HEAD",
                                          headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        return response.status_code == 200

    def fetch(self, key: str, dest: Path) -> bool:
        if not self.has(key):
            return False
        container = self._container(key)
        manifest = self.client.get_manifest(container)
        for layer in manifest.get("layers", []):
            name = (layer.get("annotations") or {}).get("org.opencontainers.image.title")
            if name not in ENTRY_FILES:
                raise CacheEntryError(f"the artifact holds an unexpected layer {name!r}")
            target = Path(dest) / name
            self.client.download_blob(container, layer["digest"], str(target))
            if f"sha256:{sha256_file(target)}" != layer["digest"]:
                raise CacheEntryError(f"{name}: the download does not match its digest (cut short or damaged)")
        return True

    def store(self, key: str, entry_dir: Path, *, replace: bool = False) -> None:
        self._container(key)  # (a push always replaces the tag, so `replace` needs nothing more)  # credentials, and a clear error without them
        files = [f"{Path(entry_dir) / name}:{MEDIA_TYPES[name]}" for name in ENTRY_FILES]
        self.client.push(target=self._ref(key), files=files, disable_path_validation=True, quiet=True,
                         manifest_annotations={"org.opencontainers.image.description": "rk3576-build cache entry"})


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

