"""The shared build cache: a step's products stored under a portable key, like BitBake's sstate.

A key is the sha256 of a step's inputs (spec, builder image hash, input digests, earlier
steps' keys), never of paths, times or host names, so two machines agree on it. An entry is
a deterministic `products.tar.gz` plus an `index.json` with every file's sha256 and size;
restoring verifies all of it in a staging directory before anything is put in place.
Backends: a directory (local or a shared mount) and an OCI registry through `oras`; the
only module that knows them. Read-only mirrors are asked first, the read-write store last.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import logging
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import time
import types
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Protocol
from urllib.parse import urlsplit

from .errors import UserError
from .fetch import redact_url
from .manifest import sha256_file

log = logging.getLogger(__name__)

FORMAT = 1                       # bump when the key inputs or the entry layout change meaning
INDEX = "index.json"
ARCHIVE = "products.tar.gz"
ENTRY_FILES = (INDEX, ARCHIVE)
MEDIA_TYPES = {INDEX: "application/vnd.rk3576-build.cache.index.v1+json",
               ARCHIVE: "application/vnd.rk3576-build.cache.products.v1.tar+gzip"}
CHUNK = 1 << 20
# Environment credentials for an OCI cache (the Docker config is read too); never in a recipe.
USER_ENV, PASSWORD_ENV = "RK3576_CACHE_USER", "RK3576_CACHE_PASSWORD"
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


class CacheEntryError(Exception):
    """A cache entry that must not be used (damaged, cut short, or not what its key says)."""


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class StepKey:
    key: str
    inputs: dict  # what went into the key, as `info` shows it


def step_key(inputs: Mapping) -> StepKey:
    """The cache key of a step: sha256 over its inputs (plain JSON data, canonical form).

    Pass digests and relative names, not host paths: a `Path` anywhere is refused, since the
    same inputs on two machines must give the same key.
    """
    plain = _plain_data(dict(inputs), "inputs")
    data = {"format": FORMAT, "inputs": plain}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return StepKey(hashlib.sha256(text.encode()).hexdigest(), plain)


def _plain_data(value, where: str):
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"{where}: keys must be strings")
        return {k: _plain_data(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_data(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"{where}: {type(value).__name__} is not portable key data (pass a digest or a name)")


# --------------------------------------------------------------------------- what a step left


# Where build.sh steps leave what later steps read: output/ (rockdev/ links into it) and the chip
# selection links lunch makes in device/rockchip (.chip); plus the SDK root's own files and links.
SNAPSHOT_DIRS = ("output", "device/rockchip")
# build.sh's per-run session logs: never products.
SNAPSHOT_SKIP = ("output/sessions", "output/log")


def snapshot(root: Path, dirs: Iterable[str] = SNAPSHOT_DIRS) -> dict[str, tuple]:
    """Identity (type, size, mtime, inode) of every file and link under `dirs` and at the top of `root`.

    Cheap (stat only): taken before and after a step, it tells what the step wrote, which
    is what the next steps need of it besides its declared products.
    """
    root = Path(root)
    seen: dict[str, tuple] = {}

    def note(path: str, rel: str) -> None:
        st = os.lstat(path)
        seen[rel] = (st.st_mode >> 12, st.st_size, st.st_mtime_ns, st.st_ino)

    if root.is_dir():
        for entry in os.scandir(root):
            if not entry.is_dir(follow_symlinks=False):
                note(entry.path, entry.name)
    for top in dirs:
        base = root / top
        if base.is_symlink() or not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
            dirnames[:] = [d for d in dirnames if f"{rel_dir}/{d}" not in SNAPSHOT_SKIP]
            for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                if f"{rel_dir}/{name}" not in SNAPSHOT_SKIP:
                    note(os.path.join(dirpath, name), f"{rel_dir}/{name}")
    return seen


def changed(before: Mapping[str, tuple], after: Mapping[str, tuple]) -> list[str]:
    """Paths that are new or different in `after` (removed ones are not products)."""
    return sorted(p for p, ident in after.items() if before.get(p) != ident)


@dataclass
class Collected:
    files: dict[str, Path]   # rel path -> absolute path of a regular file
    links: dict[str, str]    # rel path -> link target as written


def collect(root: Path, paths: Iterable[str]) -> Collected:
    """The files and links that make up `paths` (relative to `root`).

    A link on the way (`rockdev` -> `output/firmware`, or `output/firmware/uboot.img` ->
    `../../u-boot/uboot.img`) is kept as a link and followed, so its target is kept too;
    a link asked for itself that points to a directory (`device/rockchip/.chip`) stays just
    a link; a directory brings everything under it.
    """
    root = Path(root).resolve()
    out = Collected({}, {})
    seen: set[str] = set()
    pending = [_clean_rel(p) for p in paths]
    while pending:
        rel = pending.pop()
        if rel in seen:
            continue
        seen.add(rel)
        parts = rel.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            path = root / prefix
            if not path.is_symlink():
                continue
            target = os.readlink(path)
            out.links[prefix] = target
            inside = _link_dest(root, prefix, target)
            if inside is None:
                if i < len(parts):
                    raise ValueError(f"{rel}: {prefix} links outside the SDK ({target})")
            elif i < len(parts):
                pending.append(posixpath.join(inside, *parts[i:]))
            elif not (root / inside).is_dir():  # a link to a directory (.chip, rockdev) stays just a link
                pending.append(inside)
            break
        else:
            path = root / rel
            if path.is_file():
                out.files[rel] = path
            elif path.is_dir():
                pending.extend(f"{rel}/{child.name}" for child in path.iterdir())
            else:
                raise FileNotFoundError(f"{rel} does not exist in {root}")
    return out


def _link_dest(root: Path, rel: str, target: str) -> str | None:
    """Where a link at `rel` points, relative to `root`; None when outside it."""
    if os.path.isabs(target):
        try:
            joined = Path(os.path.normpath(target)).relative_to(root).as_posix()
        except ValueError:
            return None
    else:
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    if joined in (".", "") or joined == ".." or joined.startswith("../"):
        return None
    return joined


def _clean_rel(rel: str) -> str:
    norm = posixpath.normpath(str(rel))
    if not rel or os.path.isabs(rel) or norm in (".", "..") or norm.startswith("../"):
        raise ValueError(f"{rel!r} is not a path inside the SDK")
    return norm


# --------------------------------------------------------------------------- entries


class _HashingReader:
    """A file object that hashes what it hands out (so packing reads each file once)."""

    def __init__(self, fh):
        self.fh, self.sha, self.size = fh, hashlib.sha256(), 0

    def read(self, n=-1):
        data = self.fh.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data


# The SDK's absolute path in what a step wrote (lunch's output/.config, an absolute link such as
# output/defconfig) is stored as this placeholder and put back as the restoring SDK's path, as
# BitBake's sstate does, so such an entry serves any work directory.
ROOT_PLACEHOLDER = b"@@RK3576_SDK_ROOT@@"
RELOCATE_MAX = 1 << 20  # only small text files are rewritten; binaries keep their bytes


def _root_spellings(root: Path) -> list[bytes]:
    """The ways the SDK's path may be written (as given and resolved), longest first."""
    spellings = {os.path.abspath(root), os.path.realpath(root)}
    return sorted((s.encode() for s in spellings), key=len, reverse=True)


