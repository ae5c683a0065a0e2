"""Safe, fast unpacking of source tarballs.

A parallel decompressor feeds a Python gate that checks every member header; only
checked bytes reach GNU tar, which does the writing into a staging dir that is renamed
into place when complete. Damaged input (corrupt or truncated) is reported as damaged,
hostile input (members that would write outside, devices, ...) is refused; both name
the file. Memory stays bounded whatever the archive expands to, and the total size of
the files it holds is capped (`max_bytes`, RK3576_MAX_UNPACK).
"""

from __future__ import annotations

import bz2
import fcntl
import json
import lzma
import os
import re
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from rk3576_build.core.errors import UserError
from rk3576_build.core.progress import make_progress

BLOCK = 512
CHUNK = 1 << 20
SPLICE_MIN = 256 << 10        # member data beyond this moves to tar by splice(2), not via Python
BATCH = 512 << 10             # accepted bytes are written to tar in pieces of about this size
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
META_LIMIT = 1 << 20          # longest GNU long-name / pax header we accept
MAX_UNPACK = 64 << 30         # default cap on the unpacked size (RK3576_MAX_UNPACK overrides it)
FILE_TYPES = {tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE}
LINK_TYPES = {tarfile.LNKTYPE, tarfile.SYMTYPE}
SPECIAL = {tarfile.CHRTYPE: "device node", tarfile.BLKTYPE: "device node", tarfile.FIFOTYPE: "fifo"}
ALLOWED_TYPES = FILE_TYPES | LINK_TYPES | {tarfile.DIRTYPE}
META_TYPES = {tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE}
ZERO_BLOCK = bytes(BLOCK)
XATTR = "user.rk3576-build.unpack"
# The fastest decompressors first (igzip: ISA-L's inflate, about 3x zlib's; then the parallel
# ones), then the single-threaded ones; Python's modules last.
TOOLS = {
    "gz": (["igzip", "-dc"], ["pigz", "-dc"], ["gzip", "-dc"]),
    "bz2": (["lbzip2", "-dc"], ["pbzip2", "-dc"], ["bzip2", "-dc"]),
    "xz": (["xz", "-dc", "-T0"],),
}
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


class _Refused(Exception):
    """A member the gate will not let through: (member name, reason)."""

    def __init__(self, member: str, reason: str):
        super().__init__(member, reason)
        self.member, self.reason = member, reason


class _Damaged(Exception):
    """Corrupt or truncated input, found before the archive's name is at hand."""


class _TooBig(Exception):
    """The archive's files add up to more than the cap."""


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
    value = os.environ.get("RK3576_MAX_UNPACK", "").strip()
    if not value:
        return MAX_UNPACK
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", value, re.IGNORECASE)
    if not match:
        raise UserError(f"RK3576_MAX_UNPACK must be a size such as 64G, 500M or 1048576, got {value!r}")
    scale = 1 << (10 * " KMGT".index(match.group(2).upper() or " "))
    return int(float(match.group(1)) * scale)


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


