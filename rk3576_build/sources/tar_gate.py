"""The gate every member header passes before GNU tar sees it, and the pump that forwards what it accepts.

Hostile members (writing outside, through symlinks, devices, ...) are refused; corrupt headers
are damage; the files' total size is capped.
"""

from __future__ import annotations

import tarfile
import zlib
from typing import NamedTuple

from rk3576_build.core.files import CHUNK
from rk3576_build.core.text import human_size
from rk3576_build.sources.decompress import Damaged, Stream, write_fd

BLOCK = 512
SPLICE_MIN = 256 << 10        # member data beyond this moves to tar by splice(2), not via Python
BATCH = 512 << 10             # accepted bytes are written to tar in pieces of about this size
META_LIMIT = 1 << 20          # longest GNU long-name / pax header we accept
FILE_TYPES = {tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE}
LINK_TYPES = {tarfile.LNKTYPE, tarfile.SYMTYPE}
SPECIAL = {tarfile.CHRTYPE: "device node", tarfile.BLKTYPE: "device node", tarfile.FIFOTYPE: "fifo"}
ALLOWED_TYPES = FILE_TYPES | LINK_TYPES | {tarfile.DIRTYPE}
META_TYPES = {tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE}
ZERO_BLOCK = bytes(BLOCK)


class Refused(Exception):
    """A member the gate will not let through: (member name, reason)."""

    def __init__(self, member: str, reason: str):
        super().__init__(member, reason)
        self.member, self.reason = member, reason


class TooBig(Exception):
    """The archive's files add up to more than the cap."""


def pump(stream: Stream, sink: int, gate: Gate, bar) -> None:
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
            write_fd(sink, memoryview(buf)[written:anchor])
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
                raise Damaged("the archive is truncated (it ends inside a header)")
            break              # no end-of-archive marker: GNU tar accepts that too
        block = buf[pos:pos + BLOCK]
        if block == ZERO_BLOCK:
            break              # end-of-archive marker: GNU tar stops here, so do we
        data = gate.header(block)
        while data < 0:        # extension headers (long names, pax) before the member's own
            extra = -data
            if len(buf) - pos < 2 * BLOCK + extra and not fill(2 * BLOCK + extra):
                raise Damaged("the archive is truncated (it ends inside an extension header)")
            gate.meta(buf[pos + BLOCK:pos + BLOCK + extra])
            pos += BLOCK + extra
            data = gate.header(buf[pos:pos + BLOCK])
        pos += BLOCK + data
        if pos <= len(buf):
            if pos - written >= BATCH:      # small writes keep tar busy while we parse on
                write_fd(sink, memoryview(buf)[written:pos])
                written = pos
            continue
        rest, pos = pos - len(buf), len(buf)
        anchor = pos
        if rest >= SPLICE_MIN:
            write_fd(sink, memoryview(buf)[written:pos])
            written = pos
            stream.copy_to(sink, rest)
        else:
            if not fill(rest):
                raise Damaged("the archive is truncated (it ends inside a member's data)")
            pos += rest
    anchor = pos
    write_fd(sink, memoryview(buf)[written:anchor])
    write_fd(sink, bytes(2 * BLOCK))
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
    raise Damaged(f"corrupt tar header (bad number {text[:20]!r})")


def _byte_sum(block: bytes) -> int:
    """sum(block) for a 512-byte block, about twice as fast, from two sums computed in C.

    adler32 gives the sum modulo 65521, the block read as one integer gives it modulo 255
    (256 = 1 mod 255); a sum of 512 bytes is at most 130560, and of its two candidates
    modulo 65521 only one has the right remainder modulo 255 (65521 = 241 mod 255).
    """
    low = ((zlib.adler32(block) & 0xFFFF) - 1) % 65521
    return low if low % 255 == int.from_bytes(block, "little") % 255 else low + 65521


def parse_header(block: bytes) -> _Header:
    """The fields the gate needs from one 512-byte header, read the way GNU tar reads them."""
    stored = _number(block[148:156])
    unsigned = _byte_sum(block) - sum(block[148:156]) + 8 * 32
    if stored != unsigned:   # some old tars summed signed bytes
        high = sum(1 for byte in block[:148] + block[156:] if byte > 127)
        if stored != unsigned - 256 * high:
            raise Damaged("corrupt tar header (bad checksum)")
    name = block[:100].split(b"\0", 1)[0]
    if block[257:265] == b"ustar\x0000":
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    size = _number(block[124:136])
    if size < 0:
        raise Damaged("corrupt tar header (negative size)")
    link = block[157:257].split(b"\0", 1)[0].decode("utf-8", "surrogateescape") if block[157] else ""
    return _Header(name.decode("utf-8", "surrogateescape"), link, size, block[156:157])


