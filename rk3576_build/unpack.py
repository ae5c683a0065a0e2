"""Safe, fast unpacking of source tarballs.

A parallel decompressor feeds a Python gate that checks every member header; only
checked bytes reach GNU tar, which does the writing into a staging dir that is renamed
into place when complete.
"""

from __future__ import annotations

import bz2
import fcntl
import json
import lzma
import os
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .progress import make_progress

BLOCK = 512
CHUNK = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
META_LIMIT = 1 << 20          # longest GNU long-name / pax header we accept
FILE_TYPES = {tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE}
LINK_TYPES = {tarfile.LNKTYPE, tarfile.SYMTYPE}
SPECIAL = {tarfile.CHRTYPE: "device node", tarfile.BLKTYPE: "device node", tarfile.FIFOTYPE: "fifo"}
# Parallel decompressors first, then the single-threaded ones; Python's modules last.
TOOLS = {
    "gz": (["pigz", "-dc"], ["gzip", "-dc"]),
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


def unpack(archive: Path, dest: Path, *, strip_components: int = 0,
           progress: bool | None = None) -> UnpackResult:
    """Unpack `archive` into `dest` (replacing it) safely and atomically."""
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise UserError(f"cannot unpack {archive}: no such file")
    if strip_components < 0:
        raise UserError(f"strip_components must be 0 or more, got {strip_components}")
    if not shutil.which("tar"):
        raise UserError("GNU tar is needed to unpack archives: install the `tar` package")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging, old, marker = _staging(dest), _old(dest), _marker(dest)
    # Leftovers of an interrupted run are never trusted: start over.
    for leftover in (staging, old):
        _remove(leftover)
    staging.mkdir()
    try:
        files, size = _extract(archive, staging, strip_components, progress)
    except BaseException:
        _remove(staging)
        raise
    marker.unlink(missing_ok=True)
    if dest.exists() or dest.is_symlink():
        os.rename(dest, old)
    os.rename(staging, dest)
    marker.write_text(json.dumps({"archive": str(archive), "files": files, "bytes": size}) + "\n")
    _remove(old)
    return UnpackResult(dest=dest, files=files, bytes=size)


def is_unpacked(dest: Path) -> bool:
    """True only for a complete unpack done by unpack()."""
    dest = Path(dest)
    return dest.is_dir() and _marker(dest).is_file()


def _staging(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.partial"


def _old(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.old"


def _marker(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.unpacked"


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
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.TarError:
        return False
    return True


class _Stream:
    """Decompressed bytes of the archive, with the compressed read position for progress.

    Member data moves to GNU tar with splice(2) when the bytes come from a decompressor's
    pipe or the plain .tar file: no copy through Python, which matters on a 2-core host.
    """

    def __init__(self, archive: Path, kind: str):
        self.archive = archive
        self._fd = os.open(archive, os.O_RDONLY)
        self._src = self._fd           # fd the decompressed bytes come from (None: Python)
        self._proc = None
        self._errors = None
        self._decomp = None
        self._buf = bytearray()
        self._eof = False
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
            self._decomp = _python_decompressor(kind)
            self._kind = kind

    def position(self) -> int:
        return os.lseek(self._fd, 0, os.SEEK_CUR)

    def read(self, size: int) -> bytes:
        """Exactly `size` bytes, fewer only at the end of the stream."""
        if self._src is not None:
            return _read_fd(self._src, size)
        while len(self._buf) < size and not self._eof:
            self._fill()
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def copy_to(self, sink: int, size: int) -> None:
        """Move exactly `size` bytes to the fd `sink`."""
        while size:
            if self._src is not None:
                moved = os.splice(self._src, sink, min(size, CHUNK))
            else:
                chunk = self.read(min(size, CHUNK))
                moved = len(chunk)
                _write_fd(sink, chunk)
            if not moved:
                raise UserError(f"cannot unpack {self.archive}: the archive is truncated")
            size -= moved

    def _fill(self) -> None:
        raw = os.read(self._fd, CHUNK)
        while True:
            if not raw:
                if not self._decomp.eof:
                    raise UserError(f"cannot unpack {self.archive}: the compressed data is truncated")
                self._eof = True
                return
            try:
                self._buf += self._decomp.decompress(raw)
            except (zlib.error, OSError, lzma.LZMAError, EOFError) as exc:
                raise UserError(f"cannot unpack {self.archive}: corrupt compressed data ({exc})") from None
            if not self._decomp.eof:
                return
            # Concatenated streams (pigz -i, pbzip2): continue with a fresh decompressor.
            raw = self._decomp.unused_data
            self._decomp = _python_decompressor(self._kind)
            if not raw:
                raw = os.read(self._fd, CHUNK)
                if not raw:
                    self._eof = True
                    return

    def close(self, check: bool) -> None:
        """Stop the decompressor; with `check`, a failed one raises UserError."""
        try:
            if self._proc is not None:
                if check:
                    while os.read(self._src, CHUNK):
                        pass
                else:
                    self._proc.kill()
                self._proc.stdout.close()
                code = self._proc.wait()
                if check and code != 0:
                    self._errors.seek(0)
                    detail = self._errors.read().decode(errors="replace").strip()
                    raise UserError(f"cannot unpack {self.archive}: {self._proc.args[0]} failed "
                                    f"(exit {code}): {detail or 'corrupt compressed data'}")
        finally:
            if self._errors is not None:
                self._errors.close()
            os.close(self._fd)


def _grow_pipe(fd: int) -> None:
    """Bigger pipe buffers mean fewer context switches between the three processes."""
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, CHUNK)
    except OSError:
        pass    # over the user's pipe-size limit: the default still works


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_fd(fd: int, size: int) -> bytes:
    parts, want = [], size
    while want:
        data = os.read(fd, min(want, CHUNK))
        if not data:
            break
        parts.append(data)
        want -= len(data)
    return b"".join(parts)


def _tool(kind: str) -> list[str] | None:
    """The first installed decompressor command for `kind` (None: use Python's module)."""
    for command in TOOLS.get(kind, ()):
        if shutil.which(command[0]):
            return command
    return None


def _python_decompressor(kind: str):
    if kind == "gz":
        return zlib.decompressobj(wbits=31)
    if kind == "bz2":
        return bz2.BZ2Decompressor()
    return lzma.LZMADecompressor()


# --- the gate: check each member header before GNU tar sees it ----------------------------

def _extract(archive: Path, staging: Path, strip: int, progress: bool | None) -> tuple[int, int]:
    """Pipe the checked archive into `tar -x` in `staging`; returns (members, data bytes)."""
    kind = detect_format(archive)
    stream = _Stream(archive, kind)
    tar_errors = tempfile.TemporaryFile()
    command = ["tar", "-x", "-f", "-", "-C", str(staging), *TAR_FLAGS]
    if strip:
        command.append(f"--strip-components={strip}")
    tar = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=tar_errors, bufsize=0)
    _grow_pipe(tar.stdin.fileno())
    gate = _Gate(strip)
    ok = tar_quit = False
    try:
        with make_progress(os.path.getsize(archive), f"unpack {archive.name}",
                           enabled=progress) as bar:
            _pump(stream, tar.stdin.fileno(), gate, bar)
            tar.stdin.close()
        ok = True
    except _Refused as exc:
        raise UserError(f"refusing to unpack {archive}: member {exc.member!r}: {exc.reason}; "
                        f"nothing was written outside the staging dir") from None
    except BrokenPipeError:
        tar_quit = True      # tar stopped reading: its exit status below says why
    finally:
        if not ok and not tar_quit:
            tar.kill()
        try:
            tar.stdin.close()
        except BrokenPipeError:
            pass
        code = tar.wait()
        try:
            stream.close(check=ok)
        finally:
            tar_errors.seek(0)
            detail = tar_errors.read().decode(errors="replace").strip()
            tar_errors.close()
    if code != 0 or tar_quit:
        raise UserError(f"cannot unpack {archive}: tar failed (exit {code}): {detail}")
    return gate.members, gate.data_bytes


def _pump(stream: _Stream, sink: int, gate: "_Gate", bar) -> None:
    """Forward header blocks only once the gate accepts them, then the member's data."""
    pending = bytearray()
    last = 0
    while True:
        block = stream.read(BLOCK)
        if len(block) < BLOCK:
            if block or pending:
                raise UserError(f"cannot unpack {stream.archive}: the archive is truncated")
            break
        pending += block
        if block == bytes(BLOCK):
            break   # end-of-archive marker: GNU tar stops here, so do we
        extra = gate.header(block)
        if extra:
            meta = stream.read(extra)
            if len(meta) < extra:
                raise UserError(f"cannot unpack {stream.archive}: the archive is truncated")
            pending += meta
            gate.meta(meta)
            continue
        data = gate.accept()
        _write_fd(sink, pending)
        pending.clear()
        if data:
            stream.copy_to(sink, data)
            position = stream.position()
            bar.update(position - last)
            last = position
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
    return [part for part in name.split("/") if part not in ("", ".")]


class _Gate:
    """Decides, header by header, whether a member is safe for GNU tar to write."""

    def __init__(self, strip: int):
        self.strip = strip
        self.members = 0
        self.data_bytes = 0
        self._links: dict[str, str] = {}     # symlinks so far: path -> target
        self._dirs: set[str] = set()         # paths used as directories
        self._walked: set[str] = set()       # paths a symlink target walks through
        self._reset()

    def _reset(self) -> None:
        self._info: tarfile.TarInfo | None = None
        self._meta_kind = ""
        self._long: dict[str, str] = {}      # 'L'/'K' GNU long name / link name
        self._pax: dict[str, str] = {}

    # Headers -----------------------------------------------------------------------------

    def header(self, block: bytes) -> int:
        """Parse one header block; returns the size of extension data to read next (0: a member)."""
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.TarError as exc:
            raise _Refused("?", f"corrupt tar header ({exc})") from None
        kind = info.type
        if kind in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK,
                    tarfile.XHDTYPE, tarfile.XGLTYPE):
            if not 0 < info.size <= META_LIMIT:
                raise _Refused(info.name, f"extension header of {info.size} bytes")
            self._meta_kind = kind
            return _round(info.size)
        self._info = info
        return 0

    def meta(self, data: bytes) -> None:
        """Take in the data of a GNU long-name or pax extension header."""
        kind, self._meta_kind = self._meta_kind, ""
        if kind in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            key = "name" if kind == tarfile.GNUTYPE_LONGNAME else "link"
            if key in self._long:
                raise _Refused(self._decode(data), "repeated GNU long-name header")
            self._long[key] = self._decode(data.split(b"\0", 1)[0])
            return
        records = _pax_records(data)
        if records is None:
            raise _Refused("?", "malformed pax header")
        if kind == tarfile.XGLTYPE:
            for key in records:
                if key in ("path", "linkpath", "size") or key.startswith("GNU.sparse"):
                    raise _Refused(records[key], f"global pax header sets {key!r}")
            return
        if self._pax:
            raise _Refused(records.get("path", "?"), "repeated pax header")
        self._pax = records

    def accept(self) -> int:
        """Check the member just parsed; returns how many data bytes follow its header."""
        info = self._info
        try:
            return self._check(info)
        finally:
            self._reset()

    # Checks ------------------------------------------------------------------------------

    def _check(self, info: tarfile.TarInfo) -> int:
        name = self._pick("name", "path", info.name)
        link = self._pick("link", "linkpath", info.linkname)
        size = info.size
        if "size" in self._pax:
            try:
                size = int(self._pax["size"])
            except ValueError:
                raise _Refused(name, "malformed pax size") from None
        kind = info.type
        if any(key.startswith("GNU.sparse") for key in self._pax) or kind == tarfile.GNUTYPE_SPARSE:
            raise _Refused(name, "sparse members are not supported (repack without --sparse)")
        if kind in SPECIAL:
            raise _Refused(name, f"{SPECIAL[kind]} (only files, directories and links are allowed)")
        if kind not in FILE_TYPES | LINK_TYPES | {tarfile.DIRTYPE}:
            raise _Refused(name, f"unsupported member type {kind!r}")
        if kind not in FILE_TYPES and size:
            # GNU tar and this gate must agree where the next header starts.
            raise _Refused(name, "a link or directory carrying data")
        if kind in FILE_TYPES and name.endswith("/"):
            if size:
                raise _Refused(name, "a file named like a directory carrying data")
            kind = tarfile.DIRTYPE
        path = self._checked_path(name, name)
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
        for depth in range(1, len(parts)):
            self._dirs.add("/".join(parts[:depth]))
        self.members += 1
        if kind in FILE_TYPES:
            self.data_bytes += size
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
        if ".." in name.split("/"):
            raise _Refused(member, f"{what} {name!r} contains '..'")
        return _strip(name, self.strip)

    def _no_symlink_on_way(self, member: str, parts: list[str], what: str = "path") -> None:
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
