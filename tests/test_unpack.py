"""unpack(): formats, strip_components, atomic staging, and refusal of hostile members."""

from __future__ import annotations

import bz2
import io
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from rk3576_build.core.errors import UserError
from rk3576_build.demo.sample_driver import make_driver_tarball
from rk3576_build.sources import decompress, tar_gate
from rk3576_build.sources import unpack as unpack_mod
from rk3576_build.sources.unpack import DamagedArchive, detect_format, is_unpacked, unpack


@pytest.fixture(params=["tool", "python"])
def decompressor(request, monkeypatch):
    """Run a test with the parallel decompressor tools and with Python's modules."""
    if request.param == "python":
        monkeypatch.setattr(decompress, "tool", lambda kind: None)
    return request.param


def member(name, kind=tarfile.REGTYPE, data=b"", link="", mode=0o644):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = kind, link, mode, 1_700_000_000
    if kind == tarfile.DIRTYPE:
        info.mode = 0o755
    info.size = len(data) if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    return info, data


def make_archive(path: Path, members, mode="w:gz", fmt=tarfile.GNU_FORMAT) -> Path:
    with tarfile.open(path, mode, format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.size else None)
    return path


@pytest.fixture
def work(tmp_path):
    """A work dir with `out` to unpack into and a `sentinel` dir that must stay empty."""
    (tmp_path / "sentinel").mkdir()
    return tmp_path


def assert_refused(work, archive, member_name, reason):
    with pytest.raises(UserError) as err:
        unpack(archive, work / "out")
    message = str(err.value)
    assert str(archive) in message and repr(member_name) in message and reason in message
    assert list((work / "sentinel").iterdir()) == []
    assert not (work / "out").exists() and not is_unpacked(work / "out")
    assert not (work / ".out.partial").exists()


SAFE = [member("top/", tarfile.DIRTYPE), member("top/ok.txt", data=b"fine")]


def test_absolute_member_is_refused(work, decompressor):
    evil = str(work / "sentinel" / "evil")
    archive = make_archive(work / "a.tar.gz", SAFE + [member(evil, data=b"pwned")])
    assert_refused(work, archive, evil, "absolute path")


@pytest.mark.parametrize("name", ["../sentinel/evil", "top/../../sentinel/evil"])
def test_dotdot_member_is_refused(work, decompressor, name):
    archive = make_archive(work / "a.tar.gz", SAFE + [member(name, data=b"pwned")])
    assert_refused(work, archive, name, "contains '..'")


@pytest.mark.parametrize("target", ["../../sentinel", "{sentinel}", "../top/../../x"])
def test_symlink_pointing_outside_is_refused(work, decompressor, target):
    target = target.format(sentinel=work / "sentinel")
    archive = make_archive(work / "a.tar.gz", SAFE + [
        member("top/link", tarfile.SYMTYPE, link=target),
        member("top/link/evil", data=b"pwned")])
    assert_refused(work, archive, "top/link", "resolves outside")


def test_symlink_escaping_through_another_symlink_is_refused(work, decompressor):
    archive = make_archive(work / "a.tar.gz", SAFE + [
        member("here", tarfile.SYMTYPE, link="."),          # fine on its own
        member("up", tarfile.SYMTYPE, link="here/.."),      # lexically ".", really the parent
        member("up/sentinel/evil", data=b"pwned")])
    assert_refused(work, archive, "up", "resolves outside")


def test_symlink_retargeting_an_earlier_one_is_refused(work, decompressor):
    archive = make_archive(work / "a.tar.gz", SAFE + [
        member("a", tarfile.SYMTYPE, link="d/../x"),        # inside while d is a directory
        member("d", tarfile.SYMTYPE, link="top")])          # would make `a` point outside
    assert_refused(work, archive, "d", "replacing a directory")


@pytest.mark.parametrize("target", ["../sentinel/secret", "{sentinel}/secret"])
def test_hardlink_pointing_outside_is_refused(work, decompressor, target):
    (work / "sentinel" / "secret").write_text("x")
    target = target.format(sentinel=work / "sentinel")
    archive = make_archive(work / "a.tar.gz", SAFE + [member("top/hl", tarfile.LNKTYPE, link=target)])
    with pytest.raises(UserError) as err:
        unpack(archive, work / "out")
    assert "'top/hl'" in str(err.value) and "hard link target" in str(err.value)
    assert [p.name for p in (work / "sentinel").iterdir()] == ["secret"]
    assert (work / "sentinel" / "secret").stat().st_nlink == 1
    assert not (work / "out").exists()


