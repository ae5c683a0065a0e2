"""A cache entry, and putting one in place.

Format 2 (written now): `index.json` lists every file (path, size, mode, the sha256 of its
full content, its data extents when it has holes) and every link; `products.zst` is one
multi-threaded zstd stream of the files' data extents, holes left out, in index order; and,
when the store signs, `index.json.sig` signs the index (which holds every file's sha256).
A file is read once: its extents are hashed (holes as zeros, never read) and compressed in
the same pass. Restoring streams the archive, writes each extent at its offset (holes stay
holes), checks each file's size and sha256, and only then places anything (see gate.py):
where every byte goes is decided by the index, never by the archive.

Format 1 (`products.tar.gz`, whole files in a tar) is still restored.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import queue
import re
import stat
import tarfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Protocol

from rk3576_build.build.cache import gate
from rk3576_build.build.cache.errors import CacheEntryError
from rk3576_build.build.cache.products import clean_rel, collect
from rk3576_build.core.errors import UserError
from rk3576_build.core.files import sha256_file

FORMAT = 2                       # bump when the entry layout changes meaning
FORMATS = (1, 2)                 # what restore reads
INDEX = "index.json"
SIGNATURE = "index.json.sig"
ARCHIVE = "products.zst"
ARCHIVE_V1 = "products.tar.gz"
ENTRY_FILES = (INDEX, SIGNATURE, ARCHIVE, ARCHIVE_V1)  # every file an entry may hold
MEDIA_TYPES = {INDEX: "application/vnd.rk3576-build.cache.index.v1+json",
               SIGNATURE: "application/vnd.rk3576-build.cache.signature.v1+sshsig",
               ARCHIVE: "application/vnd.rk3576-build.cache.products.v2+zstd",
               ARCHIVE_V1: "application/vnd.rk3576-build.cache.products.v1.tar+gzip"}
BLOCK = 4 << 20                  # read, hash, (de)compress and write in blocks of this size
ZSTD_LEVEL = 1
# Bounds on what an entry may claim, checked before anything is read or written past them.
MAX_INDEX_BYTES = 32 << 20
MAX_SIGNATURE_BYTES = 64 << 10
MAX_FILES = 200_000
MAX_LINKS = 100_000
MAX_EXTENTS = 1_000_000
MAX_LOGICAL_BYTES = 256 << 30    # the sum of the files' sizes, holes included
MAX_WINDOW = 1 << 27             # zstd window a decompressor accepts (level 1 uses far less)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MODES = (0o644, 0o755)


def _zstd():
    """The zstandard module (the `cache` extra), imported on first use so that a build
    without a cache does not need it."""
    try:
        import zstandard  # optional extra (cache): only a build that uses the cache needs it
    except ImportError:
        raise UserError("the build cache needs the zstandard package: pip install 'rk3576-build[cache]'") from None
    return zstandard


def require_zstd() -> None:
    """Fail early, with the install hint, when the cache's compressor is missing."""
    _zstd()


# --------------------------------------------------------------------------- hashing


_ZEROS = bytes(1 << 20)


def _feed(sha, data) -> None:
    """Hash `data`: bytes, or a count of zero bytes (a hole: hashed, never read or stored)."""
    if not isinstance(data, int):
        sha.update(data)
        return
    while data >= len(_ZEROS):
        sha.update(_ZEROS)
        data -= len(_ZEROS)
    if data:
        sha.update(memoryview(_ZEROS)[:data])


class _Hasher:
    """sha256 updates in a worker thread, so hashing overlaps reading, (de)compressing and writing
    (hashlib releases the GIL). Updates of one digest are applied in order."""

    def __init__(self):
        self._queue: queue.Queue = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="cache-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    _feed(*item)
                except BaseException as exc:  # handed to the caller in close()
                    self._error = exc

    def update(self, sha, data) -> None:
        self._queue.put((sha, data))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> _Hasher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- relocation

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


def _relocatable(data: bytes, roots: list[bytes]) -> bytes | None:
    """A small text file's bytes with the SDK path replaced, if it contains it; else None."""
    if b"\0" in data or not any(spelling in data for spelling in roots):
        return None
    return _placeholder(data, roots)


# --------------------------------------------------------------------------- packing


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) of the file's data, holes left out (SEEK_DATA/SEEK_HOLE)."""
    extents: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        if end > start:
            extents.append((start, end - start))
        pos = end
    return extents


