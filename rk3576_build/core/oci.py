"""The one edge to OCI registries: oras (and the requests under it) behind a small API.

- `parse_reference`: `oci://host[:port]/repository[:tag|@sha256:...]` (https; plain http for a
  loopback host, as Docker does, or with `oci+http://`); credentials in a URL are refused.
- `Registry`: credentials from the Docker config (`docker login`) or two environment variables,
  never from a URL or a recipe; blobs pushed in chunks streamed from disk (memory stays at one
  chunk) and resumed where the registry says the upload stands; manifests pushed and pulled with
  a size bound; blobs read through a stream that refuses more bytes than declared and checks the
  digest at its end, or written beside their place and renamed only once the digest matched.

Digests are `sha256:<hex>` strings throughout.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from rk3576_build.core.errors import UserError
from rk3576_build.core.files import CHUNK, sha256_file
from rk3576_build.core.text import redact_url

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
# OCI 1.1: an artifact with no config of its own points at this empty JSON blob.
EMPTY_JSON = "application/vnd.oci.empty.v1+json"
EMPTY_JSON_DATA = b"{}"
TITLE = "org.opencontainers.image.title"
MAX_MANIFEST_BYTES = 4 << 20
USER_ENV, PASSWORD_ENV = "RK3576_REGISTRY_USER", "RK3576_REGISTRY_PASSWORD"
LOOPBACK = ("localhost", "127.0.0.1", "::1")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_REPO_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")


class RegistryError(UserError):
    """The registry is unreachable, refused a request, asks for a login, or sent something unusable."""


class DigestMismatch(RegistryError):
    """Content that is not what its digest or declared size says (damaged or tampered): a failed check."""

    exit_code = 1


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Reference:
    """Where an artifact lives: registry host, repository, and a tag or a digest (or neither)."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None
    insecure: bool = False

    @property
    def ref(self) -> str | None:
        """What the manifest URL names: the digest when there is one, else the tag."""
        return self.digest or self.tag

    def __str__(self) -> str:
        suffix = f"@{self.digest}" if self.digest else f":{self.tag}" if self.tag else ""
        return f"{self.host}/{self.repository}{suffix}"

    @property
    def url(self) -> str:
        return f"{'oci+http' if self.insecure and self.hostname not in LOOPBACK else 'oci'}://{self}"

    @property
    def hostname(self) -> str:
        return urlsplit(f"//{self.host}").hostname or self.host

    def at(self, digest: str) -> Reference:
        """The same repository pinned to a manifest digest."""
        return Reference(self.host, self.repository, None, digest, self.insecure)


def parse_reference(url: str, *, tag: bool | None = None, what: str = "registry URL") -> Reference:
    """`oci://host[:port]/repository[:tag|@sha256:...]`; `tag=True` needs a tag or digest, `tag=False`
    refuses one (a cache names its artifacts itself)."""
    text = str(url).strip()
    if not text.startswith(("oci://", "oci+http://")):
        raise UserError(f"{what} {redact_url(text)}: expected oci://HOST[:PORT]/REPOSITORY[:TAG]")
    parts = urlsplit(text)
    if parts.username or parts.password:
        raise UserError(f"{what} {redact_url(text)}: credentials do not belong in a URL; use "
                        f"`docker login {parts.hostname}` or {USER_ENV}/{PASSWORD_ENV}")
    path = parts.path.strip("/")
    digest = None
    if "@" in path:
        path, digest = path.split("@", 1)
        if not DIGEST_RE.fullmatch(digest):
            raise UserError(f"{what} {text}: {digest!r} is not a sha256 digest (sha256:64 hex digits)")
    name_tag = path.rsplit("/", 1)
    ref_tag = None
    if ":" in name_tag[-1]:
        last, ref_tag = name_tag[-1].split(":", 1)
        path = "/".join([*name_tag[:-1], last])
        if not _TAG_RE.fullmatch(ref_tag):
            raise UserError(f"{what} {text}: {ref_tag!r} is not a valid tag")
    if not parts.netloc or not path or parts.query or parts.fragment or not _REPO_RE.fullmatch(path):
        raise UserError(f"{what} {text}: expected oci://HOST[:PORT]/REPOSITORY[:TAG] "
                        "(a repository is lower case: a-z, 0-9, '.', '_', '-', '/')")
    if tag is True and not (ref_tag or digest):
        raise UserError(f"{what} {text}: name a tag (oci://{parts.netloc}/{path}:TAG) or a digest")
    if tag is False and (ref_tag or digest):
        raise UserError(f"{what} {text}: no tag or digest here, only oci://HOST[:PORT]/REPOSITORY")
    insecure = parts.scheme == "oci+http" or parts.hostname in LOOPBACK
    return Reference(parts.netloc, path, ref_tag, digest, insecure)


