"""Fetch a source into the download cache: resume, sha256 checks, mirrors, lock-file pins, offline mode.

A source whose sha256 is known (the recipe's, or its lock-file pin) has a slot keyed by that
sha256, so a new URL or mirror for the same bytes (the demo serves on a new loopback port each
run) finds them and adds nothing; any other cached copy with that sha256 is found too. A source
without one has a slot keyed by its URL (credentials stripped), so two files that share a name
never meet. A slot holds the file and its `.done` record (sha256, size, mtime, URL, the server's
validator); while a download runs, `.part` and `.part.json`, which names the URL and validator
the bytes came from: only that same source resumes it. A second process asking for a file being
downloaded waits for it, and says whose download it waits for and how far it got.
Local files (file:// or a path, e.g. MYIR's multi-GB SDK) are verified in place, never copied.
A source without a sha256 is pinned in the lock file only once its archive unpacked cleanly
(`settle_after_unpack`); until then it is provisional.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import queue
import re
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence
from urllib.parse import unquote, urlsplit

import requests
import urllib3
import yaml
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from rk3576_build.core import logs
from rk3576_build.core.errors import UserError
from rk3576_build.core.progress import make_progress, progress_enabled
from rk3576_build.sources.unpack import DamagedArchive, human_size, read_json_object

CHUNK = 1 << 20
MAX_ATTEMPTS = 5          # a transfer dropped mid-way is resumed this many times per run
CONNECT_TIMEOUT = 15      # seconds
STALL_SECONDS = 30.0      # nothing for this long, or less than STALL_MIN_BYTES in it: a stall
STALL_MIN_BYTES = 64 * 1024
RETRIES = 3               # connection errors and 5xx answers, retried with exponential backoff
RETRY_BACKOFF = 0.5       # seconds: 0, 1, 2 between the retries
RETRY_STATUS = (500, 502, 503, 504)
WAIT_REPORT_SECONDS = 15.0  # how often a process waiting for another's download says how far it got
WAIT_POLL_SECONDS = 0.25
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
# scheme://user:password@ -> scheme:// (up to the last '@' before the path); a scheme starts only
# where a word does, so a long run of letters is scanned once (not once per letter: quadratic)
_USERINFO_RE = re.compile(r"(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")

log = logs.get(__name__)


@dataclass(frozen=True)
class FetchResult:
    """A verified source file."""

    path: Path         # verified local file (in the download cache, or the user's local file in place)
    sha256: str
    size: int
    source: str        # the URL or path actually used, credentials stripped
    provisional: bool  # no sha256 and no pin yet: pinned (or discarded) by settle_after_unpack


class _SourceFailed(Exception):
    """One source could not deliver the file; the next one is tried."""


def default_downloads_dir(configured: str | Path | None = None) -> Path:
    """The download cache: $RK3576_DL_DIR, else `configured`, else the XDG cache dir."""
    env = os.environ.get("RK3576_DL_DIR")
    if env:
        return Path(env).expanduser()
    if configured:
        return Path(configured).expanduser()
    return user_cache_dir() / "downloads"


def user_cache_dir() -> Path:
    """The tool's per-user cache: $XDG_CACHE_HOME/rk3576-build, else ~/.cache/rk3576-build."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rk3576-build"


def redact_url(url: str) -> str:
    """`url` (or any text holding URLs) without user names and passwords."""
    return _USERINFO_RE.sub(r"\1", url)


