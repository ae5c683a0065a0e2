"""HTTP downloads into a slot's `.part`: retries with backoff, resume (Range + If-Range), stall detection.

The one module that speaks HTTP (requests, urllib3).
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import threading
import time
from pathlib import Path

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from rk3576_build.config.workspace import stall_seconds
from rk3576_build.core.errors import UserError
from rk3576_build.core.files import CHUNK, read_json_object, sha256_file, sha256_of, write_json
from rk3576_build.core.progress import make_progress
from rk3576_build.core.text import human_size, redact_url
from rk3576_build.sources.pins import Wanted
from rk3576_build.sources.slots import part_path, part_record_path, stamp_path, write_stamp

MAX_ATTEMPTS = 5          # a transfer dropped mid-way is resumed this many times per run
CONNECT_TIMEOUT = 15      # seconds
STALL_SECONDS = 30.0      # nothing for this long, or less than STALL_MIN_BYTES in it: a stall
STALL_MIN_BYTES = 64 * 1024
RETRIES = 3               # connection errors and 5xx answers, retried with exponential backoff
RETRY_BACKOFF = 0.5       # seconds: 0, 1, 2 between the retries
RETRY_STATUS = (500, 502, 503, 504)


class SourceFailed(Exception):
    """One source could not deliver the file; the next one is tried."""


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


def download(url: str, dest: Path, want: Wanted, show: bool, kept: dict | None,
              origin: str) -> tuple[str, int]:
    """Stream `url` into `<dest>.part` (resuming it), verify, then move it into place."""
    part = part_path(dest)
    with _session() as session:
        digest, size, resumed, validator = _transfer(session, url, part, want.sha256, show, kept)
        if want.sha256 is not None and digest != want.sha256 and resumed:
            # The kept .part may come from a different file: one clean retry from zero.
            _remove_part(part)
            digest, size, _, validator = _transfer(session, url, part, want.sha256, show, None)
    if want.sha256 is not None and digest != want.sha256:
        _remove_part(part)
        raise SourceFailed(want.mismatch(digest) + "; this download was deleted")
    # The record first: a crash before the rename leaves a record without a file (ignored).
    write_stamp(stamp_path(dest), dest, digest, redact_url(url), origin, validator, part.stat())
    os.replace(part, dest)
    part_record_path(part).unlink(missing_ok=True)
    return digest, size


def _transfer(session: requests.Session, url: str, part: Path, want: str | None, show: bool,
              kept: dict | None) -> tuple[str, int, bool, str | None]:
    """Download into `part`, resuming the same source with Range + If-Range.

    Returns (sha256, size, resumed a part from an earlier run, the server's validator).
    """
    label = redact_url(url)
    record = read_json_object(part_record_path(part)) or {}
    resumed = part.exists() and part.stat().st_size > 0
    stall = stall_seconds(STALL_SECONDS)
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
            raise SourceFailed(_reason(exc, stall)) from None
        with response:
            status = response.status_code
            if status == 304 and kept:
                raise SourceFailed(
                    f"the server still serves the file cached as {kept['path']} (sha256 {kept['sha256']}, "
                    f"unchanged since it was downloaded), not {want}: if the sha256 asked for is a typo, "
                    "correct it")
            if status == 416 and offset:
                if _content_range_total(response.headers.get("Content-Range", "")) == offset:
                    return sha256_file(part), offset, resumed, record.get("validator")  # already whole
                _remove_part(part)
                record = {}
                continue
            if status == 206 and offset:
                if _content_range_start(response.headers.get("Content-Range", "")) != offset:
                    _remove_part(part)
                    record = {}
                    continue
                mode, hasher = "ab", sha256_of(part)
            elif status == 200:
                # A new download, a server ignoring Range, or a changed file (If-Range): from zero.
                offset, mode, hasher = 0, "wb", hashlib.sha256()
                record = {"url": label, "validator": _validator(response)}
                write_json(part_record_path(part), record, indent=None)
            else:
                raise SourceFailed(f"HTTP {status} {response.reason}")
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else None
            try:
                size = _stream_body(response, part, mode, hasher, offset, total, show, stall)
            except _Stalled as exc:
                raise SourceFailed(f"stalled: {exc}") from None
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                last_error = _reason(exc, stall)
                continue
            if total is not None and size != total:
                last_error = f"connection closed after {size} of {total} bytes"
                continue
            return hasher.hexdigest(), size, resumed, record.get("validator")
    raise SourceFailed(f"transfer interrupted {MAX_ATTEMPTS} times (last: {last_error})")


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
        self._queues: list[queue.Queue[bytes | None]] = [queue.Queue(maxsize=16), queue.Queue(maxsize=16)]
        self._threads = [threading.Thread(target=self._run, args=(q, f), daemon=True)
                         for q, f in zip(self._queues, (out.write, hasher.update), strict=True)]

    def __enter__(self) -> _Sink:
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
    part_record_path(part).unlink(missing_ok=True)


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
