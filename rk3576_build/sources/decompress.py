"""Decompressed bytes of an archive: the fastest installed decompressor in a pipe, else Python's modules.

Memory stays bounded whatever the archive expands to; long member data can move on by splice(2).
"""

from __future__ import annotations

import bz2
import fcntl
import lzma
import os
import shutil
import subprocess
import tempfile
import zlib
from pathlib import Path
from typing import IO, Any

from rk3576_build.core.files import CHUNK

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
# The fastest decompressors first (igzip: ISA-L's inflate, about 3x zlib's; then the parallel
# ones), then the single-threaded ones; Python's modules last.
TOOLS = {
    "gz": (["igzip", "-dc"], ["pigz", "-dc"], ["gzip", "-dc"]),
    "bz2": (["lbzip2", "-dc"], ["pbzip2", "-dc"], ["bzip2", "-dc"]),
    "xz": (["xz", "-dc", "-T0"],),
}


class Damaged(Exception):
    """Corrupt or truncated input, found before the archive's name is at hand."""


def tool(kind: str) -> list[str] | None:
    """The first installed decompressor command for `kind` (None: use Python's module)."""
    for command in TOOLS.get(kind, ()):
        if shutil.which(command[0]):
            return command
    return None


class Stream:
    """Decompressed bytes of the archive, with the compressed read position for progress.

    Long member data moves to GNU tar with splice(2) when the bytes come from a
    decompressor's pipe or the plain .tar file: no copy through Python.
    """

    def __init__(self, archive: Path, kind: str):
        self.archive = archive
        self._fd = os.open(archive, os.O_RDONLY)
        self._src = self._fd           # fd the decompressed bytes come from (unless Python inflates)
        self._proc: subprocess.Popen[bytes] | None = None
        self._pipe: IO[bytes] | None = None
        self._errors: IO[bytes] | None = None
        self._inflater: Inflater | None = None
        command = tool(kind)
        self._tool_name = command[0] if command else ""
        if command:
            self._errors = tempfile.TemporaryFile()
            # The tool shares our file offset, so lseek() tells how far it has read.
            self._proc = subprocess.Popen(command, stdin=self._fd, stdout=subprocess.PIPE,
                                          stderr=self._errors, bufsize=0)
            self._pipe = self._proc.stdout
            assert self._pipe is not None  # stdout=PIPE
            self._src = self._pipe.fileno()
            grow_pipe(self._src)
        elif kind != "tar":
            self._inflater = Inflater(kind, self._fd)

    def position(self) -> int:
        return os.lseek(self._fd, 0, os.SEEK_CUR)

    def read_some(self, size: int) -> bytes:
        """Up to `size` bytes (at least one), b"" only at the end of the stream."""
        if self._inflater is None:
            return os.read(self._src, size)
        return self._inflater.read(size)

    def copy_to(self, sink: int, size: int) -> None:
        """Move exactly `size` bytes to the fd `sink`."""
        while size:
            if self._inflater is None:
                moved = os.splice(self._src, sink, min(size, CHUNK))
            else:
                chunk = self._inflater.read(min(size, CHUNK))
                moved = len(chunk)
                write_fd(sink, chunk)
            if not moved:
                raise Damaged("the archive is truncated (it ends inside a member's data)")
            size -= moved

    def close(self, drain: bool) -> str | None:
        """Stop the decompressor (`drain`: read it to its end first); its failure, if it failed."""
        proc, pipe, errors = self._proc, self._pipe, self._errors
        try:
            if proc is None or pipe is None or errors is None:
                return None
            if drain:
                while os.read(self._src, CHUNK):
                    pass
            elif proc.poll() is None:
                proc.kill()
            pipe.close()
            code = proc.wait()
            if code > 0:
                errors.seek(0)
                detail = errors.read().decode(errors="replace").strip()
                detail = detail.replace(" (null)", "")     # igzip's name for its stdin
                return f"{self._tool_name} failed (exit {code}): {detail or 'corrupt compressed data'}"
            return None
        finally:
            if errors is not None:
                errors.close()
            os.close(self._fd)


class Inflater:
    """Python's zlib/bz2/lzma, at most `size` bytes out per call: a bomb stays small in memory."""

    def __init__(self, kind: str, fd: int):
        self._kind, self._fd = kind, fd
        self._new(b"")

    def _new(self, data: bytes) -> None:
        self._decomp: Any  # zlib's, bz2's or lzma's decompressor: alike, not one type
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
                        raise Damaged("the compressed data is truncated")
                    out = self._decomp.decompress(data, size)
                    self._input = self._decomp.unconsumed_tail
                else:
                    data = b""
                    if self._decomp.needs_input:
                        data = self._input or os.read(self._fd, CHUNK)
                        if not data:
                            raise Damaged("the compressed data is truncated")
                        self._input = b""
                    out = self._decomp.decompress(data, size)
                if out:
                    return out
        except (zlib.error, OSError, lzma.LZMAError, EOFError) as exc:
            raise Damaged(f"corrupt compressed data ({exc})") from None


def grow_pipe(fd: int) -> None:
    """Bigger pipe buffers mean fewer context switches between the three processes."""
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, CHUNK)
    except OSError:
        pass    # over the user's pipe-size limit: the default still works


def write_fd(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
