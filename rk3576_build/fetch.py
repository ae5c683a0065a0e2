"""Fetch a source into the download cache: resume, sha256 checks, mirrors, lock-file pins, offline mode.

Local files (file:// or a path, e.g. MYIR's multi-GB SDK) are verified in place, never copied.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import queue
import re
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
import urllib3
import yaml

from .errors import UserError
from .progress import make_progress, progress_enabled

CHUNK = 1 << 20
MAX_ATTEMPTS = 5          # transfers dropped mid-way: resume this many times per source
TIMEOUT = (15, 60)        # connect, read (seconds)
LOCK_HEADER = (
    "# Written by rk3576-build: the sha256 of each source the recipe fetches without one.\n"
    "# Commit this file so every build gets exactly the same inputs.\n"
    "# To accept a changed file, delete its entry under `sources:` and fetch again.\n"
)
SDK_HINT = (
    "MYIR's SDK cannot be downloaded by this tool: download it by hand from MYIR's developer "
    "portal (it needs a login), then set MYIR_SDK=/path/to/MYD-LR3576-Distribution-L6.1.75-V1.1.0.tar.gz "
    "or override sdk.url in recipes/<name>.local.yaml"
)
_SHA_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FetchResult:
    """A verified source file."""

    path: Path        # verified local file (in the download cache, or the user's local file in place)
    sha256: str
    size: int
    source: str       # the URL or path actually used, credentials stripped
    pinned: bool      # True if this run wrote a new pin to the lock file


class _SourceFailed(Exception):
    """One source could not deliver the file; the next one is tried."""


def default_downloads_dir(configured: str | Path | None = None) -> Path:
    """The download cache: $RK3576_DL_DIR, else `configured`, else the XDG cache dir."""
    env = os.environ.get("RK3576_DL_DIR")
    if env:
        return Path(env).expanduser()
    if configured:
        return Path(configured).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "rk3576-build" / "downloads"


def redact_url(url: str) -> str:
    """`url` without user name and password, safe for messages, results and lock files."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def fetch(name: str, url: str, *, sha256: str | None, downloads_dir: Path,
          mirrors: Sequence[str] = (), offline: bool = False,
          lock_file: Path | None = None, filename: str | None = None,
          progress: bool | None = None) -> FetchResult:
    """Return a verified local copy of `url` (mirrors first), downloading only what is missing."""
    secrets = [s for s in (_password(u) for u in (url, *mirrors)) if s]
    try:
        return _fetch(name, url, sha256=sha256, downloads_dir=Path(downloads_dir),
                      mirrors=mirrors, offline=offline, lock_file=lock_file,
                      filename=filename, progress=progress)
    except UserError as exc:
        scrubbed = _scrub(str(exc), secrets)
        if scrubbed == str(exc):
            raise
        raise UserError(scrubbed, exc.exit_code) from None


def _fetch(name, url, *, sha256, downloads_dir, mirrors, offline, lock_file, filename, progress):
    expected = _check_sha256(name, sha256) if sha256 is not None else None
    filename = filename or _basename(name, url)
    if "/" in filename or filename in ("", ".", ".."):
        raise UserError(f"{name}: invalid file name {filename!r}; give a plain file name")
    pin = None
    if expected is None and lock_file is not None:
        pin = _read_pin(Path(lock_file), name, redact_url(url))
        expected = pin
    show = progress_enabled(progress)
    sources = [_mirror_candidate(m, filename) for m in mirrors] + [url]

    path, digest, size, used = _obtain(name, filename, sources, url, expected, downloads_dir,
                                       offline, show, pin_file=lock_file if pin else None)
    wrote_pin = False
    if sha256 is None and lock_file is not None and pin is None:
        _write_pin(Path(lock_file), name, redact_url(url), digest, size)
        wrote_pin = True
    return FetchResult(path=path, sha256=digest, size=size, source=used, pinned=wrote_pin)


