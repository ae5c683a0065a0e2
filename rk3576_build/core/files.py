"""Files written so a crash never leaves half of one, read so a damaged one reads as missing, hashed in chunks."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

CHUNK = 1 << 20  # read size for hashing and copying: images are gigabytes, memory is not


def sha256_of(path: Path, chunk: int = CHUNK) -> hashlib._Hash:
    """A sha256 hasher fed a file's bytes, read in chunks (it can go on, e.g. with a resumed download's rest)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest


def sha256_file(path: Path, chunk: int = CHUNK) -> str:
    """Hex sha256 of a file, read in chunks."""
    return sha256_of(path, chunk).hexdigest()


def json_sha256(data: object) -> str:
    """sha256 of `data` as JSON with sorted keys: one digest for equal data, whatever its key order."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def atomic_write(path: Path, data: str | bytes, *, mode: int | None = None, fsync: bool = False) -> Path:
    """Write `path` through a temporary file beside it, renamed into place: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if mode is not None:
            os.fchmod(fd, mode)  # mkstemp makes it 0600
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, data: object, *, indent: int | None = 1, mode: int | None = None,
               fsync: bool = False) -> Path:
    """A JSON document (keys sorted, so equal data gives equal bytes), written atomically."""
    text = json.dumps(data, indent=indent, sort_keys=True, default=str) + "\n"
    return atomic_write(path, text, mode=mode, fsync=fsync)


def read_json_object(path: Path) -> dict | None:
    """A JSON file's object, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
