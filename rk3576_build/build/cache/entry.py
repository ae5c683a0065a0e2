"""A cache entry: a deterministic `products.tar.gz` plus an `index.json` with every file's sha256
and size; restoring verifies all of it in a staging directory before anything is put in place."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import zlib
from pathlib import Path
from typing import Iterable, Mapping

from rk3576_build.build.cache.products import clean_rel, collect
from rk3576_build.manifest import sha256_file

FORMAT = 1                       # bump when the entry layout changes meaning
INDEX = "index.json"
ARCHIVE = "products.tar.gz"
ENTRY_FILES = (INDEX, ARCHIVE)
MEDIA_TYPES = {INDEX: "application/vnd.rk3576-build.cache.index.v1+json",
               ARCHIVE: "application/vnd.rk3576-build.cache.products.v1.tar+gzip"}
CHUNK = 1 << 20

class CacheEntryError(Exception):
    """A cache entry that must not be used (damaged, cut short, or not what its key says)."""



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
            clean_rel(item["path"]), int(item["size"]), str(item["sha256"])
        for item in index["links"]:
            clean_rel(item["path"]), str(item["target"])
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
    dest = root / clean_rel(rel)
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