def _obtain(name, filename, sources, url, expected, downloads_dir, offline, show, pin_file):
    """Cache first, then each source in order; returns (path, sha256, size, source)."""
    failures: list[tuple[str, str]] = []
    needs_cache = any(_is_remote(s) for s in sources)
    dest = downloads_dir / filename
    with _cache_lock(downloads_dir, filename) if needs_cache else _no_lock():
        if needs_cache:
            hit = _check_cache(dest, expected, redact_url(url))
            if hit:
                return dest, hit[0], hit[1], hit[2]
        for source in sources:
            label = redact_url(source)
            if not _is_remote(source):
                path = _local_path(name, source)
                if not path.is_file():
                    failures.append((str(path), "no such file"))
                    continue
                digest, size = _verify_local(path, downloads_dir)
                if expected is not None and digest != expected:
                    failures.append((str(path), _mismatch(expected, digest, pin_file, name)))
                    continue
                return path, digest, size, str(path)
            if offline:
                failures.append((label, "not tried (offline)"))
                continue
            try:
                digest, size = _download(source, dest, expected, show, pin_file, name,
                                         origin=redact_url(url))
            except _SourceFailed as exc:
                failures.append((label, str(exc)))
                continue
            return dest, digest, size, label
    raise UserError(_failure_message(name, filename, url, dest, failures, offline,
                                     downloads_dir, needs_cache))


def _failure_message(name, filename, url, dest, failures, offline, downloads_dir, needs_cache):
    """One message naming each source tried, why it failed and what to do next."""
    lines = [f"could not fetch {name} ({filename}):"]
    lines += [f"  - {source}: {reason}" for source, reason in failures]
    part = dest.with_name(dest.name + ".part")
    if needs_cache and part.exists():
        lines.append(f"The partial download {part} is kept: the next run resumes it.")
    if offline and needs_cache:
        lines.append(
            f"Offline mode: {name} is not in the download cache ({dest}, from {redact_url(url)}). "
            f"Pre-fetch it with `rk3576-build run fetch` on a connected machine and copy its "
            f"download directory to {downloads_dir}, or put {filename} in a mirror directory.")
    if not _is_remote(url) and not Path(failures[-1][0]).is_file():
        lines.append(f"{name}: {failures[-1][0]} does not exist.")
        if name == "sdk":
            lines.append(SDK_HINT + ".")
    return "\n".join(lines)


# --- the cache and its .done stamps -------------------------------------------------------

def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".done")


def _read_stamp(stamp: Path) -> dict | None:
    try:
        data = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "sha256" in data else None


