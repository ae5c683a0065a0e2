"""Hostile build-cache entries, made by hand: each is refused with nothing written outside the
SDK root and nothing left inside it (links included), and a bomb is refused before it writes."""

from __future__ import annotations

import os
import stat
import struct
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

import pytest
import zstandard

from cache_fixtures import KEY, make_sdk, sha, tar_gz, write_entry
from rk3576_build.build import cache as buildcache
from rk3576_build.build.cache import Cache, CacheEntryError, restore


def state(base: Path) -> dict:
    """Everything under `base`: type, link target, size, mode, content digest."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[path] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[path] = ("dir", st.st_mode)
            else:
                out[path] = ("file", st.st_size, st.st_mode, sha(Path(path).read_bytes()))
    return out


@pytest.fixture
def world(tmp_path):
    """An SDK root (a fresh tree: rockdev -> output/firmware) and a directory outside it."""
    root = make_sdk(tmp_path / "work" / "sdk")
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "keep.txt").write_text("outside the SDK\n")
    return tmp_path, root, outside


def assert_refused(base: Path, entry: Path, root: Path, match: str, *, guard: list[Path] = ()) -> CacheEntryError:
    """Restoring `entry` is refused (message matching `match`) and changes nothing under `base`
    (nor creates any `guard` path elsewhere)."""
    before = state(base)
    with pytest.raises(CacheEntryError, match=match) as refused:
        restore(entry, root, key=KEY)
    assert state(base) == before
    for path in guard:
        assert not os.path.lexists(path), path
    return refused.value


NOT_THERE = "rk3576-cache-hostile-test"  # a name that exists nowhere: a wrong restore would create it


def hostile_cases(outside: Path) -> dict:
    """name -> (files, links, what the refusal says, paths that must never appear)."""
    return {
        # The issue's: a link to /etc, then a file through it (refused; the link is not left).
        "link to /etc, then a file through it": (
            [(f"thatlink/{NOT_THERE}", b"root::0:0::/root:/bin/sh\n")], [("thatlink", "/etc")],
            "lies under thatlink", [Path("/etc") / NOT_THERE]),
        "a link to /etc alone": ([], [("thatlink", "/etc")], "points outside the SDK", []),
        # The issue's: a link to a directory outside, then a deep file (nothing made outside).
        "a link outside, then a deep file": (
            [("thatlink/deep/er/passwd", b"x\n")], [("thatlink", str(outside))],
            "lies under thatlink", [outside / "deep"]),
        # The issue's: a relative link that climbs out (was restored).
        "a relative link that climbs out": ([], [("x", "../../../../tmp/x")], "leads outside", []),
        "a link that climbs out after another link": (
            [], [("deep/deeper/a", "../../x"), ("b", "deep/deeper/a/../../etc")], "leads outside", []),
        "an absolute link elsewhere": ([], [("output/defconfig", "/usr/lib")], "points outside the SDK", []),
        "a link to the root itself": ([], [("here", ".")], "the SDK root itself", []),
        "links in a loop": ([], [("l1", "l2"), ("l2", "l1")], "too many levels of links", []),
        "a file through a link of the same entry": (
            [("alias/uboot.img", b"x")], [("alias", "output/firmware")], "lies under alias", []),
        "a file under a file": ([("a", b"1"), ("a/b", b"2")], [], "lies under a", []),
        "a file where a directory is": ([("output/firmware", b"x")], [], "a directory is in the way", []),
        "a link where a directory with files is": ([], [("output", "u-boot")], "a directory with files", []),
        "a path with ..": ([("../outside/x", b"x")], [], "unreadable", [outside / "x"]),
        "an absolute path": ([(str(outside / "x"), b"x")], [], "unreadable", [outside / "x"]),
        "a path that is not normal": ([("output//x", b"x")], [], "unreadable", []),
        "the same path twice": ([("a", b"1"), ("a", b"2")], [], "unreadable", []),
        "a file and a link at one path": ([("a", b"1")], [("a", "output")], "unreadable", []),
    }


@pytest.mark.parametrize("case", list(hostile_cases(Path("/x"))))
def test_hostile_entry_is_refused_with_nothing_written_anywhere(world, case):
    base, root, outside = world
    files, links, match, guard = hostile_cases(outside)[case]
    entry = base / "entry"
    write_entry(entry, files, links)
    assert_refused(base, entry, root, match, guard=guard)


def test_a_link_in_the_tree_that_leads_outside_is_not_followed(world):
    """`resolve through links already in the tree`: the SDK's own link to outside is no way out."""
    base, root, outside = world
    (root / "escape").symlink_to(outside)
    write_entry(base / "entry", [("escape/new/passwd", b"x\n")])
    assert_refused(base, base / "entry", root, "leads outside the SDK", guard=[outside / "new"])