def test_hardlink_through_a_symlink_is_refused(work, decompressor):
    archive = make_archive(work / "a.tar.gz", SAFE + [
        member("top/in", tarfile.SYMTYPE, link="."),
        member("top/hl", tarfile.LNKTYPE, link="top/in/ok.txt")])
    assert_refused(work, archive, "top/hl", "goes through the symlink 'top/in'")


def test_writing_through_an_earlier_symlink_is_refused(work, decompressor):
    archive = make_archive(work / "a.tar.gz", SAFE + [
        member("top/sub", tarfile.SYMTYPE, link="."),
        member("top/sub/ok.txt", data=b"overwritten via a symlink")])
    assert_refused(work, archive, "top/sub/ok.txt", "goes through the symlink 'top/sub'")


@pytest.mark.parametrize("kind,reason", [(tarfile.CHRTYPE, "device node"),
                                         (tarfile.BLKTYPE, "device node"),
                                         (tarfile.FIFOTYPE, "fifo")])
def test_device_nodes_and_fifos_are_refused(work, decompressor, kind, reason):
    archive = make_archive(work / "a.tar.gz", SAFE + [member("top/dev", kind)])
    assert_refused(work, archive, "top/dev", reason)


def test_pax_and_long_names_are_checked_too(work, decompressor):
    long_evil = "../" + "x" * 150 + "/evil"
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        archive = make_archive(work / "a.tar.gz", SAFE + [member(long_evil, data=b"p")], fmt=fmt)
        assert_refused(work, archive, long_evil, "contains '..'")


def test_link_header_carrying_data_is_refused(work):
    # A size on a non-file would let the gate and GNU tar disagree where headers are.
    info, _ = member("top/l", tarfile.SYMTYPE, link="ok.txt")
    block = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    hidden, _ = member("/evil", data=b"")
    block[124:136] = b"%011o\0" % 512
    block[148:156] = b" " * 8
    block[148:155] = b"%06o\0" % sum(block)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(*member("top/", tarfile.DIRTYPE))
    archive = work / "a.tar"
    archive.write_bytes(raw.getvalue()[:512] + bytes(block) + hidden.tobuf() + bytes(1024))
    assert_refused(work, archive, "top/l", "carrying data")


def tree_members():
    return [member("pkg-1.0/", tarfile.DIRTYPE),
            member("pkg-1.0/bin/", tarfile.DIRTYPE),
            member("pkg-1.0/bin/run.sh", data=b"#!/bin/sh\necho hi\n", mode=0o755),
            member("pkg-1.0/lib/", tarfile.DIRTYPE),
            member("pkg-1.0/lib/libx.so.1", data=b"\x7fELF" + b"\0" * 100),
            member("pkg-1.0/lib/libx.so", tarfile.SYMTYPE, link="libx.so.1"),
            member("pkg-1.0/bin/lib", tarfile.SYMTYPE, link="../lib"),
            member("pkg-1.0/lib/libx-copy.so", tarfile.LNKTYPE, link="pkg-1.0/lib/libx.so.1")]


@pytest.mark.parametrize("mode,name", [("w:gz", "t.tar.gz"), ("w:gz", "t.tgz"),
                                       ("w:bz2", "t.tar.bz2"), ("w:xz", "t.tar.xz"),
                                       ("w", "t.tar"), ("w:gz", "no-extension")])
def test_each_format_unpacks_with_modes_and_links(work, decompressor, mode, name):
    archive = make_archive(work / name, tree_members(), mode=mode)
    result = unpack(archive, work / "out")
    root = work / "out" / "pkg-1.0"
    assert result.dest == work / "out" and is_unpacked(result.dest)
    assert result.files == 8 and result.bytes == 18 + 104
    assert (root / "bin/run.sh").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert stat.S_IMODE((root / "bin/run.sh").stat().st_mode) == 0o755
    assert os.readlink(root / "lib/libx.so") == "libx.so.1"
    assert (root / "bin/lib/libx.so").read_bytes().startswith(b"\x7fELF")
    assert (root / "lib/libx-copy.so").stat().st_ino == (root / "lib/libx.so.1").stat().st_ino
    assert sorted(p.name for p in work.iterdir()) == sorted([name, "out", ".out.unpacked", "sentinel"])


def test_format_is_detected_by_magic_bytes(work):
    archive = make_archive(work / "misnamed.tar.gz", SAFE, mode="w:bz2")
    assert detect_format(archive) == "bz2"
    (work / "notes.txt").write_text("not an archive\n" * 100)
    with pytest.raises(UserError, match="not a tar archive"):
        unpack(work / "notes.txt", work / "out")


