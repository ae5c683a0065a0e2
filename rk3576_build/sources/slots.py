"""The download cache's slots: where a file lives, its `.done` record, and the lock two processes share a slot by.

A slot holds the file and its `.done` record (sha256, size, mtime, URL, the server's validator);
while a download runs, `.part` and `.part.json`. A process waiting for a slot's lock says whose
download it waits for and how far that got.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rk3576_build.core import logs
from rk3576_build.core.files import read_json_object, sha256_file, write_json
from rk3576_build.core.text import human_size, redact_url

WAIT_REPORT_SECONDS = 15.0  # how often a process waiting for another's download says how far it got
WAIT_POLL_SECONDS = 0.25

log = logs.get(__name__)


def cache_path(downloads_dir: Path, url: str, filename: str, sha256: str | None = None) -> Path:
    """Where the cache keeps `filename` fetched from `url`: a slot per content when its sha256 is
    known (whatever URL or mirror serves it), else a slot per source URL."""
    if sha256 is not None:
        return Path(downloads_dir) / f"sha256-{sha256}" / filename
    key = hashlib.sha256(redact_url(url).encode()).hexdigest()[:16]
    return Path(downloads_dir) / key / filename


def stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".done")


def part_path(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def part_record_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def read_stamp(stamp: Path) -> dict | None:
    data = read_json_object(stamp)
    return data if data and "sha256" in data else None


def write_stamp(stamp: Path, path: Path, digest: str, source: str, url: str | None = None,
                 validator: str | None = None, st: os.stat_result | None = None) -> None:
    st = st or path.stat()
    data = {"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "path": str(path), "source": source, "url": url, "validator": validator}
    write_json(stamp, data)


def _stamped_digest(path: Path, stamp: Path) -> str | None:
    """The record's sha256 if the file still has the size and mtime it recorded."""
    data = read_stamp(stamp)
    if not data:
        return None
    st = path.stat()
    if data.get("size") == st.st_size and data.get("mtime_ns") == st.st_mtime_ns \
            and data.get("path", str(path)) == str(path):
        return data["sha256"]
    return None


def check_cache(dest: Path, want: str | None) -> tuple[tuple[str, int, str] | None, dict | None]:
    """((sha256, size, source) of a usable cached file, or None; the record of a kept one).

    A file that no longer matches its own record is damaged and removed. An intact one
    (matching its record) that is not the sha256 asked for is kept, never deleted: a typo
    in a sha256 must not cost a multi-GB download; a download that matches replaces it.
    """
    stamp = stamp_path(dest)
    if not dest.is_file():
        stamp.unlink(missing_ok=True)
        return None, None
    record = read_stamp(stamp) or {}
    digest = _stamped_digest(dest, stamp)     # trusting it avoids re-hashing multi-GB files
    if digest is None:
        digest = sha256_file(dest)
        if want is None or digest != want:
            dest.unlink()
            stamp.unlink(missing_ok=True)
            return None, None
        write_stamp(stamp, dest, digest, record.get("source", str(dest)), record.get("url"),
                     record.get("validator"))
    if want is None or digest == want:
        return (digest, dest.stat().st_size, record.get("source", str(dest))), None
    return None, {**record, "sha256": digest, "path": str(dest)}


def find_cached(downloads_dir: Path, dest: Path, origin: str,
                want: str) -> tuple[tuple[Path, str, int, str] | None, dict | None]:
    """Another slot's copy of `dest`'s file name: ((path, sha256, size, source) of one with the
    sha256 `want`, or None; the newest intact copy from `origin` otherwise, as check_cache's kept).

    Only records that still match their file are trusted, and nothing is changed: those slots
    belong to other sources (and their locks), e.g. a URL's slot from before it was pinned.
    """
    kept, kept_time = None, -1
    pattern = os.path.join(glob.escape(str(downloads_dir)), "*", glob.escape(dest.name) + ".done")
    for stamp in map(Path, glob.glob(pattern)):
        path = stamp.with_name(dest.name)
        if path == dest or not path.is_file():
            continue
        record = read_stamp(stamp) or {}
        try:
            digest = _stamped_digest(path, stamp)
            if digest == want:
                return (path, digest, path.stat().st_size, record.get("source", str(path))), None
            if digest is not None and record.get("url") == origin and stamp.stat().st_mtime_ns > kept_time:
                kept, kept_time = {**record, "path": str(path)}, stamp.stat().st_mtime_ns
        except OSError:  # removed meanwhile by the process that owns that slot
            continue
    return None, kept


def verify_local(path: Path, downloads_dir: Path) -> tuple[str, int]:
    """Hash a user's local file once; the record lives in the cache, not beside the file."""
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    stamp = downloads_dir / ".local-stamps" / f"{key}.done"
    digest = _stamped_digest(path.resolve(), stamp)
    if digest is None:
        digest = sha256_file(path)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        write_stamp(stamp, path.resolve(), digest, str(path))
    return digest, path.stat().st_size


@contextmanager
def cache_lock(dest: Path) -> Iterator[None]:
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
    part = part_path(dest)
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
def no_lock() -> Iterator[None]:
    yield
