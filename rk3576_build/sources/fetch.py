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

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from rk3576_build.core.errors import UserError
from rk3576_build.core.progress import progress_enabled
from rk3576_build.core.text import human_size, redact_url
from rk3576_build.sources.http import SourceFailed, download
from rk3576_build.sources.pins import Wanted, check_sha256, read_pin, write_pin
from rk3576_build.sources.slots import (
    cache_lock,
    cache_path,
    check_cache,
    find_cached,
    no_lock,
    part_path,
    read_stamp,
    stamp_path,
    verify_local,
)
from rk3576_build.sources.unpack import DamagedArchive

SDK_HINT = (
    "MYIR's SDK cannot be downloaded by this tool: download it by hand from MYIR's developer "
    "portal (it needs a login), then set MYIR_SDK=/path/to/MYD-LR3576-Distribution-L6.1.75-V1.1.0.tar.gz "
    "or override sdk.url in recipes/<name>.local.yaml"
)


@dataclass(frozen=True)
class FetchResult:
    """A verified source file."""

    path: Path         # verified local file (in the download cache, or the user's local file in place)
    sha256: str
    size: int
    source: str        # the URL or path actually used, credentials stripped
    provisional: bool  # no sha256 and no pin yet: pinned (or discarded) by settle_after_unpack


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


def _fetch(name: str, url: str, *, sha256: str | None, downloads_dir: Path, mirrors: Sequence[str], offline: bool,
           lock_file: Path | None, filename: str | None, progress: bool | None) -> FetchResult:
    expected = check_sha256(name, sha256) if sha256 is not None else None
    filename = filename or _basename(name, url)
    if "/" in filename or filename in ("", ".", ".."):
        raise UserError(f"{name}: invalid file name {filename!r}; give a plain file name")
    pin = None
    if expected is None and lock_file is not None:
        pin = read_pin(Path(lock_file), name, redact_url(url))
    want = Wanted(name, expected or pin, lock_file if pin else None)
    sources = [_mirror_candidate(m, filename) for m in mirrors] + [url]
    path, digest, size, used = _obtain(name, filename, sources, url, want, downloads_dir,
                                       offline, progress_enabled(progress))
    return FetchResult(path=path, sha256=digest, size=size, source=used, provisional=want.sha256 is None)


def _obtain(name: str, filename: str, sources: list[str], url: str, want: Wanted, downloads_dir: Path, offline: bool,
            show: bool) -> tuple[Path, str, int, str]:
    """Cache first, then each source in order; returns (path, sha256, size, source)."""
    failures: list[tuple[str, str]] = []
    needs_cache = any(_is_remote(s) for s in sources)
    dest = cache_path(downloads_dir, url, filename, want.sha256)
    with cache_lock(dest) if needs_cache else no_lock():
        kept = None
        if needs_cache:
            hit, kept = check_cache(dest, want.sha256)
            if hit:
                return (dest, *hit)
            if want.sha256 is not None:
                found, kept = find_cached(downloads_dir, dest, redact_url(url), want.sha256)
                if found:
                    return found
        for source in sources:
            label = redact_url(source)
            if not _is_remote(source):
                path = _local_path(name, source)
                if not path.is_file():
                    failures.append((str(path), "no such file"))
                    continue
                digest, size = verify_local(path, downloads_dir)
                if want.sha256 is not None and digest != want.sha256:
                    failures.append((str(path), want.mismatch(digest)))
                    continue
                return path, digest, size, str(path)
            if offline:
                failures.append((label, "not tried (offline)"))
                continue
            try:
                digest, size = download(source, dest, want, show, kept, origin=redact_url(url))
            except SourceFailed as exc:
                failures.append((label, str(exc)))
                continue
            return dest, digest, size, label
    raise UserError(_failure_message(name, filename, url, dest, failures, offline,
                                     downloads_dir, needs_cache, kept))


def _failure_message(name: str, filename: str, url: str, dest: Path, failures: list[tuple[str, str]], offline: bool,
                     downloads_dir: Path, needs_cache: bool, kept: dict | None) -> str:
    """One message naming each source tried, why it failed and what to do next."""
    lines = [f"could not fetch {name} ({filename}):"]
    lines += [f"  - {source}: {reason}" for source, reason in failures]
    part = part_path(dest)
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
        pin = read_pin(Path(lock_file), name, origin)
    try:
        yield
    except DamagedArchive as exc:
        raise UserError(f"{exc}\n{_after_damage(name, origin, path, sha256, pin, lock_file)}",
                        exc.exit_code) from None
    if sha256 is None and pin is None and lock_file is not None:
        write_pin(Path(lock_file), name, origin, fetched["sha256"], fetched["size"])


def _after_damage(name: str, origin: str, path: Path, sha256: str | None, pin: str | None,
                  lock_file: Path | None) -> str:
    """Remove a damaged provisional download from the cache; say what happened and what to do."""
    if sha256 is not None or pin is not None:
        where = "the recipe's sha256" if sha256 is not None else f"its pin in {lock_file}"
        return (f"{name}: {path} matches {where}, so the source itself is damaged; it was kept. "
                f"Fix the source, then update the sha256 (or delete the `{name}` entry from the lock file).")
    stamp = read_stamp(stamp_path(path))
    if stamp is None or stamp.get("url") != origin:
        return f"{name}: {path} is your own file and was left as it is: replace it with a good copy."
    for leftover in (path, stamp_path(path)):
        leftover.unlink(missing_ok=True)
    return (f"{name}: removed {path} (downloaded from {stamp.get('source') or origin}, not pinned yet) "
            "from the download cache: run again to download it afresh (if the server keeps serving a "
            f"damaged file, fix it or point {name}.url elsewhere).")


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