def _write_stamp(stamp: Path, path: Path, digest: str, source: str, url: str | None = None) -> None:
    st = path.stat()
    data = {"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "path": str(path), "source": source, "url": url}
    _atomic_write(stamp, json.dumps(data, indent=1) + "\n")


def _stamped_digest(path: Path, stamp: Path) -> str | None:
    """The stamp's sha256 if the file still has the size and mtime it recorded."""
    data = _read_stamp(stamp)
    if not data:
        return None
    st = path.stat()
    if data.get("size") == st.st_size and data.get("mtime_ns") == st.st_mtime_ns \
            and data.get("path", str(path)) == str(path):
        return data["sha256"]
    return None


def _check_cache(dest: Path, expected: str | None, url: str) -> tuple[str, int, str] | None:
    """(sha256, size, source) of a usable cached file; a stale one is removed."""
    stamp = _stamp_path(dest)
    if not dest.is_file():
        stamp.unlink(missing_ok=True)
        return None
    # Trusting the stamp avoids re-hashing multi-GB files on every run.
    digest = _stamped_digest(dest, stamp)
    recorded = _read_stamp(stamp) or {}
    source = recorded.get("source", str(dest)) if digest else str(dest)
    if digest is None:
        digest = _hash_file(dest)
    # Without a checksum, only the URL tells a cached file from another one of the same name.
    stale_url = expected is None and recorded.get("url") not in (None, url)
    if stale_url or (expected is not None and digest != expected):
        dest.unlink()
        stamp.unlink(missing_ok=True)
        return None
    _write_stamp(stamp, dest, digest, source, recorded.get("url", url))
    return digest, dest.stat().st_size, source


def _verify_local(path: Path, downloads_dir: Path) -> tuple[str, int]:
    """Hash a user's local file once; the stamp lives in the cache, not beside the file."""
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    stamp = downloads_dir / ".local-stamps" / f"{key}.done"
    digest = _stamped_digest(path.resolve(), stamp)
    if digest is None:
        digest = _hash_file(path)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        _write_stamp(stamp, path.resolve(), digest, str(path))
    return digest, path.stat().st_size


@contextmanager
def _cache_lock(downloads_dir: Path, filename: str) -> Iterator[None]:
    """Keep two builds sharing the cache from writing the same .part at once."""
    downloads_dir.mkdir(parents=True, exist_ok=True)
    with open(downloads_dir / f"{filename}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _no_lock() -> Iterator[None]:
    yield


# --- downloading --------------------------------------------------------------------------

def _download(url: str, dest: Path, expected: str | None, show: bool, pin_file, name,
              origin: str) -> tuple[str, int]:
    """Stream `url` into `<dest>.part` (resuming it), verify, then move it into place."""
    part = dest.with_name(dest.name + ".part")
    with requests.Session() as session:
        digest, size, resumed = _transfer(session, url, part, show)
        if expected is not None and digest != expected and resumed:
            # The kept .part may come from a different file: one clean retry from zero.
            part.unlink()
            digest, size, _ = _transfer(session, url, part, show)
    if expected is not None and digest != expected:
        part.unlink(missing_ok=True)
        raise _SourceFailed(_mismatch(expected, digest, pin_file, name) + "; the download was deleted")
    os.replace(part, dest)
    _write_stamp(_stamp_path(dest), dest, digest, redact_url(url), origin)
    return digest, size


def _transfer(session: requests.Session, url: str, part: Path, show: bool) -> tuple[str, int, bool]:
    """Download into `part`, resuming with Range; returns (sha256, size, resumed an old part)."""
    resumed = part.exists() and part.stat().st_size > 0
    last_error = ""
    for _attempt in range(MAX_ATTEMPTS):
        offset = part.stat().st_size if part.exists() else 0
        hasher = _hash_file(part, hasher=True) if offset else hashlib.sha256()
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            response = session.get(url, headers=headers, stream=True, timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise _SourceFailed(_reason(exc)) from None
        with response:
            if response.status_code == 416 and offset:
                if _content_range_total(response.headers.get("Content-Range", "")) == offset:
                    return hasher.hexdigest(), offset, resumed      # the part was already whole
                part.unlink()                                       # stale part: start over
                continue
            if response.status_code == 206 and offset:
                if _content_range_start(response.headers.get("Content-Range", "")) != offset:
                    part.unlink()
                    continue
                mode = "ab"
            elif response.status_code == 200:
                # A server that ignores Range sends the whole file: restart cleanly.
                offset, mode, hasher = 0, "wb", hashlib.sha256()
            else:
                raise _SourceFailed(f"HTTP {response.status_code} {response.reason}")
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else None
            try:
                size = _stream_body(response, part, mode, hasher, offset, total, show)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                last_error = _reason(exc)
                continue
            if total is not None and size != total:
                last_error = f"connection closed after {size} of {total} bytes"
                continue
            return hasher.hexdigest(), size, resumed
    raise _SourceFailed(f"transfer interrupted {MAX_ATTEMPTS} times (last: {last_error})")


def _stream_body(response, part: Path, mode: str, hasher, offset: int, total: int | None,
                 show: bool) -> int:
    """Write and hash the body in one pass; returns the .part size reached."""
    size = offset
    with open(part, mode) as out, _Writer(out, part) as writer, \
            make_progress(total, part.name[:-5], enabled=show, initial=offset) as bar:
        # decode_content=False: a server's Content-Encoding must not alter the bytes we hash.
        for chunk in response.raw.stream(CHUNK, decode_content=False):
            writer.put(chunk)
            hasher.update(chunk)
            size += len(chunk)
            bar.update(len(chunk))
    return size


class _Writer:
    """Writes chunks on a thread, so the disk write overlaps receiving and hashing."""

    def __init__(self, out, part: Path):
        self._out, self._part = out, part
        self._queue: queue.Queue = queue.Queue(maxsize=8)
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "_Writer":
        self._thread.start()
        return self

    def put(self, chunk: bytes) -> None:
        self._raise()
        self._queue.put(chunk)

    def __exit__(self, *exc) -> None:
        # Always drain: the .part must hold every byte counted so far, even on a dropped transfer.
        self._queue.put(None)
        self._thread.join()
        if exc[0] is None:
            self._raise()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._out.write(chunk)
                except OSError as exc:
                    self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            raise UserError(f"cannot write {self._part}: {self._error.strerror or self._error}; "
                            "free some disk space or point the download dir elsewhere (RK3576_DL_DIR)")


def _content_range_start(value: str) -> int | None:
    match = re.match(r"bytes (\d+)-", value.strip())
    return int(match.group(1)) if match else None


def _content_range_total(value: str) -> int | None:
    match = re.search(r"/(\d+)\s*$", value.strip())
    return int(match.group(1)) if match else None


def _reason(exc: BaseException) -> str:
    """A short, credential-free reason for a failed request."""
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if len(text) < 300 else f"{type(exc).__name__}: {text[:300]}..."


# --- the lock file ------------------------------------------------------------------------

def _load_lock(lock_file: Path) -> dict:
    if not lock_file.exists():
        return {}
    try:
        data = yaml.safe_load(lock_file.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read the lock file {lock_file}: {exc}; fix or delete it") from None
    if not isinstance(data, dict) or not isinstance(data.get("sources", {}), dict):
        raise UserError(f"the lock file {lock_file} is not `sources: {{<name>: {{url, sha256, size}}}}`; "
                        "fix or delete it")
    return data


def _read_pin(lock_file: Path, name: str, url: str) -> str | None:
    """The pinned sha256 of `name`, if pinned for this same URL."""
    entry = _load_lock(lock_file).get("sources", {}).get(name)
    if not isinstance(entry, dict) or entry.get("url") != url:
        return None       # no pin, or the recipe now points elsewhere: pin afresh
    digest = str(entry.get("sha256", "")).lower()
    if not _SHA_RE.fullmatch(digest):
        raise UserError(f"{lock_file}: sources.{name}.sha256 is not a sha256 ({digest!r}); "
                        f"delete the `{name}` entry to pin it again")
    return digest


def _write_pin(lock_file: Path, name: str, url: str, digest: str, size: int) -> None:
    data = _load_lock(lock_file)
    sources = data.setdefault("sources", {})
    sources[name] = {"url": url, "sha256": digest, "size": size}
    data["sources"] = dict(sorted(sources.items()))
    _atomic_write(lock_file, LOCK_HEADER + yaml.safe_dump(data, sort_keys=False))


# --- small helpers ------------------------------------------------------------------------

def _mismatch(expected: str, actual: str, pin_file, name: str) -> str:
    text = f"sha256 mismatch: expected {expected}, got {actual}"
    if pin_file is not None:
        text += (f" (the file changed since it was pinned in {pin_file}; if the change is expected, "
                 f"delete the `{name}` entry from that lock file to pin the new file)")
    return text


def _check_sha256(name: str, value: str) -> str:
    digest = str(value).strip().lower()
    if not _SHA_RE.fullmatch(digest):
        raise UserError(f"{name}: sha256 must be 64 hex digits, got {value!r}")
    return digest


def _basename(name: str, url: str) -> str:
    path = urlsplit(url).path if _is_remote(url) or url.startswith("file:") else url
    base = unquote(path.rstrip("/").rpartition("/")[2])
    if not base:
        raise UserError(f"{name}: cannot tell a file name from {redact_url(url)}; set a filename")
    return base


def _is_remote(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def _local_path(name: str, url: str) -> Path:
    if url.startswith("file:"):
        return Path(unquote(urlsplit(url).path))
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", url):
        raise UserError(f"{name}: unsupported URL {redact_url(url)}; use https://, http://, file:// or a path")
    return Path(url).expanduser()


def _mirror_candidate(mirror: str, filename: str) -> str:
    if _is_remote(mirror) or mirror.startswith("file:"):
        return mirror.rstrip("/") + "/" + filename
    return str(Path(mirror).expanduser() / filename)


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        for form in {secret, unquote(secret)}:
            text = text.replace(form, "***")
    return text


def _hash_file(path: Path, hasher: bool = False):
    """sha256 of a file (hex), or the hasher itself to continue a resumed download."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest if hasher else digest.hexdigest()


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