def read_json_object(path: Path) -> dict | None:
    """A JSON file's object, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_marker(marker: Path, data: dict) -> None:
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(data) + "\n")
    os.replace(tmp, marker)


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


# --- reading the decompressed stream ------------------------------------------------------

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
        _parse_header(block)
    except _Damaged:
        return False
    return True


class _Stream:
    """Decompressed bytes of the archive, with the compressed read position for progress.

    Long member data moves to GNU tar with splice(2) when the bytes come from a
    decompressor's pipe or the plain .tar file: no copy through Python.
    """

    def __init__(self, archive: Path, kind: str):
        self.archive = archive
        self._fd = os.open(archive, os.O_RDONLY)
        self._src = self._fd           # fd the decompressed bytes come from (None: Python)
        self._proc = None
        self._errors = None
        self._inflater = None
        command = _tool(kind)
        if command:
            self._errors = tempfile.TemporaryFile()
            # The tool shares our file offset, so lseek() tells how far it has read.
            self._proc = subprocess.Popen(command, stdin=self._fd, stdout=subprocess.PIPE,
                                          stderr=self._errors, bufsize=0)
            self._src = self._proc.stdout.fileno()
            _grow_pipe(self._src)
        elif kind != "tar":
            self._src = None
            self._inflater = _Inflater(kind, self._fd)

    def position(self) -> int:
        return os.lseek(self._fd, 0, os.SEEK_CUR)

    def read_some(self, size: int) -> bytes:
        """Up to `size` bytes (at least one), b"" only at the end of the stream."""
        if self._src is not None:
            return os.read(self._src, size)
        return self._inflater.read(size)

    def copy_to(self, sink: int, size: int) -> None:
        """Move exactly `size` bytes to the fd `sink`."""
        while size:
            if self._src is not None:
                moved = os.splice(self._src, sink, min(size, CHUNK))
            else:
                chunk = self._inflater.read(min(size, CHUNK))
                moved = len(chunk)
                _write_fd(sink, chunk)
            if not moved:
                raise _Damaged("the archive is truncated (it ends inside a member's data)")
            size -= moved

    def close(self, drain: bool) -> str | None:
        """Stop the decompressor (`drain`: read it to its end first); its failure, if it failed."""
        try:
            if self._proc is None:
                return None
            if drain:
                while os.read(self._src, CHUNK):
                    pass
            elif self._proc.poll() is None:
                self._proc.kill()
            self._proc.stdout.close()
            code = self._proc.wait()
            if code > 0:
                self._errors.seek(0)
                detail = self._errors.read().decode(errors="replace").strip()
                detail = detail.replace(" (null)", "")     # igzip's name for its stdin
                return f"{self._proc.args[0]} failed (exit {code}): {detail or 'corrupt compressed data'}"
            return None
        finally:
            if self._errors is not None:
                self._errors.close()
            os.close(self._fd)


class _Inflater:
    """Python's zlib/bz2/lzma, at most `size` bytes out per call: a bomb stays small in memory."""

    def __init__(self, kind: str, fd: int):
        self._kind, self._fd = kind, fd
        self._new(b"")

    def _new(self, data: bytes) -> None:
        if self._kind == "gz":
            self._decomp = zlib.decompressobj(wbits=31)
        elif self._kind == "bz2":
            self._decomp = bz2.BZ2Decompressor()
        else:
            self._decomp = lzma.LZMADecompressor()
        self._input = data

    def read(self, size: int) -> bytes:
        try:
            while True:
                if self._decomp.eof:
                    # Concatenated streams (pigz -i, pbzip2): continue with a fresh decompressor.
                    rest = self._decomp.unused_data or os.read(self._fd, CHUNK)
                    if not rest:
                        return b""
                    self._new(rest)
                if self._kind == "gz":
                    data = self._input or os.read(self._fd, CHUNK)
                    if not data:
                        raise _Damaged("the compressed data is truncated")
                    out = self._decomp.decompress(data, size)
                    self._input = self._decomp.unconsumed_tail
                else:
                    data = b""
                    if self._decomp.needs_input:
                        data = self._input or os.read(self._fd, CHUNK)
                        if not data:
                            raise _Damaged("the compressed data is truncated")
                        self._input = b""
                    out = self._decomp.decompress(data, size)
                if out:
                    return out
        except (zlib.error, OSError, lzma.LZMAError, EOFError) as exc:
            raise _Damaged(f"corrupt compressed data ({exc})") from None


def _grow_pipe(fd: int) -> None:
    """Bigger pipe buffers mean fewer context switches between the three processes."""
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, CHUNK)
    except OSError:
        pass    # over the user's pipe-size limit: the default still works


def _write_fd(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _tool(kind: str) -> list[str] | None:
    """The first installed decompressor command for `kind` (None: use Python's module)."""
    for command in TOOLS.get(kind, ()):
        if shutil.which(command[0]):
            return command
    return None


# --- the gate: check each member header before GNU tar sees it ----------------------------

def _extract(archive: Path, staging: Path, strip: int, progress: bool | None,
             cap: int) -> tuple[int, int]:
    """Pipe the checked archive into `tar -x` in `staging`; returns (members, data bytes)."""
    kind = detect_format(archive)
    stream = _Stream(archive, kind)
    tar_errors = tempfile.TemporaryFile()
    command = ["tar", "-x", "-f", "-", "-C", str(staging), *TAR_FLAGS]
    if strip:
        command.append(f"--strip-components={strip}")
    tar = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=tar_errors, bufsize=0)
    _grow_pipe(tar.stdin.fileno())
    gate = _Gate(strip, cap)
    refused = damaged = too_big = None
    tar_quit = False
    try:
        with make_progress(os.path.getsize(archive), f"unpack {archive.name}",
                           enabled=progress) as bar:
            _pump(stream, tar.stdin.fileno(), gate, bar)
    except _Refused as exc:
        refused = exc
    except _Damaged as exc:
        damaged = str(exc)
    except _TooBig as exc:
        too_big = str(exc)
    except BrokenPipeError:
        tar_quit = True      # tar stopped reading: its exit status below says why
    finally:
        ok = not (refused or damaged or too_big or tar_quit)
        if not ok:
            tar.kill()
        try:
            tar.stdin.close()
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
    if failed or damaged:
        raise DamagedArchive(archive, failed or damaged)
    if code != 0 or tar_quit:
        raise UserError(f"cannot unpack {archive}: tar failed (exit {code}): {detail}")
    return gate.members, gate.data_bytes