@pytest.mark.parametrize("edit,match", [
    (lambda index: index["files"][0].update(mode=0o4755), "mode"),
    (lambda index: index["files"][0].update(extents=[[0, 100]]), "extents"),
    (lambda index: index["files"][0].update(size=-1), "not a count"),
    (lambda index: index["files"][0].update(sha256="0" * 63), "sha256"),
    (lambda index: index["links"].append({"path": "nul", "target": "a\0b"}), "link target"),
    (lambda index: index["archive"].update(name="../../outside/products.zst"), "archive name"),
], ids=["setuid mode", "extents past the end", "negative size", "short digest", "NUL in a target",
        "archive named elsewhere"])
def test_an_index_that_lies_about_a_file_is_refused(world, edit, match):
    base, root, _ = world
    write_entry(base / "entry", [("output/firmware/boot.img", b"0123456789")], edit=edit)
    assert_refused(base, base / "entry", root, match)


def test_a_refused_entry_places_nothing_not_even_its_good_links(world):
    base, root, _ = world
    files = [("output/firmware/boot.img", b"good\n"), ("output/firmware/misc.img", b"good too\n")]
    links = [("device/rockchip/.chip", ".chips/rk3576"), ("rockdev2", "output/firmware")]
    # The last file's bytes are not what its index says: everything else was fine.
    archive = zstandard.ZstdCompressor().compress(b"good\n" + b"GOOD TOO\n")
    write_entry(base / "entry", files, links, archive=archive)
    assert_refused(base, base / "entry", root, "misc.img: size or sha256 does not match")
    # The same entry, undamaged, is restored whole.
    write_entry(base / "entry", files, links)
    restore(base / "entry", root, key=KEY)
    assert os.readlink(root / "rockdev2") == "output/firmware"
    assert (root / "rockdev2" / "misc.img").read_bytes() == b"good too\n"
    assert not list(root.glob(".rk3576-cache-restore.*"))


# --------------------------------------------------------------------------- bombs and bounds


def written_bytes() -> int:
    """Bytes this process has passed to write() so far (/proc/self/io wchar)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


def gzip_bomb(header: bytes, zeros: int) -> bytes:
    """A valid gzip stream of `header` and `zeros` zero bytes, about 1/1000 of their size:
    one fully flushed deflate segment of zeros, repeated."""
    segment_size = 64 << 20
    assert zeros % segment_size == 0
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = deflate.compress(header) + deflate.flush(zlib.Z_FULL_FLUSH)
    segment = deflate.compress(bytes(segment_size)) + deflate.flush(zlib.Z_FULL_FLUSH)
    last = deflate.flush(zlib.Z_FINISH)
    crc = zlib.crc32(header)
    block = bytes(segment_size)
    for _ in range(zeros // segment_size):
        crc = zlib.crc32(block, crc)
    size = (len(header) + zeros) & 0xFFFFFFFF
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + first + segment * (zeros // segment_size) + last
            + struct.pack("<II", crc, size))


def test_a_tar_bomb_is_refused_before_it_writes(world):
    """The issue's: a 2 MB gzip member whose tar header says 2 GiB while the index says 10 bytes."""
    base, root, _ = world
    info = tarfile.TarInfo("output/firmware/boot.img")
    info.size = 2 << 30
    bomb = gzip_bomb(info.tobuf(format=tarfile.USTAR_FORMAT), 2 << 30)
    assert len(bomb) < 3 << 20
    write_entry(base / "entry", [("output/firmware/boot.img", b"0123456789")], fmt=1, archive=bomb)
    before, started = written_bytes(), time.monotonic()
    assert_refused(base, base / "entry", root, r"says 2147483648 bytes, its index 10")
    assert written_bytes() - before < 1 << 20
    assert time.monotonic() - started < 10


def test_a_zstd_bomb_is_refused_before_it_writes_past_the_claimed_size(world):
    """Format 2: the index says 10 bytes; the stream holds 2 GiB more (64 MiB frames of zeros)."""
    base, root, _ = world
    frame = zstandard.ZstdCompressor(level=19).compress(bytes(64 << 20))
    bomb = zstandard.ZstdCompressor().compress(b"0123456789") + frame * 32
    write_entry(base / "entry", [("output/firmware/boot.img", b"0123456789")], archive=bomb)
    before = written_bytes()
    assert_refused(base, base / "entry", root, "holds more than its index lists")
    assert written_bytes() - before < 1 << 20