def test_strip_components_like_gnu_tar(work, decompressor):
    archive = make_archive(work / "t.tar.gz", tree_members())
    result = unpack(archive, work / "out", strip_components=1, progress=True)
    assert sorted(p.name for p in result.dest.iterdir()) == ["bin", "lib"]
    assert (result.dest / "lib/libx-copy.so").read_bytes().startswith(b"\x7fELF")
    assert os.readlink(result.dest / "bin/lib") == "../lib"
    assert result.files == 7      # the top dir itself is stripped away


def test_rockchip_driver_tarball_unpacks_as_drivers_rknpu(work):
    archive = make_driver_tarball(work / "rknpu_driver_0.9.8_20241009.tar.bz2", "0.9.8")
    result = unpack(archive, work / "kernel-drivers")
    header = result.dest / "drivers/rknpu/include/rknpu_drv.h"
    assert "#define DRIVER_PATCHLEVEL 8" in header.read_text()


def test_interrupted_unpack_is_not_complete_and_is_recovered(work):
    archive = make_archive(work / "t.tar.gz", tree_members())
    staging = work / ".out.partial"                # what a killed run leaves behind
    (staging / "pkg-1.0").mkdir(parents=True)
    (staging / "pkg-1.0" / "half-written").write_bytes(b"junk")
    assert not is_unpacked(work / "out")
    unpack(archive, work / "out")
    assert is_unpacked(work / "out") and not staging.exists()
    assert not (work / "out/pkg-1.0/half-written").exists()


def test_dest_without_completion_marker_is_not_complete(work):
    (work / "out").mkdir()
    (work / "out" / "file").write_text("from somewhere else")
    assert not is_unpacked(work / "out")


def test_its_own_dest_is_replaced_and_failed_unpack_keeps_the_old_one(work, decompressor):
    unpack(make_archive(work / "v1.tar.gz", tree_members()), work / "out")
    (work / "out" / "stale.c").write_text("from a previous version")
    unpack(work / "v1.tar.gz", work / "out")
    assert not (work / "out" / "stale.c").exists() and (work / "out/pkg-1.0/bin/run.sh").exists()

    data = (work / "v1.tar.gz").read_bytes()
    truncated = work / "v2.tar.gz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DamagedArchive, match=f"the download is damaged: {truncated}"):
        unpack(truncated, work / "out")
    assert is_unpacked(work / "out") and (work / "out/pkg-1.0/bin/run.sh").exists()
    assert not (work / ".out.partial").exists() and not (work / ".out.old").exists()


def test_a_directory_it_did_not_create_is_never_replaced(work):
    """Finding 9: the user's own sdk/ (notes and all) must survive."""
    archive = make_archive(work / "t.tar.gz", tree_members())
    (work / "out").mkdir()
    (work / "out" / "notes.txt").write_text("my notes")
    with pytest.raises(UserError) as err:
        unpack(archive, work / "out")
    message = str(err.value)
    assert f"refusing to replace {work / 'out'}" in message and "move it elsewhere or delete it" in message
    assert (work / "out" / "notes.txt").read_text() == "my notes"
    assert not (work / ".out.unpacked").exists() and not (work / ".out.partial").exists()

    (work / "out" / "notes.txt").unlink()           # an empty dir holds nothing to lose
    unpack(archive, work / "out")
    assert is_unpacked(work / "out")

    _remove = unpack_mod._remove                    # our tree swapped for the user's own copy
    _remove(work / "out")
    (work / "out").mkdir()
    (work / "out" / "notes.txt").write_text("my notes")
    assert not is_unpacked(work / "out")
    with pytest.raises(UserError, match="refusing to replace"):
        unpack(archive, work / "out")
    assert (work / "out" / "notes.txt").exists()


def test_read_only_dirs_in_a_tree_can_be_replaced(work):
    members = [member("ro/", tarfile.DIRTYPE), member("ro/f", data=b"x")]
    members[0][0].mode = 0o555
    archive = make_archive(work / "t.tar.gz", members)
    unpack(archive, work / "out")
    unpack(archive, work / "out")
    assert (work / "out/ro/f").read_bytes() == b"x"
    assert stat.S_IMODE((work / "out/ro").stat().st_mode) == 0o555


def test_missing_archive_is_a_user_error(work):
    with pytest.raises(UserError, match="no such file"):
        unpack(work / "nope.tar.gz", work / "out")