def human_size(count: float) -> str:
    """`count` bytes for a message: 100 B, 195.3 KiB, 3.0 MiB, 64.0 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} B" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def _pump(stream: _Stream, sink: int, gate: "_Gate", bar) -> None:
    """Forward each member's header blocks once the gate accepts them, then its data.

    The decompressed stream is read in large chunks and forwarded as it is, in large
    writes, up to the last accepted member: a member costs no system call of its own.
    Long member data (past what is buffered) is spliced from the decompressor to tar.
    """
    buf = b""
    pos = 0                    # next unread byte of buf
    anchor = 0                 # bytes before this one are accepted ...
    written = 0                # ... and these are already written
    last = 0

    def fill(need: int) -> bool:
        """Make buf[pos:] hold at least `need` bytes; False at the end of the stream."""
        nonlocal buf, pos, anchor, written, last
        have = len(buf) - pos
        if written < anchor:
            _write_fd(sink, memoryview(buf)[written:anchor])
        parts = [buf[anchor:]] if anchor < len(buf) else []
        while have < need:
            data = stream.read_some(max(CHUNK, need - have))
            if not data:
                break
            parts.append(data)
            have += len(data)
        buf = parts[0] if len(parts) == 1 else b"".join(parts)
        pos, anchor, written = pos - anchor, 0, 0
        position = stream.position()
        bar.update(position - last)
        last = position
        return have >= need

    while True:
        anchor = pos
        if len(buf) - pos < BLOCK and not fill(BLOCK):
            if len(buf) - pos:
                raise _Damaged("the archive is truncated (it ends inside a header)")
            break              # no end-of-archive marker: GNU tar accepts that too
        block = buf[pos:pos + BLOCK]
        if block == ZERO_BLOCK:
            break              # end-of-archive marker: GNU tar stops here, so do we
        data = gate.header(block)
        while data < 0:        # extension headers (long names, pax) before the member's own
            extra = -data
            if len(buf) - pos < 2 * BLOCK + extra and not fill(2 * BLOCK + extra):
                raise _Damaged("the archive is truncated (it ends inside an extension header)")
            gate.meta(buf[pos + BLOCK:pos + BLOCK + extra])
            pos += BLOCK + extra
            data = gate.header(buf[pos:pos + BLOCK])
        pos += BLOCK + data
        if pos <= len(buf):
            if pos - written >= BATCH:      # small writes keep tar busy while we parse on
                _write_fd(sink, memoryview(buf)[written:pos])
                written = pos
            continue
        rest, pos = pos - len(buf), len(buf)
        anchor = pos
        if rest >= SPLICE_MIN:
            _write_fd(sink, memoryview(buf)[written:pos])
            written = pos
            stream.copy_to(sink, rest)
        else:
            if not fill(rest):
                raise _Damaged("the archive is truncated (it ends inside a member's data)")
            pos += rest
    anchor = pos
    _write_fd(sink, memoryview(buf)[written:anchor])
    _write_fd(sink, bytes(2 * BLOCK))
    bar.update(stream.position() - last)


def _round(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _strip(name: str, count: int) -> str | None:
    """`name` without its first `count` components, as GNU tar's --strip-components does."""
    if not count:
        return name
    rest = name.lstrip("/")
    for _ in range(count):
        head, sep, rest = rest.partition("/")
        if not sep:
            return None
        rest = rest.lstrip("/")
    return rest


def _parts(name: str) -> list[str]:
    parts = name.split("/")
    if "" in parts or "." in parts:
        return [part for part in parts if part not in ("", ".")]
    return parts


class _Header(NamedTuple):
    name: str
    linkname: str
    size: int
    type: bytes


def _number(field: bytes) -> int:
    """A numeric header field: octal text, or GNU's base-256 when the top bit is set."""
    if field[0] in (0o200, 0o377):
        value = int.from_bytes(field[1:], "big")
        return value - (256 ** (len(field) - 1)) if field[0] == 0o377 else value
    text = field.split(b"\0", 1)[0].strip(b" ")
    if text.isdigit():
        try:
            return int(text, 8)
        except ValueError:
            pass
    elif not text:
        return 0
    raise _Damaged(f"corrupt tar header (bad number {text[:20]!r})")