def redact(value):
    """`value` with every URL's user name and password removed: text, or dicts and lists of it."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, Mapping):
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(item) for item in value)
    return value


def cache_path(downloads_dir: Path, url: str, filename: str, sha256: str | None = None) -> Path:
    """Where the cache keeps `filename` fetched from `url`: a slot per content when its sha256 is
    known (whatever URL or mirror serves it), else a slot per source URL."""
    if sha256 is not None:
        return Path(downloads_dir) / f"sha256-{sha256}" / filename
    key = hashlib.sha256(redact_url(url).encode()).hexdigest()[:16]
    return Path(downloads_dir) / key / filename


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
        scrubbed = _scrub(redact_url(str(exc)), secrets)
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
    want = _Wanted(name, expected or pin, lock_file if pin else None)
    sources = [_mirror_candidate(m, filename) for m in mirrors] + [url]
    path, digest, size, used = _obtain(name, filename, sources, url, want, downloads_dir,
                                       offline, progress_enabled(progress))
    return FetchResult(path=path, sha256=digest, size=size, source=used, provisional=want.sha256 is None)


@dataclass(frozen=True)
class _Wanted:
    """The sha256 a source must have and where it comes from (the recipe or a lock-file pin)."""

    name: str
    sha256: str | None
    pin_file: Path | None

    def origin(self) -> str:
        return f"pinned in {self.pin_file}" if self.pin_file else "the recipe's sha256"

    def mismatch(self, actual: str) -> str:
        text = f"sha256 mismatch: expected {self.sha256} ({self.origin()}), got {actual}"
        if self.pin_file is not None:
            text += (f" (the file changed since it was pinned; if the change is expected, delete the "
                     f"`{self.name}` entry from {self.pin_file} to pin the new file)")
        return text


def _obtain(name, filename, sources, url, want, downloads_dir, offline, show):
    """Cache first, then each source in order; returns (path, sha256, size, source)."""
    failures: list[tuple[str, str]] = []
    needs_cache = any(_is_remote(s) for s in sources)
    dest = cache_path(downloads_dir, url, filename, want.sha256)
    with _cache_lock(dest) if needs_cache else _no_lock():
        kept = None
        if needs_cache:
            hit, kept = _check_cache(dest, want.sha256)
            if hit:
                return (dest, *hit)
            if want.sha256 is not None:
                found, kept = _find_cached(downloads_dir, dest, redact_url(url), want.sha256)
                if found:
                    return found
        for source in sources:
            label = redact_url(source)
            if not _is_remote(source):
                path = _local_path(name, source)
                if not path.is_file():
                    failures.append((str(path), "no such file"))
                    continue
                digest, size = _verify_local(path, downloads_dir)
                if want.sha256 is not None and digest != want.sha256:
                    failures.append((str(path), want.mismatch(digest)))
                    continue
                return path, digest, size, str(path)
            if offline:
                failures.append((label, "not tried (offline)"))
                continue
            try:
                digest, size = _download(source, dest, want, show, kept, origin=redact_url(url))
            except _SourceFailed as exc:
                failures.append((label, str(exc)))
                continue
            return dest, digest, size, label
    raise UserError(_failure_message(name, filename, url, dest, failures, offline,
                                     downloads_dir, needs_cache, kept))


def _failure_message(name, filename, url, dest, failures, offline, downloads_dir, needs_cache, kept):
    """One message naming each source tried, why it failed and what to do next."""
    lines = [f"could not fetch {name} ({filename}):"]
    lines += [f"  - {source}: {reason}" for source, reason in failures]
    part = _part_path(dest)
    if needs_cache and part.exists():
        lines.append(f"The partial download {part} ({human_size(part.stat().st_size)}) is kept: "
                     "the next run resumes it.")
    if kept is not None:
        lines.append(f"The cached {kept['path']} is kept: it is intact (sha256 {kept['sha256']}, as downloaded "
                     f"from {kept.get('source') or kept.get('url')}), just not the file asked for.")
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


# --- the cache and its .done records ------------------------------------------------------

def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".done")


def _part_path(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def _part_record_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _read_stamp(stamp: Path) -> dict | None:
    data = read_json_object(stamp)
    return data if data and "sha256" in data else None


def _write_stamp(stamp: Path, path: Path, digest: str, source: str, url: str | None = None,
                 validator: str | None = None, st: os.stat_result | None = None) -> None:
    st = st or path.stat()
    data = {"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "path": str(path), "source": source, "url": url, "validator": validator}
    _atomic_write(stamp, json.dumps(data, indent=1) + "\n")


def _stamped_digest(path: Path, stamp: Path) -> str | None:
    """The record's sha256 if the file still has the size and mtime it recorded."""
    data = _read_stamp(stamp)
    if not data:
        return None
    st = path.stat()
    if data.get("size") == st.st_size and data.get("mtime_ns") == st.st_mtime_ns \
            and data.get("path", str(path)) == str(path):
        return data["sha256"]
    return None