def _placeholder(data: bytes, roots: list[bytes]) -> bytes:
    for spelling in roots:  # the path itself, not a longer name that starts with it (sdk2, sdk.old)
        data = re.sub(re.escape(spelling) + rb"(?![\w.-])", lambda _m: ROOT_PLACEHOLDER, data)
    return data


def _relocated(data: bytes, root: Path) -> bytes:
    return data.replace(ROOT_PLACEHOLDER, os.path.abspath(root).encode())


def _relocatable(path: Path, size: int, roots: list[bytes]) -> bytes | None:
    """The file's bytes with the SDK path replaced, for a small text file that contains it; else None."""
    if size > RELOCATE_MAX:
        return None
    data = path.read_bytes()
    if b"\0" in data or not any(spelling in data for spelling in roots):
        return None
    return _placeholder(data, roots)


def pack(root: Path, paths: Iterable[str], entry_dir: Path, *, key: str, meta: Mapping | None = None) -> dict:
    """Write an entry (`index.json`, `products.tar.gz`) for `paths` under `root` into `entry_dir`.

    The archive is deterministic: sorted members, owner 0, mtime 0, gzip without name or time.
    Returns the index.
    """
    found = collect(root, paths)
    roots = _root_spellings(root)
    entry_dir = Path(entry_dir)
    entry_dir.mkdir(parents=True, exist_ok=True)
    files = []
    with open(entry_dir / ARCHIVE, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in sorted(found.files):
            path = found.files[rel]
            st = path.stat()
            info = tarfile.TarInfo(rel)
            info.size, info.mtime = st.st_size, 0
            info.mode = 0o755 if st.st_mode & 0o111 else 0o644
            text = _relocatable(path, st.st_size, roots)
            with io.BytesIO(text) if text is not None else open(path, "rb") as fh:
                info.size = len(text) if text is not None else st.st_size
                reader = _HashingReader(fh)
                tar.addfile(info, reader)
            if reader.size != info.size:
                raise OSError(f"{rel} changed while it was being stored")
            files.append({"path": rel, "size": info.size, "sha256": reader.sha.hexdigest(), "mode": info.mode,
                          **({"relocate": True} if text is not None else {})})
    index = {
        "format": FORMAT, "key": key, "meta": dict(meta or {}), "files": files,
        "links": [{"path": p, "target": _placeholder(t.encode(), roots).decode()}
                  for p, t in sorted(found.links.items())],
        "archive": {"size": (entry_dir / ARCHIVE).stat().st_size, "sha256": sha256_file(entry_dir / ARCHIVE)},
    }
    (entry_dir / INDEX).write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    return index


def read_index(entry_dir: Path, key: str) -> dict:
    """The entry's index, checked for shape and for being the entry of `key`."""
    try:
        index = json.loads((Path(entry_dir) / INDEX).read_text())
        if index["format"] != FORMAT or index["key"] != key:
            raise CacheEntryError(f"the entry's index is for another key or format ({index['key'][:12]}, "
                                  f"format {index['format']})")
        for item in index["files"]:
            _clean_rel(item["path"]), int(item["size"]), str(item["sha256"])
        for item in index["links"]:
            _clean_rel(item["path"]), str(item["target"])
        int(index["archive"]["size"]), str(index["archive"]["sha256"])
    except CacheEntryError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CacheEntryError(f"the entry's index is missing or unreadable ({exc})") from exc
    return index


def restore(entry_dir: Path, root: Path, *, key: str) -> list[str]:
    """Verify the entry in `entry_dir` completely, then put its files and links under `root`.

    Every byte is checked against the index (archive digest, then each file's size and
    digest) while it is written to a staging directory inside `root`; only then are the
    files moved into place. Raises CacheEntryError (nothing placed) for a bad entry.
    Returns the restored paths.
    """
    entry_dir, root = Path(entry_dir), Path(root)
    index = read_index(entry_dir, key)
    archive = entry_dir / ARCHIVE
    if not archive.is_file() or archive.stat().st_size != index["archive"]["size"]:
        size = archive.stat().st_size if archive.is_file() else 0
        raise CacheEntryError(f"the archive is cut short or missing ({size} of {index['archive']['size']} bytes)")
    if sha256_file(archive) != index["archive"]["sha256"]:
        raise CacheEntryError("the archive's sha256 does not match its index (damaged)")
    expected = {item["path"]: item for item in index["files"]}
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".rk3576-cache-restore.", dir=root))
    try:
        staged = _extract_verified(archive, expected, staging)
        for item in index["links"]:
            _place_link(root, item["path"], _relocated(item["target"].encode(), root).decode())
        now = time.time()
        for rel, tmp in staged.items():
            dest = _safe_dest(root, rel)
            if dest.is_dir() and not dest.is_symlink():
                raise CacheEntryError(f"cannot restore {rel}: a directory is in the way")
            if expected[rel].get("relocate"):
                tmp.write_bytes(_relocated(tmp.read_bytes(), root))
            elif _same_file(dest, expected[rel]):
                continue  # keep an identical file as it is (and its time, which make looks at)
            os.chmod(tmp, expected[rel]["mode"])
            os.utime(tmp, (now, now))  # restored files count as freshly built for make
            os.replace(tmp, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sorted([*expected, *(item["path"] for item in index["links"])])


def _same_file(path: Path, item: Mapping) -> bool:
    return (path.is_file() and not path.is_symlink() and path.stat().st_size == item["size"]
            and sha256_file(path) == item["sha256"])


def _extract_verified(archive: Path, expected: Mapping[str, dict], staging: Path) -> dict[str, Path]:
    staged: dict[str, Path] = {}
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for number, member in enumerate(tar):
                item = expected.get(member.name)
                if item is None or member.name in staged or not member.isreg():
                    raise CacheEntryError(f"the archive holds {member.name!r}, which its index does not list")
                tmp = staging / str(number)
                digest, size = hashlib.sha256(), 0
                with tar.extractfile(member) as src, open(tmp, "wb") as dst:
                    while chunk := src.read(CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        dst.write(chunk)
                if size != item["size"] or digest.hexdigest() != item["sha256"]:
                    raise CacheEntryError(f"{member.name}: size or sha256 does not match the index (damaged)")
                staged[member.name] = tmp
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise CacheEntryError(f"the archive is cut short or damaged ({exc})") from exc
    missing = sorted(set(expected) - set(staged))
    if missing:
        raise CacheEntryError(f"the archive lacks {len(missing)} file(s) its index lists, e.g. {missing[0]}")
    return staged


def _safe_dest(root: Path, rel: str) -> Path:
    """`root/rel` with its parent created, refusing a parent that resolves outside `root`."""
    dest = root / _clean_rel(rel)
    dest.parent.mkdir(parents=True, exist_ok=True)
    real_root, real_parent = os.path.realpath(root), os.path.realpath(dest.parent)
    if os.path.commonpath([real_root, real_parent]) != real_root:
        raise CacheEntryError(f"cannot restore {rel}: its directory resolves outside the SDK")
    return dest


def _place_link(root: Path, rel: str, target: str) -> None:
    dest = _safe_dest(root, rel)
    if dest.is_symlink():
        if os.readlink(dest) == target:
            return
    elif dest.is_dir():
        if any(dest.iterdir()):
            raise CacheEntryError(f"cannot restore the link {rel}: a directory with files is in the way")
        dest.rmdir()
    tmp = dest.with_name(f".{dest.name}.rk3576-cache-link")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, dest)


# --------------------------------------------------------------------------- backends


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


# --------------------------------------------------------------------------- the cache


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