def _byte_sum(block: bytes) -> int:
    """sum(block) for a 512-byte block, about twice as fast, from two sums computed in C.

    adler32 gives the sum modulo 65521, the block read as one integer gives it modulo 255
    (256 = 1 mod 255); a sum of 512 bytes is at most 130560, and of its two candidates
    modulo 65521 only one has the right remainder modulo 255 (65521 = 241 mod 255).
    """
    low = ((zlib.adler32(block) & 0xFFFF) - 1) % 65521
    return low if low % 255 == int.from_bytes(block, "little") % 255 else low + 65521


def _parse_header(block: bytes) -> _Header:
    """The fields the gate needs from one 512-byte header, read the way GNU tar reads them."""
    stored = _number(block[148:156])
    unsigned = _byte_sum(block) - sum(block[148:156]) + 8 * 32
    if stored != unsigned:   # some old tars summed signed bytes
        high = sum(1 for byte in block[:148] + block[156:] if byte > 127)
        if stored != unsigned - 256 * high:
            raise _Damaged("corrupt tar header (bad checksum)")
    name = block[:100].split(b"\0", 1)[0]
    if block[257:265] == b"ustar\x0000":
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    size = _number(block[124:136])
    if size < 0:
        raise _Damaged("corrupt tar header (negative size)")
    link = block[157:257].split(b"\0", 1)[0].decode("utf-8", "surrogateescape") if block[157] else ""
    return _Header(name.decode("utf-8", "surrogateescape"), link, size, block[156:157])