def _check_cache(dest: Path, want: str | None):
    """((sha256, size, source) of a usable cached file, or None; the record of a kept one).

    A file that no longer matches its own record is damaged and removed. An intact one
    (matching its record) that is not the sha256 asked for is kept, never deleted: a typo
    in a sha256 must not cost a multi-GB download; a download that matches replaces it.
    """
    stamp = _stamp_path(dest)
    if not dest.is_file():
        stamp.unlink(missing_ok=True)
        return None, None
    record = _read_stamp(stamp) or {}
    digest = _stamped_digest(dest, stamp)     # trusting it avoids re-hashing multi-GB files
    if digest is None:
        digest = _hash_file(dest)
        if want is None or digest != want:
            dest.unlink()
            stamp.unlink(missing_ok=True)
            return None, None
        _write_stamp(stamp, dest, digest, record.get("source", str(dest)), record.get("url"),
                     record.get("validator"))
    if want is None or digest == want:
        return (digest, dest.stat().st_size, record.get("source", str(dest))), None
    return None, {**record, "sha256": digest, "path": str(dest)}


def _find_cached(downloads_dir: Path, dest: Path, origin: str, want: str):
    """Another slot's copy of `dest`'s file name: ((path, sha256, size, source) of one with the
    sha256 `want`, or None; the newest intact copy from `origin` otherwise, as _check_cache's kept).

    Only records that still match their file are trusted, and nothing is changed: those slots
    belong to other sources (and their locks), e.g. a URL's slot from before it was pinned.
    """
    kept, kept_time = None, -1
    pattern = os.path.join(glob.escape(str(downloads_dir)), "*", glob.escape(dest.name) + ".done")
    for stamp in map(Path, glob.glob(pattern)):
        path = stamp.with_name(dest.name)
        if path == dest or not path.is_file():
            continue
        record = _read_stamp(stamp) or {}
        try:
            digest = _stamped_digest(path, stamp)
            if digest == want:
                return (path, digest, path.stat().st_size, record.get("source", str(path))), None
            if digest is not None and record.get("url") == origin and stamp.stat().st_mtime_ns > kept_time:
                kept, kept_time = {**record, "path": str(path)}, stamp.stat().st_mtime_ns
        except OSError:  # removed meanwhile by the process that owns that slot
            continue
    return None, kept


def _verify_local(path: Path, downloads_dir: Path) -> tuple[str, int]:
    """Hash a user's local file once; the record lives in the cache, not beside the file."""
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    stamp = downloads_dir / ".local-stamps" / f"{key}.done"
    digest = _stamped_digest(path.resolve(), stamp)
    if digest is None:
        digest = _hash_file(path)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        _write_stamp(stamp, path.resolve(), digest, str(path))
    return digest, path.stat().st_size