def test_an_archive_shorter_than_its_index_says_is_refused(world):
    base, root, _ = world
    write_entry(base / "entry", [("output/firmware/boot.img", b"0123456789")],
                archive=zstandard.ZstdCompressor().compress(b"01234"))
    assert_refused(base, base / "entry", root, "cut short")


def test_an_index_too_large_to_read_is_refused_unread(world):
    """The issue's: an index listing 1,000,000 files (139 MB) was read whole (616 MB of memory)."""
    base, root, _ = world
    entry = base / "entry"
    entry.mkdir()
    with open(entry / "index.json", "w") as fh:
        fh.write(f'{{"format": 2, "key": "{KEY}", "meta": {{}}, "links": [], "archive": '
                 '{"name": "products.zst", "size": 0}, "files": [')
        for batch in range(0, 1_000_000, 10_000):
            fh.write(("," if batch else "") + ",".join(
                f'{{"path": "output/many/file-{n:07d}.o", "size": 0, "mode": 420, "sha256": "{sha(b"")}"}}'
                for n in range(batch, batch + 10_000)))
        fh.write("]}")
    assert (entry / "index.json").stat().st_size > 100 << 20
    # In a child process, to see its memory: refused without reading the index.
    probe = (
        "import re\n"
        "from rk3576_build.build.cache import CacheEntryError, restore\n"
        "try:\n"
        f"    restore({str(entry)!r}, {str(root)!r}, key={KEY!r})\n"
        "except CacheEntryError as exc:\n"
        "    print(exc)\n"
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n")  # peak RSS, KiB
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    message, peak_kib = result.stdout.strip().splitlines()
    assert "more than an entry's may be" in message, message
    assert int(peak_kib) < 100 * 1024  # reading it whole took 616 MB


def test_an_index_listing_too_many_files_is_refused(world):
    base, root, _ = world
    files = [{"path": f"o/{n}", "size": 0, "mode": 420, "sha256": sha(b"")}
             for n in range(buildcache.entry.MAX_FILES + 1)]
    write_entry(base / "entry", edit=lambda index: index.update(files=files))
    assert (base / "entry" / "index.json").stat().st_size < buildcache.entry.MAX_INDEX_BYTES
    assert_refused(base, base / "entry", root, "more than an entry may hold")


# --------------------------------------------------------------------------- format 1 archives


@pytest.mark.parametrize("member,match", [
    ("../outside/x", "which its index does not list"),
    ("/etc/" + NOT_THERE, "which its index does not list"),
    ("symlink", "which its index does not list"),
    ("short", "the archive says 5 bytes, its index 10"),
], ids=["dot-dot name", "absolute name", "symlink member", "false size"])
def test_format_1_members_that_are_not_what_the_index_lists_are_refused(world, member, match):
    base, root, outside = world
    if member == "symlink":
        info = tarfile.TarInfo("output/firmware/boot.img")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        members = [(info, None)]
    elif member == "short":
        members = [("output/firmware/boot.img", b"01234")]
    else:
        members = [(member, b"0123456789")]
    write_entry(base / "entry", [("output/firmware/boot.img", b"0123456789")], fmt=1, archive=tar_gz(members))
    assert_refused(base, base / "entry", root, match, guard=[outside / "x", Path("/etc") / NOT_THERE])


# --------------------------------------------------------------------------- all or nothing


def test_a_move_that_fails_puts_everything_back(world):
    """A verified entry that cannot be moved into place (an immutable directory) leaves the tree as it was."""
    base, root, _ = world
    (root / "existing.txt").write_text("before\n")
    locked = root / "output" / "locked"
    locked.mkdir()
    files = [("a/new.bin", b"new\n"), ("existing.txt", b"after\n"), ("output/locked/file", b"x\n")]
    write_entry(base / "cache" / KEY[:2] / KEY, files, [("b-link", "output/firmware")])
    subprocess.run(["chattr", "+i", str(locked)], check=True)
    try:
        before = state(base)
        messages = []
        cache = Cache.from_urls([f"dir:{base / 'cache'}"], report=messages.append, trust="any")
        assert cache.restore(KEY, root) is None
        assert state(base) == before
        assert len(messages) == 1 and "could not put entry" in messages[0] and "nothing of it was left" in messages[0]
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)