class _Gate:
    """Decides, header by header, whether a member is safe for GNU tar to write."""

    def __init__(self, strip: int, cap: int = MAX_UNPACK):
        self.strip = strip
        self.cap = cap
        self.members = 0
        self.data_bytes = 0
        self._links: dict[str, str] = {}     # symlinks so far: path -> target
        self._dirs: set[str] = set()         # paths used as directories
        self._walked: set[str] = set()       # paths a symlink target walks through
        self._long: dict[str, str] = {}      # 'L'/'K' GNU long name / link name
        self._pax: dict[str, str] = {}
        self._meta_kind = b""

    # Headers -----------------------------------------------------------------------------

    def header(self, block: bytes) -> int:
        """Take one header block: minus the size of the extension data to read next, or, for a
        member (checked and accepted), how many data bytes follow its header."""
        info = _parse_header(block)
        if info.type in META_TYPES:
            if not 0 < info.size <= META_LIMIT:
                raise _Refused(info.name, f"extension header of {info.size} bytes")
            self._meta_kind = info.type
            return -_round(info.size)
        data = self._check(info)
        if self._pax or self._long:
            self._long, self._pax = {}, {}
        return data

    def meta(self, data: bytes) -> None:
        """Take in the data of a GNU long-name or pax extension header."""
        kind, self._meta_kind = self._meta_kind, b""
        if kind in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            key = "name" if kind == tarfile.GNUTYPE_LONGNAME else "link"
            if key in self._long:
                raise _Refused(self._decode(data), "repeated GNU long-name header")
            self._long[key] = self._decode(data.split(b"\0", 1)[0])
            return
        records = _pax_records(data)
        if records is None:
            raise _Damaged("corrupt tar archive (malformed pax header)")
        if kind == tarfile.XGLTYPE:
            for key in records:
                if key in ("path", "linkpath", "size") or key.startswith("GNU.sparse"):
                    raise _Refused(records[key], f"global pax header sets {key!r}")
            return
        if self._pax:
            raise _Refused(records.get("path", "?"), "repeated pax header")
        self._pax = records

    # Checks ------------------------------------------------------------------------------

    def _check(self, info: _Header) -> int:
        name, link, size, kind = info
        if self._pax or self._long:
            name = self._pick("name", "path", name)
            link = self._pick("link", "linkpath", link)
            if "size" in self._pax:
                try:
                    size = int(self._pax["size"])
                except ValueError:
                    raise _Refused(name, "malformed pax size") from None
            if any(key.startswith("GNU.sparse") for key in self._pax):
                raise _Refused(name, "sparse members are not supported (repack without --sparse)")
        if kind == tarfile.GNUTYPE_SPARSE:
            raise _Refused(name, "sparse members are not supported (repack without --sparse)")
        if kind in SPECIAL:
            raise _Refused(name, f"{SPECIAL[kind]} (only files, directories and links are allowed)")
        if kind not in ALLOWED_TYPES:
            raise _Refused(name, f"unsupported member type {kind!r}")
        if kind not in FILE_TYPES and size:
            # GNU tar and this gate must agree where the next header starts.
            raise _Refused(name, "a link or directory carrying data")
        if kind in FILE_TYPES and name.endswith("/"):
            if size:
                raise _Refused(name, "a file named like a directory carrying data")
            kind = tarfile.DIRTYPE
        path = self._checked_path(name, name.rstrip("/") or name if kind == tarfile.DIRTYPE else name)
        if path is None:
            return _round(size)          # GNU tar skips it too (--strip-components)
        parts = _parts(path)
        key = "/".join(parts)
        if not parts and kind != tarfile.DIRTYPE:
            raise _Refused(name, "a non-directory with an empty path")
        self._no_symlink_on_way(name, parts)
        if kind == tarfile.SYMTYPE:
            self._add_symlink(name, parts, link)
        elif kind == tarfile.LNKTYPE:
            target = self._checked_path(name, link, what="hard link target")
            if target is None:
                raise _Refused(name, f"hard link target {link!r} is removed by strip_components")
            target_parts = _parts(target)
            self._no_symlink_on_way(name, target_parts, what="hard link target")
            linked = self._links.get("/".join(target_parts))
            if linked is not None:
                self._add_symlink(name, parts, linked)   # a hard link to a symlink is a symlink
        elif kind == tarfile.DIRTYPE:
            self._dirs.add(key)
        if len(parts) > 1 and key.rpartition("/")[0] not in self._dirs:
            for depth in range(len(parts) - 1, 0, -1):   # ancestors, deepest first
                prefix = "/".join(parts[:depth])
                if prefix in self._dirs:
                    break                                  # and so are all above it
                self._dirs.add(prefix)
        self.members += 1
        if kind in FILE_TYPES:
            self.data_bytes += size
            if self.data_bytes > self.cap:
                raise _TooBig(f"with member {name!r} its files come to {human_size(self.data_bytes)}")
        return _round(size)

    def _pick(self, long_key: str, pax_key: str, header_value: str) -> str:
        """The name GNU tar will use: pax, else GNU long name, else the header's."""
        pax, long = self._pax.get(pax_key), self._long.get(long_key)
        if pax is not None and long is not None and pax != long:
            raise _Refused(pax, f"pax and GNU long-name headers disagree ({long!r})")
        value = pax if pax is not None else long if long is not None else header_value
        if "\0" in value:
            raise _Refused(value, "a NUL byte in a name")
        return value

    def _checked_path(self, member: str, name: str, what: str = "path") -> str | None:
        """`name` after strip_components; refuses absolute names and `..`."""
        if name.startswith("/"):
            raise _Refused(member, f"absolute {what} {name!r}")
        if ".." in name and ".." in name.split("/"):
            raise _Refused(member, f"{what} {name!r} contains '..'")
        return _strip(name, self.strip)

    def _no_symlink_on_way(self, member: str, parts: list[str], what: str = "path") -> None:
        if not self._links:
            return
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            if prefix in self._links:
                raise _Refused(member, f"{what} goes through the symlink {prefix!r} "
                                       f"(-> {self._links[prefix]!r}) from earlier in the archive")

    def _add_symlink(self, member: str, parts: list[str], target: str) -> None:
        key = "/".join(parts)
        if key in self._dirs or key in self._walked:
            raise _Refused(member, "a symlink replacing a directory used earlier in the archive")
        if self._escapes(parts[:-1], target):
            raise _Refused(member, f"symlink target {target!r} resolves outside the destination")
        self._links[key] = target

    def _escapes(self, base: list[str], target: str) -> bool:
        """Resolve `target` from dir `base` through the symlinks seen so far."""
        if target.startswith("/"):
            return True
        here = list(base)
        todo = _parts(target)
        hops = 0
        while todo:
            part = todo.pop(0)
            if part == "..":
                if not here:
                    return True
                here.pop()
                continue
            here.append(part)
            key = "/".join(here)
            if todo:
                # A later symlink here would change where this one points.
                self._walked.add(key)
            link = self._links.get(key)
            if link is not None:
                hops += 1
                if hops > 40 or link.startswith("/"):
                    return True
                here.pop()
                todo = _parts(link) + todo
        return False

    @staticmethod
    def _decode(data: bytes) -> str:
        return data.decode("utf-8", "surrogateescape")


def _pax_records(data: bytes) -> dict[str, str] | None:
    """Parse pax extended header records (`<len> <key>=<value>\\n`)."""
    records: dict[str, str] = {}
    pos = 0
    data = data.rstrip(b"\0")
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0 or not data[pos:space].isdigit():
            return None
        end = pos + int(data[pos:space])
        record = data[space + 1:end]
        if end > len(data) or not record.endswith(b"\n") or b"=" not in record:
            return None
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos = end
    return records