def _pack_file(path: str, rel: str, roots: list[bytes], out, hasher: _Hasher) -> tuple[dict, Any]:
    """Write one file's data to `out`; its index item and its (pending) sha256."""
    sha = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        st = os.fstat(fh.fileno())
        item: dict[str, Any] = {"path": rel, "mode": 0o755 if st.st_mode & 0o111 else 0o644}
        if st.st_size <= RELOCATE_MAX:  # small: read whole, once (it may name the SDK's path)
            data = fh.read(RELOCATE_MAX + 1)
            if len(data) != st.st_size:
                raise OSError(f"{rel} changed while it was being stored")
            text = _relocatable(data, roots)
            if text is not None:
                data, item["relocate"] = text, True
            sha.update(data)
            out.write(data)
            item["size"] = len(data)
            return item, sha
        size = st.st_size
        dense = st.st_blocks * 512 >= size
        extents = [(0, size)] if dense else data_extents(fh.fileno(), size)
        pos = 0
        for offset, length in extents:
            if offset > pos:
                hasher.update(sha, offset - pos)
            fh.seek(offset)
            left = length
            while left:
                chunk = fh.read(min(BLOCK, left))
                if not chunk:
                    raise OSError(f"{rel} changed while it was being stored")
                hasher.update(sha, chunk)
                out.write(chunk)
                left -= len(chunk)
            pos = offset + length
        if size > pos:
            hasher.update(sha, size - pos)
        if os.fstat(fh.fileno()).st_size != size:
            raise OSError(f"{rel} changed while it was being stored")
    item["size"] = size
    if extents != [(0, size)]:
        item["extents"] = [[offset, length] for offset, length in extents]
    return item, sha


def index_bytes(index: Mapping) -> bytes:
    """The index as stored and signed: canonical JSON."""
    return (json.dumps(index, sort_keys=True, separators=(",", ":"), ensure_ascii=True) + "\n").encode()


def pack(root: Path, paths: Iterable[str], entry_dir: Path, *, key: str, meta: Mapping | None = None,
         archive_sha256: bool = False) -> dict:
    """Write an entry (`index.json`, `products.zst`) for `paths` under `root` into `entry_dir`.

    Deterministic: files in sorted order, no times or owners, zstd's multi-threaded output
    (the same for any number of threads). `archive_sha256` also records the archive's digest
    (a registry names blobs by it). Refuses (CacheEntryError) an entry that restore would
    refuse, e.g. a link that leads outside the SDK. Returns the index.
    """
    zstandard = _zstd()
    found = collect(root, paths)
    roots = _root_spellings(root)
    links = [(path, _placeholder(target.encode(), roots).decode()) for path, target in sorted(found.links.items())]
    if len(found.files) > MAX_FILES or len(links) > MAX_LINKS:
        raise CacheEntryError(f"{len(found.files)} files and {len(links)} links: more than an entry may hold "
                              f"({MAX_FILES} files, {MAX_LINKS} links)")
    try:
        gate.plan(root, [], [(path, _relocated(target.encode(), root).decode()) for path, target in links])
    except CacheEntryError as exc:
        raise CacheEntryError(f"not storable: {exc}") from None
    entry_dir = Path(entry_dir)
    entry_dir.mkdir(parents=True, exist_ok=True)
    archive = entry_dir / ARCHIVE
    packed = []
    archive_digest = hashlib.sha256() if archive_sha256 else None
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
    with _Hasher() as hasher, open(archive, "wb") as raw:
        sink = _HashingWriter(raw, archive_digest, hasher) if archive_digest else raw
        with compressor.stream_writer(sink, closefd=False, write_size=BLOCK) as out:
            for rel in sorted(found.files):
                packed.append(_pack_file(found.files[rel], rel, roots, out, hasher))
    files = [{**item, "sha256": sha.hexdigest()} for item, sha in packed]
    index = {
        "format": FORMAT, "key": key, "meta": dict(meta or {}), "files": files,
        "links": [{"path": path, "target": target} for path, target in links],
        "archive": {"name": ARCHIVE, "size": archive.stat().st_size,
                    **({"sha256": archive_digest.hexdigest()} if archive_digest else {})},
    }
    (entry_dir / INDEX).write_bytes(index_bytes(index))
    return index