@contextmanager
def _cache_lock(dest: Path) -> Iterator[None]:
    """Keep two builds sharing the cache from writing the same .part at once.

    The holder writes who it is into the lock file; a process that has to wait says so, and
    every WAIT_REPORT_SECONDS how far the holder's download (its .part) got.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.with_name(dest.name + ".lock"), "a+") as handle:
        _wait_for_lock(handle, dest)
        try:
            handle.truncate(0)
            handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _wait_for_lock(handle, dest: Path) -> None:
    """Take the slot's lock; while another process holds it, log who and how far its download got."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    handle.seek(0)
    written = handle.read(200).strip()  # the cache may be shared: only a well-formed line is shown
    holder = written if re.fullmatch(r"process \d+ on [A-Za-z0-9._-]+", written) else "another process"
    part = _part_path(dest)
    started = last = time.monotonic()
    size = _size(part)
    log.info("waiting for %s: %s is fetching it into %s (%s)", dest.name, holder, dest.parent,
             f"{human_size(size)} so far" if size is not None else "not downloading yet")
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            time.sleep(WAIT_POLL_SECONDS)
        now = time.monotonic()
        if now - last >= WAIT_REPORT_SECONDS:
            grown = _size(part)
            rate = ((grown or 0) - (size or 0)) / (now - last)
            if grown is not None:
                state = f"{human_size(grown)} so far, {human_size(max(rate, 0))}/s"
            else:
                state = "its download has ended" if size is not None else "no download running yet"
            log.info("still waiting for %s (%s, %.0f s): %s", dest.name, holder, now - started, state)
            last, size = now, grown if grown is not None else size
    log.info("%s: the other process is done with it (waited %.0f s)", dest.name, time.monotonic() - started)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


@contextmanager
def _no_lock() -> Iterator[None]:
    yield


# --- pinning after a clean unpack ---------------------------------------------------------

@contextmanager
def settle_after_unpack(name: str, url: str, fetched: Mapping, *, sha256: str | None = None,
                        lock_file: Path | None = None) -> Iterator[None]:
    """Wrap the unpack of a fetched file (`fetched`: its path, sha256 and size).

    A clean unpack pins a provisional source (no sha256, no pin) in `lock_file`. A damaged
    archive (unpack.DamagedArchive) that is provisional is removed from the download cache,
    so the next run downloads it afresh; a pinned one is kept. The message says which.
    """
    path, origin = Path(fetched["path"]), redact_url(url)
    pin = None
    if sha256 is None and lock_file is not None:
        pin = _read_pin(Path(lock_file), name, origin)
    try:
        yield
    except DamagedArchive as exc:
        raise UserError(f"{exc}\n{_after_damage(name, origin, path, sha256, pin, lock_file)}",
                        exc.exit_code) from None
    if sha256 is None and pin is None and lock_file is not None:
        _write_pin(Path(lock_file), name, origin, fetched["sha256"], fetched["size"])


def _after_damage(name, origin, path, sha256, pin, lock_file) -> str:
    """Remove a damaged provisional download from the cache; say what happened and what to do."""
    if sha256 is not None or pin is not None:
        where = "the recipe's sha256" if sha256 is not None else f"its pin in {lock_file}"
        return (f"{name}: {path} matches {where}, so the source itself is damaged; it was kept. "
                f"Fix the source, then update the sha256 (or delete the `{name}` entry from the lock file).")
    stamp = _read_stamp(_stamp_path(path))
    if stamp is None or stamp.get("url") != origin:
        return f"{name}: {path} is your own file and was left as it is: replace it with a good copy."
    for leftover in (path, _stamp_path(path)):
        leftover.unlink(missing_ok=True)
    return (f"{name}: removed {path} (downloaded from {stamp.get('source') or origin}, not pinned yet) "
            "from the download cache: run again to download it afresh (if the server keeps serving a "
            f"damaged file, fix it or point {name}.url elsewhere).")


# --- downloading --------------------------------------------------------------------------

class _Stalled(Exception):
    """No progress for STALL_SECONDS."""


def _session() -> requests.Session:
    """A session that retries connection errors and 5xx answers with backoff (not mid-body drops)."""
    retry = Retry(total=RETRIES, connect=RETRIES, read=0, status=RETRIES, other=0,
                  backoff_factor=RETRY_BACKOFF, status_forcelist=RETRY_STATUS,
                  allowed_methods=frozenset({"GET"}), raise_on_status=False,
                  respect_retry_after_header=False)
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _stall_seconds() -> float:
    value = os.environ.get("RK3576_STALL_TIMEOUT")
    try:
        return float(value) if value else STALL_SECONDS
    except ValueError:
        raise UserError(f"RK3576_STALL_TIMEOUT must be a number of seconds, got {value!r}") from None