class Gate:
    """Decides, header by header, whether a member is safe for GNU tar to write."""

    def __init__(self, strip: int, cap: int):
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
        info = parse_header(block)
        if info.type in META_TYPES:
            if not 0 < info.size <= META_LIMIT:
                raise Refused(info.name, f"extension header of {info.size} bytes")
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
                raise Refused(self._decode(data), "repeated GNU long-name header")
            self._long[key] = self._decode(data.split(b"\0", 1)[0])
            return
        records = _pax_records(data)
        if records is None:
            raise Damaged("corrupt tar archive (malformed pax header)")
        if kind == tarfile.XGLTYPE:
            for key in records:
                if key in ("path", "linkpath", "size") or key.startswith("GNU.sparse"):
                    raise Refused(records[key], f"global pax header sets {key!r}")
            return
        if self._pax:
            raise Refused(records.get("path", "?"), "repeated pax header")
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
                    raise Refused(name, "malformed pax size") from None
            if any(key.startswith("GNU.sparse") for key in self._pax):
                raise Refused(name, "sparse members are not supported (repack without --sparse)")
        if kind == tarfile.GNUTYPE_SPARSE:
            raise Refused(name, "sparse members are not supported (repack without --sparse)")
        if kind in SPECIAL:
            raise Refused(name, f"{SPECIAL[kind]} (only files, directories and links are allowed)")
        if kind not in ALLOWED_TYPES:
            raise Refused(name, f"unsupported member type {kind!r}")
        if kind not in FILE_TYPES and size:
            # GNU tar and this gate must agree where the next header starts.
            raise Refused(name, "a link or directory carrying data")
        if kind in FILE_TYPES and name.endswith("/"):
            if size:
                raise Refused(name, "a file named like a directory carrying data")
            kind = tarfile.DIRTYPE
        path = self._checked_path(name, name.rstrip("/") or name if kind == tarfile.DIRTYPE else name)
        if path is None:
            return _round(size)          # GNU tar skips it too (--strip-components)
        parts = _parts(path)
        key = "/".join(parts)
        if not parts and kind != tarfile.DIRTYPE:
            raise Refused(name, "a non-directory with an empty path")
        self._no_symlink_on_way(name, parts)
        if kind == tarfile.SYMTYPE:
            self._add_symlink(name, parts, link)
        elif kind == tarfile.LNKTYPE:
            target = self._checked_path(name, link, what="hard link target")
            if target is None:
                raise Refused(name, f"hard link target {link!r} is removed by strip_components")
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
                raise TooBig(f"with member {name!r} its files come to {human_size(self.data_bytes)}")
        return _round(size)

    def _pick(self, long_key: str, pax_key: str, header_value: str) -> str:
        """The name GNU tar will use: pax, else GNU long name, else the header's."""
        pax, long = self._pax.get(pax_key), self._long.get(long_key)
        if pax is not None and long is not None and pax != long:
            raise Refused(pax, f"pax and GNU long-name headers disagree ({long!r})")
        value = pax if pax is not None else long if long is not None else header_value
        if "\0" in value:
            raise Refused(value, "a NUL byte in a name")
        return value

    def _checked_path(self, member: str, name: str, what: str = "path") -> str | None:
        """`name` after strip_components; refuses absolute names and `..`."""
        if name.startswith("/"):
            raise Refused(member, f"absolute {what} {name!r}")
        if ".." in name and ".." in name.split("/"):
            raise Refused(member, f"{what} {name!r} contains '..'")
        return _strip(name, self.strip)

    def _no_symlink_on_way(self, member: str, parts: list[str], what: str = "path") -> None:
        if not self._links:
            return
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            if prefix in self._links:
                raise Refused(member, f"{what} goes through the symlink {prefix!r} "
                                       f"(-> {self._links[prefix]!r}) from earlier in the archive")

    def _add_symlink(self, member: str, parts: list[str], target: str) -> None:
        key = "/".join(parts)
        if key in self._dirs or key in self._walked:
            raise Refused(member, "a symlink replacing a directory used earlier in the archive")
        if self._escapes(parts[:-1], target):
            raise Refused(member, f"symlink target {target!r} resolves outside the destination")
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