class VerifiedReader:
    """A blob's bytes: more than `size` is refused at once, and at its end another size or a
    digest other than `digest` raises DigestMismatch. What it reads may be copied to `tee`."""

    def __init__(self, raw, size: int, digest: str, *, label: str, tee: IO[bytes] | None = None):
        self.raw, self.size, self.digest, self.label, self.tee = raw, size, digest, label, tee
        self.sha = hashlib.sha256()
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        want = self.size - self.count + 1  # one byte more shows a blob longer than declared
        data = self.raw.read(want if n is None or n < 0 else min(n, want))
        if not data:
            if self.count != self.size:
                raise DigestMismatch(f"{self.label}: cut short ({self.count} of {self.size} bytes)")
            if "sha256:" + self.sha.hexdigest() != self.digest:
                raise DigestMismatch(f"{self.label}: its content does not match its digest (damaged or tampered)")
            return b""
        self.count += len(data)
        if self.count > self.size:
            raise DigestMismatch(f"{self.label}: longer than its declared {self.size} bytes")
        self.sha.update(data)
        if self.tee is not None:
            self.tee.write(data)
        return data

    def drain(self) -> None:
        """Read to the end, so the size and the digest are checked."""
        while self.read(CHUNK):
            pass


class Registry:
    """One registry host through oras: its auth scheme (basic or token) is asked once, credentials
    come from the Docker config or the `user_env`/`password_env` variables."""

    chunk_size = 32 << 20  # a blob goes up in chunks of this size (POST, PATCH..., PUT)
    retries = 3            # failed PATCHes of one upload, each resumed where the registry stands
    timeout = 10

    def __init__(self, host: str, *, insecure: bool = False, user_env: str = USER_ENV,
                 password_env: str = PASSWORD_ENV):
        self.host, self.insecure = host, insecure
        self.user_env, self.password_env = user_env, password_env
        self._client = None
        self._auth = "token"
        self._credentials_loaded = False

    @classmethod
    def for_reference(cls, ref: Reference, **kwargs) -> Registry:
        return cls(ref.host, insecure=ref.insecure, **kwargs)

    # -- plumbing ----------------------------------------------------------------------

    @property
    def client(self):
        """oras's registry client (RegistryError when the registry does not answer)."""
        if self._client is None:
            try:
                import oras.auth  # the optional extra (pip install 'rk3576-build[cache]'): only registries need it
                import oras.provider
            except ImportError:
                raise UserError(f"the registry {self.host} needs the oras package: "
                                "pip install 'rk3576-build[cache]'") from None
            client = oras.provider.Registry(hostname=self.host, insecure=self.insecure)
            try:  # which auth the registry asks for (requests' errors are OSErrors)
                challenge = client.session.get(f"{self.scheme}://{self.host}/v2/",
                                               timeout=self.timeout).headers.get("Www-Authenticate", "")
            except OSError as exc:
                raise RegistryError(f"the registry {self.host} is unreachable ({type(exc).__name__})") from None
            if challenge.lower().startswith("basic"):
                self._auth = "basic"
                client.auth = oras.auth.get_auth_backend("basic", client.session, self.insecure)
            # oras retries every failed request for about two minutes; callers decide what a failure means.
            client.do_request = types.MethodType(oras.provider.Registry.do_request.__wrapped__, client)
            user, password = os.environ.get(self.user_env), os.environ.get(self.password_env)
            if user and password:
                client.auth.set_basic_auth(user, password)
            self._client = client
        return self._client

    @property
    def scheme(self) -> str:
        return "http" if self.insecure else "https"

    def container(self, repository: str, ref: str | None = None):
        """oras's view of `repository` (for its URLs), with the credentials for this registry loaded."""
        client = self.client
        name = f"{self.host}/{repository}" + ((f"@{ref}" if ref.startswith("sha256:") else f":{ref}") if ref else "")
        container = client.get_container(name)
        if not self._credentials_loaded:
            docker_config = os.environ.get("DOCKER_CONFIG")
            configs = [os.path.join(docker_config, "config.json")] if docker_config else None
            if configs and not os.path.exists(configs[0]):
                configs = None
            client.auth.load_configs(container, configs=configs)
            self._credentials_loaded = True
        return container

    def _has_basic(self) -> bool:
        return bool(getattr(self.client.auth, "_basic_auth", None))

    def request(self, url: str, method: str = "GET", **kwargs) -> Any:
        """One request (a full URL or a registry path), authenticated as the registry asks;
        RegistryError when it cannot be made or the registry wants a login we do not have."""
        client = self.client
        if not url.startswith(("http://", "https://")):
            url = f"{client.prefix}://{url}"
        headers = dict(kwargs.pop("headers", None) or {})
        if self._auth == "basic":
            if not self._has_basic():
                raise RegistryError(f"the registry {self.host} asks for a login: run `docker login {self.host}` "
                                    f"or set {self.user_env} and {self.password_env}")
            headers.update(client.auth.get_auth_header())  # sent at once: a chunk is not sent twice
        try:
            return client.do_request(url, method, headers=headers, **kwargs)
        except ValueError:  # oras: "Cannot respond to request for authentication."
            raise RegistryError(f"the registry {self.host} refused the login: run `docker login {self.host}` "
                                f"or set {self.user_env} and {self.password_env}") from None
        except OSError as exc:  # requests' errors
            raise RegistryError(f"the registry {self.host} did not answer ({type(exc).__name__})") from None

    def _location(self, response, container) -> str:
        return self.client._get_location(response, container)

    @staticmethod
    def _refused(what: str, response) -> RegistryError:
        detail = ""
        with contextlib.suppress(ValueError, KeyError, IndexError, TypeError, AttributeError):
            errors = response.json().get("errors") or []
            detail = f": {errors[0].get('code', '')} {errors[0].get('message', '')}".rstrip()
        if response.status_code in (401, 403):
            detail += " (check the login and its rights to push)"
        return RegistryError(f"the registry refused {what} (HTTP {response.status_code}{detail})")

    # -- blobs -------------------------------------------------------------------------

    def blob_exists(self, repository: str, digest: str) -> bool:
        container = self.container(repository)
        return self.request(container.get_blob_url(digest), "HEAD").status_code == 200

    def _start_upload(self, container) -> str:
        response = self.request(container.upload_blob_url(), "POST", headers={"Content-Length": "0"})
        location = self._location(response, container)
        if response.status_code != 202 or not location:
            raise self._refused("an upload", response)
        return location

    def _upload_status(self, container, session: str) -> tuple[str, int]:
        """Where an upload stands: its session URL and the bytes the registry holds; a new upload
        when the registry cannot say (Docker Distribution cannot once a PATCH's answer, which
        carries the session's next state, was lost)."""
        with contextlib.suppress(RegistryError):
            response = self.request(session, "GET")
            end = re.fullmatch(r"0-(\d+)", response.headers.get("Range", ""))
            location = self._location(response, container)
            if response.status_code == 204 and end and location:
                # "0-0" is what an empty upload says (and one of a single byte): go on from 0.
                return location, int(end.group(1)) + 1 if int(end.group(1)) else 0
        return self._start_upload(container), 0

    def _finish_upload(self, session: str, digest: str, label: str, data: bytes = b"") -> None:
        separator = "&" if "?" in session else "?"
        response = self.request(f"{session}{separator}digest={digest}", "PUT", data=data or None,
                                headers={"Content-Length": str(len(data)), "Content-Type": "application/octet-stream"})
        if response.status_code != 201:
            if response.status_code == 400 and "DIGEST_INVALID" in response.text:
                raise DigestMismatch(f"{label}: the registry says its content does not match {digest} "
                                     "(the file changed while it was read)")
            raise self._refused(label, response)

    def push_blob(self, repository: str, path: Path, digest: str | None = None) -> tuple[str, int]:
        """Upload a file as a blob in chunks read from disk; returns (digest, size).

        A blob the registry already has is not sent again (e.g. after a run that stopped before
        its manifest); a failed chunk is resent from where the registry says the upload stands,
        up to `retries` times. The registry checks the digest when the upload completes.
        """
        path = Path(path)
        size = path.stat().st_size
        digest = digest or "sha256:" + sha256_file(path)
        container = self.container(repository)
        if self.blob_exists(repository, digest):
            return digest, size
        session, offset, failures = self._start_upload(container), 0, 0
        with path.open("rb") as fh:
            while offset < size:
                fh.seek(offset)
                chunk = fh.read(min(self.chunk_size, size - offset))
                headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(chunk)),
                           "Content-Range": f"{offset}-{offset + len(chunk) - 1}"}
                try:
                    response = self.request(session, "PATCH", data=chunk, headers=headers)
                    location = self._location(response, container)
                    if response.status_code == 202 and location:
                        session, offset = location, offset + len(chunk)
                        continue
                    reason = f"HTTP {response.status_code}"
                except RegistryError as exc:
                    reason = str(exc)
                failures += 1
                if failures > self.retries:
                    raise RegistryError(f"uploading {path.name} failed at byte {offset} of {size} ({reason})")
                session, offset = self._upload_status(container, session)
        self._finish_upload(session, digest, path.name)
        return digest, size

    def push_bytes(self, repository: str, data: bytes) -> tuple[str, int]:
        """A small blob (a config, a signature) in one request; returns (digest, size)."""
        digest = sha256_digest(data)
        container = self.container(repository)
        if not self.blob_exists(repository, digest):
            self._finish_upload(self._start_upload(container), digest, f"blob {digest[:19]}", data)
        return digest, len(data)

    @contextlib.contextmanager
    def open_blob(self, repository: str, digest: str, size: int, *, label: str | None = None,
                  tee: IO[bytes] | None = None) -> Iterator[VerifiedReader]:
        """A blob's bytes as a VerifiedReader (bounded by `size`, its digest checked at the end)."""
        if not DIGEST_RE.fullmatch(str(digest)) or isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise RegistryError(f"{label or digest}: not a sha256 digest and size")
        container = self.container(repository)
        with contextlib.closing(self.request(container.get_blob_url(digest), "GET", stream=True)) as response:
            if response.status_code != 200:
                raise self._refused(f"blob {label or digest}", response)
            response.raw.decode_content = True
            yield VerifiedReader(response.raw, size, digest, label=label or digest, tee=tee)

    def pull_blob(self, repository: str, digest: str, size: int, dest: Path, *, label: str | None = None) -> Path:
        """Download a blob to `dest` (which must not exist): written beside it, renamed into place only
        once size and digest matched; nothing is left behind otherwise."""
        dest = Path(dest)
        tmp = dest.with_name(f".{dest.name}.part")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            with open(os.open(tmp, flags, 0o644), "wb") as out, \
                    self.open_blob(repository, digest, size, label=label, tee=out) as stream:
                stream.drain()
            try:
                os.link(tmp, dest)  # fails if something took the name meanwhile; never replaces it
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP) or os.path.lexists(dest):
                    raise
                os.rename(tmp, dest)  # a file system without hard links
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return dest

    # -- manifests ---------------------------------------------------------------------

    def push_manifest(self, repository: str, tag: str, manifest: Mapping,
                      media_type: str = OCI_MANIFEST) -> str:
        """Put a manifest under `tag`; returns its digest (of the exact bytes sent)."""
        body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        container = self.container(repository, tag)
        response = self.request(container.manifest_url(tag), "PUT", data=body,
                                headers={"Content-Type": media_type})
        if response.status_code not in (200, 201):
            raise self._refused(f"the manifest of {self.host}/{repository}:{tag}", response)
        return sha256_digest(body)

    def manifest_exists(self, repository: str, ref: str, media_types: Sequence[str] = (OCI_MANIFEST,)) -> bool:
        container = self.container(repository, ref)
        response = self.request(container.manifest_url(ref), "HEAD", headers={"Accept": ", ".join(media_types)})
        return response.status_code == 200

    def pull_manifest(self, repository: str, ref: str, *, media_types: Sequence[str] = (OCI_MANIFEST,),
                      max_bytes: int = MAX_MANIFEST_BYTES) -> tuple[dict, str] | None:
        """A manifest (read at most `max_bytes`) and its digest; None when there is none. With a
        digest as `ref`, bytes that do not hash to it raise DigestMismatch."""
        container = self.container(repository, ref)
        with contextlib.closing(self.request(container.manifest_url(ref), "GET", stream=True,
                                             headers={"Accept": ", ".join(media_types)})) as response:
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise self._refused(f"the manifest of {self.host}/{repository}:{ref}", response)
            response.raw.decode_content = True
            data = response.raw.read(max_bytes + 1)
        label = f"{self.host}/{repository}{'@' if ref.startswith('sha256:') else ':'}{ref}"
        if len(data) > max_bytes:
            raise RegistryError(f"{label}: the manifest is larger than {max_bytes} bytes")
        digest = sha256_digest(data)
        if ref.startswith("sha256:") and digest != ref:
            raise DigestMismatch(f"{label}: the manifest does not match its digest")
        try:
            manifest = json.loads(data)
        except ValueError:
            raise RegistryError(f"{label}: the manifest is not JSON") from None
        if not isinstance(manifest, dict) or manifest.get("mediaType", OCI_MANIFEST) not in media_types:
            kind = manifest.get("mediaType") if isinstance(manifest, dict) else type(manifest).__name__
            raise RegistryError(f"{label}: not an OCI manifest ({kind})")
        return manifest, digest