class _HashingWriter:
    """A file the compressor writes to, hashing what it writes (in the hasher thread)."""

    def __init__(self, raw, sha, hasher: _Hasher):
        self.raw, self.sha, self.hasher = raw, sha, hasher

    def write(self, data) -> int:
        data = bytes(data)
        self.hasher.update(self.sha, data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


# --------------------------------------------------------------------------- reading an entry


def _int(value, where: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{where}: {value!r} is not a count")
    return value


def parse_index(data: bytes, key: str) -> dict:
    """The index of the entry of `key`, checked for shape and bounds before it is used.

    Each file item gets `extents`, its stored (offset, length) pairs.
    """
    if len(data) > MAX_INDEX_BYTES:
        raise CacheEntryError(f"the index is {len(data)} bytes, more than an entry's may be ({MAX_INDEX_BYTES})")
    try:
        index = json.loads(data)
        if not isinstance(index, dict):
            raise ValueError("not an object")
        if index.get("format") not in FORMATS or index.get("key") != key:
            raise CacheEntryError(f"the entry's index is for another key or format ({str(index.get('key'))[:12]}, "
                                  f"format {index.get('format')})")
        files, links = index["files"], index["links"]
        if not isinstance(files, list) or not isinstance(links, list):
            raise ValueError("files and links must be lists")
        if len(files) > MAX_FILES or len(links) > MAX_LINKS:
            raise CacheEntryError(f"the index lists {len(files)} files and {len(links)} links, more than an "
                                  f"entry may hold ({MAX_FILES} files, {MAX_LINKS} links)")
        seen: set[str] = set()
        logical = extents_total = 0
        for item in files:
            path = item["path"]
            if not isinstance(path, str) or clean_rel(path) != path or path in seen:
                raise ValueError(f"file path {path!r}")
            seen.add(path)
            size = _int(item["size"], path)
            if not isinstance(item["sha256"], str) or not _SHA256.fullmatch(item["sha256"]):
                raise ValueError(f"{path}: sha256")
            if item["mode"] not in _MODES or isinstance(item["mode"], bool):
                raise ValueError(f"{path}: mode {item['mode']!r}")
            if item.get("relocate") and size > RELOCATE_MAX:
                raise ValueError(f"{path}: a relocated file of {size} bytes")
            extents = item.get("extents", [[0, size]] if size else []) if index["format"] == 2 else [[0, size]]
            pos = 0
            checked = []
            for pair in extents:
                offset, length = _int(pair[0], path), _int(pair[1], path, 1)
                if len(pair) != 2 or offset < pos or offset + length > size:
                    raise ValueError(f"{path}: extents")
                pos = offset + length
                checked.append((offset, length))
            item["extents"] = checked
            logical += size
            extents_total += len(checked)
        for item in links:
            path, target = item["path"], item["target"]
            if not isinstance(path, str) or clean_rel(path) != path or path in seen:
                raise ValueError(f"link path {path!r}")
            if not isinstance(target, str) or not target or "\0" in target or len(target) > 4096:
                raise ValueError(f"{path}: link target")
            seen.add(path)
        if logical > MAX_LOGICAL_BYTES or extents_total > MAX_EXTENTS:
            raise CacheEntryError(f"the index claims {logical} bytes in {extents_total} extents, more than an "
                                  f"entry may hold ({MAX_LOGICAL_BYTES} bytes, {MAX_EXTENTS} extents)")
        archive = index["archive"]
        _int(archive["size"], "archive size")
        if index["format"] == 1 or "sha256" in archive:
            if not isinstance(archive["sha256"], str) or not _SHA256.fullmatch(archive["sha256"]):
                raise ValueError("archive sha256")
        if index["format"] == 2 and archive.get("name") != ARCHIVE:
            raise ValueError(f"archive name {archive.get('name')!r}")
    except CacheEntryError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise CacheEntryError(f"the entry's index is missing or unreadable ({exc})") from None
    return index


class EntrySource(Protocol):
    """An entry's files where a backend keeps them. `path`: a local directory holding them (or None)."""

    path: Path | None

    def read(self, name: str, limit: int) -> bytes | None: ...

    def open(self, name: str, size: int, sha256: str | None) -> contextlib.AbstractContextManager[IO[bytes]]: ...


class VerifyingStream:
    """A stream that refuses more than `size` bytes and, at its end, another size or digest;
    what it reads may also be copied to `tee`."""

    def __init__(self, raw, size: int, sha256: str | None, *, mismatch: str, tee: IO[bytes] | None = None):
        self.raw, self.size, self.expected, self.mismatch, self.tee = raw, size, sha256, mismatch, tee
        self.sha = hashlib.sha256() if sha256 else None
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        want = self.size - self.count + 1  # one byte more shows a stream longer than claimed
        data = self.raw.read(want if n is None or n < 0 else min(n, want))
        if not data:
            if self.count != self.size:
                raise CacheEntryError(f"the archive is cut short or missing ({self.count} of {self.size} bytes)")
            if self.sha is not None and self.sha.hexdigest() != self.expected:
                raise CacheEntryError(self.mismatch)
            return b""
        self.count += len(data)
        if self.count > self.size:
            raise CacheEntryError(f"the archive is longer than its index says ({self.size} bytes)")
        if self.sha is not None:
            self.sha.update(data)
        if self.tee is not None:
            self.tee.write(data)
        return data

    def drain(self) -> None:
        """Read to the end (so the size and digest are checked)."""
        while self.read(BLOCK):
            pass


class LocalEntry:
    """An entry's files in a local directory (a directory cache, or a scratch copy)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def read(self, name: str, limit: int) -> bytes | None:
        try:
            with open(self.path / name, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size > limit:
                    raise CacheEntryError(f"{name} is {size} bytes, more than an entry's may be ({limit})")
                return fh.read(limit + 1)
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def open(self, name: str, size: int, sha256: str | None) -> Iterator[VerifyingStream]:
        try:
            fh = open(self.path / name, "rb")
        except FileNotFoundError:
            raise CacheEntryError(f"the archive is cut short or missing (0 of {size} bytes)") from None
        with fh:
            actual = os.fstat(fh.fileno()).st_size
            if actual != size:
                raise CacheEntryError(f"the archive is cut short or missing ({actual} of {size} bytes)"
                                      if actual < size else f"the archive is longer than its index says ({size} bytes)")
            yield VerifyingStream(fh, size, sha256, mismatch="the archive's sha256 does not match its index (damaged)")


def read_index(entry_dir: Path, key: str) -> dict:
    """The index of the entry in `entry_dir`, checked (see parse_index)."""
    data = LocalEntry(entry_dir).read(INDEX, MAX_INDEX_BYTES)
    if data is None:
        raise CacheEntryError("the entry's index is missing or unreadable (no index.json)")
    return parse_index(data, key)


# --------------------------------------------------------------------------- restoring


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _extract_v2(stream, files: list[dict], staging: gate.Staging, root: Path) -> dict[str, str]:
    """Each file's extents from the zstd stream into staging, holes left as holes; each file's
    size and sha256 checked (a small one before it is written, then relocated to `root`)."""
    zstandard = _zstd()
    reader = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW).stream_reader(
        stream, read_size=BLOCK, read_across_frames=True, closefd=False)

    def take(count: int, path: str) -> bytes:
        data = reader.read(count)
        if len(data) < count:
            raise CacheEntryError(f"the archive is cut short (it ends in {path})")
        return data

    staged, pending = {}, []
    now = time.time()
    try:
        with _Hasher() as hasher:
            for item in files:
                path, size, extents = item["path"], item["size"], item["extents"]
                tmp = staging.new()
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                try:
                    if size <= RELOCATE_MAX:  # small: checked whole before a byte is written
                        data = bytearray(size)
                        for offset, length in extents:
                            data[offset:offset + length] = take(length, path)
                        if hashlib.sha256(data).hexdigest() != item["sha256"]:
                            raise CacheEntryError(f"{path}: size or sha256 does not match the index (damaged)")
                        _write_all(fd, _relocated(bytes(data), root) if item.get("relocate") else data)
                    else:
                        sha = hashlib.sha256()
                        pos = 0
                        for offset, length in extents:
                            if offset > pos:
                                hasher.update(sha, offset - pos)
                                os.lseek(fd, offset, os.SEEK_SET)
                            left = length
                            while left:
                                chunk = take(min(BLOCK, left), path)
                                hasher.update(sha, chunk)
                                _write_all(fd, chunk)
                                left -= len(chunk)
                            pos = offset + length
                        if size > pos:
                            hasher.update(sha, size - pos)
                            os.ftruncate(fd, size)  # a trailing hole
                        pending.append((item, sha))
                    os.fchmod(fd, item["mode"])
                    os.utime(fd, (now, now))  # restored files count as freshly built for make
                finally:
                    os.close(fd)
                staged[path] = tmp
            if reader.read(1):
                raise CacheEntryError("the archive holds more than its index lists")
    except zstandard.ZstdError as exc:
        raise CacheEntryError(f"the archive is cut short or damaged ({exc})") from None
    for item, sha in pending:
        if sha.hexdigest() != item["sha256"]:
            raise CacheEntryError(f"{item['path']}: size or sha256 does not match the index (damaged)")
    return staged


def _extract_v1(stream, files: list[dict], staging: gate.Staging, root: Path) -> dict[str, str]:
    """Format 1: a gzip'd tar of whole files; each member's size is checked against the index
    before a byte of it is written, and no more than that is ever read."""
    expected = {item["path"]: item for item in files}
    staged: dict[str, str] = {}
    now = time.time()
    try:
        with tarfile.open(fileobj=stream, mode="r|gz") as tar:
            for member in tar:
                item = expected.get(member.name)
                if item is None or member.name in staged or not member.isreg() or member.issparse():
                    raise CacheEntryError(f"the archive holds {member.name!r}, which its index does not list")
                if member.size != item["size"]:
                    raise CacheEntryError(f"{member.name}: the archive says {member.size} bytes, its index "
                                          f"{item['size']} (damaged or hostile)")
                tmp = staging.new()
                digest = hashlib.sha256()
                src = tar.extractfile(member)
                if src is None:  # (isreg() above: never)
                    raise CacheEntryError(f"{member.name}: not a file")
                with src, open(tmp, "xb") as dst:
                    left = member.size
                    while left:
                        chunk = src.read(min(BLOCK, left))
                        if not chunk:
                            raise CacheEntryError(f"the archive is cut short (it ends in {member.name})")
                        digest.update(chunk)
                        dst.write(chunk)
                        left -= len(chunk)
                if digest.hexdigest() != item["sha256"]:
                    raise CacheEntryError(f"{member.name}: size or sha256 does not match the index (damaged)")
                if item.get("relocate"):
                    Path(tmp).write_bytes(_relocated(Path(tmp).read_bytes(), root))
                os.chmod(tmp, item["mode"])
                os.utime(tmp, (now, now))  # restored files count as freshly built for make
                staged[member.name] = tmp
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise CacheEntryError(f"the archive is cut short or damaged ({exc})") from None
    missing = sorted(set(expected) - set(staged))
    if missing:
        raise CacheEntryError(f"the archive lacks {len(missing)} file(s) its index lists, e.g. {missing[0]}")
    return staged


def _same_file(path: str, st: os.stat_result, item: Mapping) -> bool:
    """An existing file (`st`: its lstat) that already holds the item: kept as it is, with its time."""
    return (stat.S_ISREG(st.st_mode) and st.st_size == item["size"] and (st.st_mode & 0o777) == item["mode"]
            and not item.get("relocate") and sha256_file(Path(path)) == item["sha256"])


def restore(entry, root: Path, *, key: str, verify: Callable[[bytes, bytes | None], None] | None = None) -> list[str]:
    """Verify the entry (a directory or an EntrySource) completely, then put its files and links under `root`.

    `verify(index_bytes, signature_bytes)` checks the signature and raises CacheEntryError.
    The index is bounded and checked, every path and link target is checked against the
    root (gate.plan), every file is written to staging inside `root` and checked (size,
    sha256), and only then is anything placed, all or nothing. Raises CacheEntryError for a
    refused entry, which places nothing. Returns the restored paths.
    """
    source = LocalEntry(Path(entry)) if isinstance(entry, (str, Path)) else entry
    root = Path(root)
    data = source.read(INDEX, MAX_INDEX_BYTES)
    if data is None:
        raise CacheEntryError("the entry's index is missing or unreadable (no index.json)")
    if verify is not None:
        verify(data, source.read(SIGNATURE, MAX_SIGNATURE_BYTES))
    index = parse_index(data, key)
    links = [(item["path"], _relocated(item["target"].encode(), root).decode()) for item in index["links"]]
    placement = gate.plan(root, index["files"], links)
    archive = index["archive"]
    v2 = index["format"] == 2
    with gate.Staging(root) as staging:
        with source.open(ARCHIVE if v2 else ARCHIVE_V1, archive["size"], archive.get("sha256")) as stream:
            staged = (_extract_v2 if v2 else _extract_v1)(stream, index["files"], staging, root)
            stream.drain()
        staging.commit([(dest, staged[item["path"]], item) for dest, item in placement.files], placement.links,
                       _same_file)
    return sorted([*(item["path"] for item in index["files"]), *(item["path"] for item in index["links"])])
