"""Safe, fast unpacking of source tarballs.

A parallel decompressor feeds a Python gate that checks every member header; only
checked bytes reach GNU tar, which does the writing into a staging dir that is renamed
into place when complete. Damaged input (corrupt or truncated) is reported as damaged,
hostile input (members that would write outside, devices, ...) is refused; both name
the file. Memory stays bounded whatever the archive expands to, and the total size of
the files it holds is capped (`max_bytes`, RK3576_MAX_UNPACK).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rk3576_build.config.workspace import unpack_cap
from rk3576_build.core.errors import UserError
from rk3576_build.core.files import read_json_object, write_json
from rk3576_build.core.progress import make_progress
from rk3576_build.core.text import human_size
from rk3576_build.sources.decompress import Damaged, Stream, grow_pipe
from rk3576_build.sources.tar_gate import BLOCK, Gate, Refused, TooBig, parse_header, pump

MAX_UNPACK = 64 << 30         # default cap on the unpacked size (RK3576_MAX_UNPACK overrides it)
XATTR = "user.rk3576-build.unpack"
TAR_FLAGS = ["--no-same-owner", "--preserve-permissions", "--delay-directory-restore",
             "--no-overwrite-dir", "--warning=no-unknown-keyword"]


@dataclass(frozen=True)
class UnpackResult:
    """A complete unpack: where, how many members and how many bytes of file data."""

    dest: Path
    files: int
    bytes: int


class DamagedArchive(UserError):
    """The archive is corrupt or truncated (not hostile): "the download is damaged: <file>: ..."."""

    def __init__(self, archive: Path, detail: str):
        super().__init__(f"the download is damaged: {archive}: {detail}")
        self.archive = archive


def unpack(archive: Path, dest: Path, *, strip_components: int = 0,
           progress: bool | None = None, max_bytes: int | None = None) -> UnpackResult:
    """Unpack `archive` into `dest` safely and atomically.

    `dest` is replaced only if an earlier unpack() made it (or it is an empty dir).
    `max_bytes` caps the total size of the files (default RK3576_MAX_UNPACK, else 64 GiB).
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise UserError(f"cannot unpack {archive}: no such file")
    if strip_components < 0:
        raise UserError(f"strip_components must be 0 or more, got {strip_components}")
    if not shutil.which("tar"):
        raise UserError("GNU tar is needed to unpack archives: install the `tar` package")
    cap = max_unpack_bytes() if max_bytes is None else max_bytes
    marker = _marker(dest)
    record = read_json_object(marker)
    if _exists(dest) and not _owned(dest, record) and not _empty_dir(dest):
        raise UserError(f"refusing to replace {dest}: rk3576-build's unpack did not make it, so it "
                        f"may hold your own files; move it elsewhere or delete it, then run again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging, old = _staging(dest), _old(dest)
    # Leftovers of an interrupted run (our own hidden names) are never trusted: start over.
    for leftover in (staging, old):
        _remove(leftover)
    staging.mkdir()
    try:
        files, size = _extract(archive, staging, strip_components, progress, cap)
    except BaseException:
        _remove(staging)
        raise
    ident = _tag(staging)
    previous = _identity(dest) if _exists(dest) else {}
    # While the two renames run, the marker vouches for the old tree and the new one.
    _write_marker(marker, {**ident, "previous": previous, "complete": False})
    if previous:
        os.rename(dest, old)
    os.rename(staging, dest)
    _write_marker(marker, {**ident, "complete": True, "archive": str(archive), "files": files,
                           "bytes": size})
    _remove(old)
    return UnpackResult(dest=dest, files=files, bytes=size)


def is_unpacked(dest: Path) -> bool:
    """True only for a complete unpack done by unpack()."""
    dest = Path(dest)
    record = read_json_object(_marker(dest))
    if not _real_dir(dest) or record is None or not record.get("complete", True):
        return False
    return _matches(dest, record)


def tree_identity(dest: Path) -> str:
    """Which unpack made `dest` (a fresh value for every unpack); "" when there is no tree."""
    if not _real_dir(Path(dest)):
        return ""
    return "".join(f"{key}:{value}" for key, value in _identity(Path(dest)).items())


def max_unpack_bytes() -> int:
    """The cap on an archive's unpacked size: RK3576_MAX_UNPACK (e.g. 128G, 500M), else 64 GiB."""
    return unpack_cap(MAX_UNPACK)


def _staging(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.partial"


def _old(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.old"


def _marker(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.unpacked"


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def _write_marker(marker: Path, data: dict) -> None:
    write_json(marker, data, indent=None)


def _real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _tag(tree: Path) -> dict:
    """Mark `tree` as made by unpack(): an extended attribute holding a fresh token
    (it stays with the dir, unlike an inode number, which a new dir may reuse), else the inode."""
    token = secrets.token_hex(8)
    try:
        os.setxattr(tree, XATTR, token.encode())
        return {"token": token}
    except OSError:          # a file system without user xattrs
        return {"ino": tree.stat().st_ino}


def _identity(tree: Path) -> dict:
    try:
        return {"token": os.getxattr(tree, XATTR, follow_symlinks=False).decode()}
    except OSError:
        return {"ino": tree.lstat().st_ino}


def _matches(tree: Path, ident: dict) -> bool:
    if "token" in ident:
        return _identity(tree).get("token") == ident["token"]
    if "ino" in ident:
        return tree.stat().st_ino == ident["ino"]
    return True              # a marker from before identities were recorded


def _owned(dest: Path, record: dict | None) -> bool:
    """Did unpack() make `dest`? Its token says so; else its marker's record of it."""
    if not _real_dir(dest):
        return False
    if "token" in _identity(dest):
        return True
    return record is not None and (_matches(dest, record) or _matches(dest, record.get("previous") or {"ino": -1}))


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        # Unpacked trees may hold read-only dirs: make them writable to delete them.
        for root, dirs, _files in os.walk(path):
            for name in dirs:
                full = os.path.join(root, name)
                if not os.path.islink(full):
                    os.chmod(full, 0o755)
        shutil.rmtree(path)


def detect_format(archive: Path) -> str:
    """'gz', 'bz2', 'xz' or 'tar', by magic bytes."""
    with open(archive, "rb") as handle:
        head = handle.read(BLOCK)
    if head.startswith(b"\x1f\x8b"):
        return "gz"
    if head.startswith(b"BZh"):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if len(head) == BLOCK and (head[257:262] == b"ustar" or _checksum_ok(head)):
        return "tar"
    raise UserError(f"cannot unpack {archive}: not a tar archive (.tar, .tar.gz, .tar.bz2 or .tar.xz)")


def _checksum_ok(block: bytes) -> bool:
    try:
        parse_header(block)
    except Damaged:
        return False
    return True


def _extract(archive: Path, staging: Path, strip: int, progress: bool | None,
             cap: int) -> tuple[int, int]:
    """Pipe the checked archive into `tar -x` in `staging`; returns (members, data bytes)."""
    kind = detect_format(archive)
    stream = Stream(archive, kind)
    tar_errors = tempfile.TemporaryFile()
    command = ["tar", "-x", "-f", "-", "-C", str(staging), *TAR_FLAGS]
    if strip:
        command.append(f"--strip-components={strip}")
    tar = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=tar_errors, bufsize=0)
    tar_in = tar.stdin
    assert tar_in is not None  # stdin=PIPE
    grow_pipe(tar_in.fileno())
    gate = Gate(strip, cap)
    refused = damaged = too_big = None
    tar_quit = False
    try:
        with make_progress(os.path.getsize(archive), f"unpack {archive.name}",
                           enabled=progress) as bar:
            pump(stream, tar_in.fileno(), gate, bar)
    except Refused as exc:
        refused = exc
    except Damaged as exc:
        damaged = str(exc)
    except TooBig as exc:
        too_big = str(exc)
    except BrokenPipeError:
        tar_quit = True      # tar stopped reading: its exit status below says why
    finally:
        ok = not (refused or damaged or too_big or tar_quit)
        if not ok:
            tar.kill()
        try:
            tar_in.close()
        except BrokenPipeError:
            pass
        code = tar.wait()
        # On damage, let the decompressor finish: its own error is the better explanation.
        failed = stream.close(drain=ok or damaged is not None)
        tar_errors.seek(0)
        detail = tar_errors.read().decode(errors="replace").strip()
        tar_errors.close()
    if refused is not None:
        raise UserError(f"refusing to unpack {archive}: member {refused.member!r}: {refused.reason}; "
                        f"nothing was written outside the staging dir") from None
    if too_big is not None:
        raise UserError(f"refusing to unpack {archive}: {too_big}, over the cap of {human_size(cap)} "
                        f"on unpacked size; if the archive really is that big, raise the cap with "
                        f"RK3576_MAX_UNPACK (e.g. RK3576_MAX_UNPACK={human_size(2 * cap).replace(' ', '')})")
    problem = failed or damaged
    if problem:
        raise DamagedArchive(archive, problem)
    if code != 0 or tar_quit:
        raise UserError(f"cannot unpack {archive}: tar failed (exit {code}): {detail}")
    return gate.members, gate.data_bytes