def test_corrupt_input_reads_as_damaged_naming_the_file(work, decompressor):
    """Finding 12: damage is not hostility (a bz2 corrupted in the middle, a bad header)."""
    members = [member("top/", tarfile.DIRTYPE)] + [
        member(f"top/blob{i}", data=os.urandom(300_000)) for i in range(4)]
    good = make_archive(work / "good.tar.bz2", members, mode="w:bz2")
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = work / "bad.tar.bz2"
    bad.write_bytes(bytes(data))
    raw = bytearray(make_archive(work / "t.tar", SAFE, mode="w").read_bytes())
    raw[600] ^= 0x01                                 # inside the second header: bad checksum
    header = work / "header.tar"
    header.write_bytes(bytes(raw))
    for archive in (bad, header):
        with pytest.raises(DamagedArchive) as err:
            unpack(archive, work / "out")
        message = str(err.value)
        assert message.startswith(f"the download is damaged: {archive}: ")
        assert "refusing" not in message and "member" not in message
        assert not (work / "out").exists() and not (work / ".out.partial").exists()


def test_unpacked_size_cap_refuses_clearly(work, decompressor, monkeypatch):
    archive = make_archive(work / "t.tar.gz", tree_members())
    with pytest.raises(UserError) as err:
        unpack(archive, work / "out", max_bytes=100)
    message = str(err.value)
    assert f"refusing to unpack {archive}" in message and "cap of 100 B" in message
    assert "RK3576_MAX_UNPACK" in message and not (work / "out").exists()
    monkeypatch.setenv("RK3576_MAX_UNPACK", "100")
    with pytest.raises(UserError, match="cap of 100 B"):
        unpack(archive, work / "out")
    monkeypatch.setenv("RK3576_MAX_UNPACK", "1K")
    assert unpack(archive, work / "out").bytes == 122
    monkeypatch.setenv("RK3576_MAX_UNPACK", "lots")
    with pytest.raises(UserError, match="RK3576_MAX_UNPACK must be a size"):
        unpack(archive, work / "out")
    assert unpack_mod.max_unpack_bytes.__doc__ and unpack_mod.MAX_UNPACK == 64 << 30


BOMB_CHILD = """
import sys
from pathlib import Path
from rk3576_build.core.files import CHUNK
from rk3576_build.sources import decompress as d, unpack as u
d.tool = lambda kind: None                         # Python's bz2, not lbzip2
archive, kind = Path(sys.argv[1]), sys.argv[2]
stream = d.Stream(archive, kind)
total = 0
while chunk := stream.read_some(CHUNK):
    total += len(chunk)
stream.close(drain=False)
result = u.unpack(Path(sys.argv[3]), Path(sys.argv[4]))
# VmHWM: this process's peak RSS (ru_maxrss would also count the parent's, from before exec)
peak = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(total, result.files, peak)
"""


def test_a_decompression_bomb_stays_small_in_memory(work):
    """Finding 8: 1 GiB of zeros from a few KB of bz2 through the Python fallback."""
    piece = bz2.compress(bytes(16 << 20), 9)         # 16 MiB of zeros; 64 streams make 1 GiB
    bomb = work / "bomb.bz2"
    bomb.write_bytes(piece * 64)
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.GNU_FORMAT) as t:
        info, data = member("top/ok.txt", data=b"fine")
        t.addfile(info, io.BytesIO(data))
    # The tar's end marker, then the rest of the 1 GiB of zeros: GNU tar would stop, so do we.
    archive = work / "bomb.tar.bz2"
    archive.write_bytes(bz2.compress(tar.getvalue()) + piece * 64)
    done = subprocess.run([sys.executable, "-c", BOMB_CHILD, str(bomb), "bz2", str(archive),
                           str(work / "out")], capture_output=True, text=True, timeout=120,
                          cwd=Path(unpack_mod.__file__).parents[1])
    assert done.returncode == 0, done.stderr
    total, files, peak_kib = map(int, done.stdout.split())
    assert total == 1 << 30 and files == 1
    assert peak_kib < 100 * 1024, f"peak RSS {peak_kib} KiB"


def test_header_checksum_sum_matches_a_plain_sum():
    blocks = [os.urandom(512) for _ in range(3000)]
    blocks += [bytes(512), b"\xff" * 512, b"\x80" * 512, b"\x01" * 512, b"\xff" * 300 + bytes(212)]
    assert all(tar_gate._byte_sum(block) == sum(block) for block in blocks)