def _download(url: str, dest: Path, want: _Wanted, show: bool, kept: dict | None,
              origin: str) -> tuple[str, int]:
    """Stream `url` into `<dest>.part` (resuming it), verify, then move it into place."""
    part = _part_path(dest)
    with _session() as session:
        digest, size, resumed, validator = _transfer(session, url, part, want.sha256, show, kept)
        if want.sha256 is not None and digest != want.sha256 and resumed:
            # The kept .part may come from a different file: one clean retry from zero.
            _remove_part(part)
            digest, size, _, validator = _transfer(session, url, part, want.sha256, show, None)
    if want.sha256 is not None and digest != want.sha256:
        _remove_part(part)
        raise _SourceFailed(want.mismatch(digest) + "; this download was deleted")
    # The record first: a crash before the rename leaves a record without a file (ignored).
    _write_stamp(_stamp_path(dest), dest, digest, redact_url(url), origin, validator, part.stat())
    os.replace(part, dest)
    _part_record_path(part).unlink(missing_ok=True)
    return digest, size


def _transfer(session: requests.Session, url: str, part: Path, want: str | None, show: bool,
              kept: dict | None) -> tuple[str, int, bool, str | None]:
    """Download into `part`, resuming the same source with Range + If-Range.

    Returns (sha256, size, resumed a part from an earlier run, the server's validator).
    """
    label = redact_url(url)
    record = read_json_object(_part_record_path(part)) or {}
    resumed = part.exists() and part.stat().st_size > 0
    stall = _stall_seconds()
    last_error = ""
    for _attempt in range(MAX_ATTEMPTS):
        if part.exists() and not (record.get("url") == label and (record.get("validator") or want)):
            # No record, another source, or nothing to check a resume against: from zero.
            _remove_part(part)
            record, resumed = {}, False
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if record.get("validator"):
                headers["If-Range"] = record["validator"]
        elif kept and kept.get("validator"):
            # Is the server still serving the file we keep? Then downloading it again is pointless.
            key = "If-Modified-Since" if kept["validator"][-4:] == " GMT" else "If-None-Match"
            headers[key] = kept["validator"]
        try:
            response = session.get(url, headers=headers, stream=True, timeout=(CONNECT_TIMEOUT, stall))
        except requests.RequestException as exc:
            raise _SourceFailed(_reason(exc, stall)) from None
        with response:
            status = response.status_code
            if status == 304 and kept:
                raise _SourceFailed(
                    f"the server still serves the file cached as {kept['path']} (sha256 {kept['sha256']}, "
                    f"unchanged since it was downloaded), not {want}: if the sha256 asked for is a typo, "
                    "correct it")
            if status == 416 and offset:
                if _content_range_total(response.headers.get("Content-Range", "")) == offset:
                    return _hash_file(part), offset, resumed, record.get("validator")  # already whole
                _remove_part(part)
                record = {}
                continue
            if status == 206 and offset:
                if _content_range_start(response.headers.get("Content-Range", "")) != offset:
                    _remove_part(part)
                    record = {}
                    continue
                mode, hasher = "ab", _hash_file(part, hasher=True)
            elif status == 200:
                # A new download, a server ignoring Range, or a changed file (If-Range): from zero.
                offset, mode, hasher = 0, "wb", hashlib.sha256()
                record = {"url": label, "validator": _validator(response)}
                _atomic_write(_part_record_path(part), json.dumps(record) + "\n")
            else:
                raise _SourceFailed(f"HTTP {status} {response.reason}")
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else None
            try:
                size = _stream_body(response, part, mode, hasher, offset, total, show, stall)
            except _Stalled as exc:
                raise _SourceFailed(f"stalled: {exc}") from None
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                last_error = _reason(exc, stall)
                continue
            if total is not None and size != total:
                last_error = f"connection closed after {size} of {total} bytes"
                continue
            return hasher.hexdigest(), size, resumed, record.get("validator")
    raise _SourceFailed(f"transfer interrupted {MAX_ATTEMPTS} times (last: {last_error})")


def _validator(response) -> str | None:
    """A strong ETag, else Last-Modified: what If-Range can check a resume against."""
    etag = response.headers.get("ETag", "")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified") or None


def _stream_body(response, part: Path, mode: str, hasher, offset: int, total: int | None,
                 show: bool, stall: float) -> int:
    """Write and hash the body as it arrives; returns the .part size reached.

    Takes whatever the socket holds (read1), so a slow link's bytes reach the disk at once;
    fewer than STALL_MIN_BYTES in `stall` seconds (or nothing at all) is a stall.
    """
    size = offset
    window_start, window_bytes = time.monotonic(), 0
    with open(part, mode) as out, _Sink(out, hasher, part) as sink, \
            make_progress(total, part.name[:-5], enabled=show, initial=offset) as bar:
        read = response.raw.read1
        while True:
            try:
                # decode_content=False: a server's Content-Encoding must not alter the bytes we hash.
                chunk = read(CHUNK, decode_content=False)
            except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
                raise _Stalled(_progress_text(f"nothing received for {stall:g} s", size, total)) from None
            if not chunk:
                break
            sink.put(chunk)
            size += len(chunk)
            window_bytes += len(chunk)
            bar.update(len(chunk))
            now = time.monotonic()
            if now - window_start >= stall:
                if window_bytes < STALL_MIN_BYTES:
                    raise _Stalled(_progress_text(
                        f"{window_bytes} bytes in {now - window_start:.0f} s", size, total))
                window_start, window_bytes = now, 0
    return size


def _progress_text(what: str, size: int, total: int | None) -> str:
    of = f" of {human_size(total)}" if total else ""
    return f"{what}, after {human_size(size)}{of}"


class _Sink:
    """Writes and hashes chunks on two threads, overlapping both with receiving the next one."""

    def __init__(self, out, hasher, part: Path):
        self._part = part
        self._error: OSError | None = None
        self._queues = [queue.Queue(maxsize=16), queue.Queue(maxsize=16)]
        self._threads = [threading.Thread(target=self._run, args=(q, f), daemon=True)
                         for q, f in zip(self._queues, (out.write, hasher.update))]

    def __enter__(self) -> "_Sink":
        for thread in self._threads:
            thread.start()
        return self

    def put(self, chunk: bytes) -> None:
        self._raise()
        for q in self._queues:
            q.put(chunk)

    def __exit__(self, *exc) -> None:
        # Always drain: the .part must hold every byte counted so far, even on a dropped transfer.
        for q in self._queues:
            q.put(None)
        for thread in self._threads:
            thread.join()
        if exc[0] is None:
            self._raise()

    def _run(self, chunks: queue.Queue, consume) -> None:
        while (chunk := chunks.get()) is not None:
            if self._error is None:
                try:
                    consume(chunk)
                except OSError as exc:
                    self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            raise UserError(f"cannot write {self._part}: {self._error.strerror or self._error}; "
                            "free some disk space or point the download dir elsewhere (RK3576_DL_DIR)")


def _remove_part(part: Path) -> None:
    part.unlink(missing_ok=True)
    _part_record_path(part).unlink(missing_ok=True)


def _content_range_start(value: str) -> int | None:
    match = re.match(r"bytes (\d+)-", value.strip())
    return int(match.group(1)) if match else None


def _content_range_total(value: str) -> int | None:
    match = re.search(r"/(\d+)\s*$", value.strip())
    return int(match.group(1)) if match else None


def _reason(exc: BaseException, stall: float) -> str:
    """A short, credential-free reason for a failed request."""
    if isinstance(exc, (requests.ReadTimeout, urllib3.exceptions.ReadTimeoutError)):
        return f"stalled: no answer for {stall:g} s"
    text = redact_url(str(exc) or type(exc).__name__)
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
