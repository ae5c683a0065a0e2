"""The build cache: portable keys, verified entries, a directory and a real OCI registry (Docker Distribution)."""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml
import zstandard

from cache_fixtures import PRODUCTS, blob_file, entry_dir, free_port, key_of, make_sdk, serve_registry, tree
from helpers import rk
from rk3576_build.build import cache as buildcache
from rk3576_build.build.cache import Cache, CacheEntryError, OciBackend, open_backend, step_key
from rk3576_build.core.errors import UserError
from rk3576_build.core.files import sha256_file
from rk3576_build.demo import command as demo
from rk3576_build.demo.board_kit import find_kit


@pytest.fixture
def sdk(tmp_path) -> Path:
    return make_sdk(tmp_path / "sdk")


@pytest.fixture
def reports() -> list[str]:
    return []


# --------------------------------------------------------------------------- keys


def test_key_is_canonical_and_changes_with_any_input():
    a = step_key({"step": {"name": "kernel", "depends": ["sdk", "driver"]},
                  "inputs": {"driver": {"sha256": "ab" * 32}}, "builder": "1234"})
    b = step_key({"builder": "1234", "inputs": {"driver": {"sha256": "ab" * 32}},
                  "step": {"depends": ["sdk", "driver"], "name": "kernel"}})
    assert a.key == b.key and len(a.key) == 64
    assert a.inputs["inputs"]["driver"]["sha256"] == "ab" * 32
    bumped = step_key({**a.inputs, "inputs": {"driver": {"sha256": "cd" * 32}}})
    assert bumped.key != a.key


def test_key_refuses_host_paths():
    with pytest.raises(TypeError, match=r"inputs\.mounts\[0\]: PosixPath is not portable"):
        step_key({"mounts": [Path("/home/me/board-kit")]})


# --------------------------------------------------------------------------- entries


def test_collect_keeps_links_as_links_and_follows_them(sdk):
    found = buildcache.collect(sdk, ["rockdev/uboot.img", "output/modules"])
    assert found.links == {"rockdev": "output/firmware", "output/firmware/uboot.img": "../../u-boot/uboot.img"}
    assert sorted(found.files) == ["output/modules/mkmodules.sh", "output/modules/rknpu.ko", "u-boot/uboot.img"]


def test_collect_refuses_paths_outside_the_sdk(sdk):
    (sdk / "escape").symlink_to("/etc")
    with pytest.raises(ValueError, match="links outside the SDK"):
        buildcache.collect(sdk, ["escape/passwd"])
    with pytest.raises(ValueError, match="not a path inside the SDK"):
        buildcache.collect(sdk, ["../etc/passwd"])


def test_pack_is_deterministic(sdk, tmp_path):
    first = buildcache.pack(sdk, PRODUCTS, tmp_path / "e1", key="k" * 64, meta={"step": "u-boot"})
    os.utime(sdk / "u-boot" / "uboot.img", (1, 1))  # a rebuild with other times, same bytes
    second = buildcache.pack(sdk, PRODUCTS, tmp_path / "e2", key="k" * 64, meta={"step": "u-boot"})
    assert first == second
    assert (tmp_path / "e1" / "products.zst").read_bytes() == (tmp_path / "e2" / "products.zst").read_bytes()
    assert {f["path"]: f["size"] for f in first["files"]}["output/modules/rknpu.ko"] == 70_000


# --------------------------------------------------------------------------- a directory


def test_directory_roundtrip_restores_files_links_and_modes(sdk, tmp_path, reports):
    cache = Cache.from_urls(store=str(tmp_path / "cache"), scratch=tmp_path / "scratch", report=reports.append)
    key = key_of()
    assert cache.where(key) is None
    assert cache.save(key, sdk, PRODUCTS, {"step": "u-boot"}) == [f"dir:{tmp_path / 'cache'}"]
    assert cache.where(key) == f"dir:{tmp_path / 'cache'}"
    assert cache.save(key, sdk, PRODUCTS) == []  # already there: not packed again

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    restored = cache.restore(key, fresh)
    assert restored.url == f"dir:{tmp_path / 'cache'}"
    assert "rockdev" in restored.paths and "u-boot/uboot.img" in restored.paths
    expected = tree(sdk)
    assert tree(fresh) == expected
    assert (fresh / "rockdev" / "uboot.img").read_bytes() == b"u-boot image\n"
    assert time.time() - (fresh / "u-boot" / "uboot.img").stat().st_mtime < 60  # restored counts as fresh
    assert reports == []
    assert not list(fresh.glob(".rk3576-cache-restore.*"))


def test_tampered_entry_is_refused_and_nothing_is_placed(sdk, tmp_path, reports):
    cache = Cache.from_urls(store=str(tmp_path / "cache"), scratch=tmp_path / "scratch", report=reports.append)
    key = key_of()
    cache.save(key, sdk, PRODUCTS)
    archive = entry_dir(tmp_path / "cache", key) / "products.zst"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    fresh = tmp_path / "fresh"
    assert cache.restore(key, fresh) is None
    assert len(reports) == 1 and "sha256 does not match" in reports[0] and key[:12] in reports[0]
    assert tree(fresh) == {}


def test_rewritten_archive_with_a_matching_archive_digest_is_still_refused(sdk, tmp_path, reports):
    """Per-file digests catch an archive rebuilt with other bytes (and its digest fixed up)."""
    cache = Cache.from_urls(store=str(tmp_path / "cache"), scratch=tmp_path / "scratch", report=reports.append)
    key = key_of()
    cache.save(key, sdk, PRODUCTS)
    entry = entry_dir(tmp_path / "cache", key)
    index = json.loads((entry / "index.json").read_text())
    (sdk / "u-boot" / "uboot.img").write_bytes(b"U-boot image\n")  # same size, one byte differs
    other = buildcache.pack(sdk, PRODUCTS, tmp_path / "other", key=key)
    shutil.copyfile(tmp_path / "other" / "products.zst", entry / "products.zst")
    index["archive"] = other["archive"]
    (entry / "index.json").write_text(json.dumps(index))
    assert cache.restore(key, tmp_path / "fresh") is None
    assert "u-boot/uboot.img: size or sha256 does not match" in reports[0]
    assert tree(tmp_path / "fresh") == {}


def test_cut_short_entry_is_refused(sdk, tmp_path, reports):
    cache = Cache.from_urls(store=str(tmp_path / "cache"), scratch=tmp_path / "scratch", report=reports.append)
    key = key_of()
    cache.save(key, sdk, PRODUCTS)
    archive = entry_dir(tmp_path / "cache", key) / "products.zst"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    assert cache.restore(key, tmp_path / "fresh") is None
    assert "cut short" in reports[0]
    (entry_dir(tmp_path / "cache", key) / "index.json").write_text('{"format": 1, "ke')
    assert cache.restore(key, tmp_path / "fresh") is None
    assert "index is missing or unreadable" in reports[1]


def test_entry_with_a_path_outside_the_sdk_is_refused(sdk, tmp_path):
    key = key_of()
    buildcache.pack(sdk, PRODUCTS, tmp_path / "e", key=key)
    index = json.loads((tmp_path / "e" / "index.json").read_text())
    index["links"].append({"path": "../outside", "target": "/etc"})
    (tmp_path / "e" / "index.json").write_text(json.dumps(index))
    with pytest.raises(CacheEntryError, match="unreadable"):
        buildcache.restore(tmp_path / "e", tmp_path / "fresh", key=key)
    assert not (tmp_path / "outside").exists()


def test_missing_key_and_an_entry_for_another_key(sdk, tmp_path, reports):
    cache = Cache.from_urls(store=str(tmp_path / "cache"), scratch=tmp_path / "scratch", report=reports.append)
    assert cache.restore(key_of("ubuntu"), tmp_path / "fresh") is None and reports == []
    key, other = key_of("u-boot"), key_of("ubuntu")
    cache.save(key, sdk, PRODUCTS)
    shutil.copytree(entry_dir(tmp_path / "cache", key), entry_dir(tmp_path / "cache", other))
    assert cache.restore(other, tmp_path / "fresh") is None
    assert "another key" in reports[0]


def test_mirrors_first_store_last_and_a_bad_mirror_falls_through(sdk, tmp_path, reports):
    mirror, store = tmp_path / "mirror", tmp_path / "store"
    key = key_of()
    Cache.from_urls(store=str(mirror)).save(key, sdk, PRODUCTS)
    Cache.from_urls(store=str(store)).save(key, sdk, PRODUCTS)
    cache = Cache.from_urls([f"dir:{mirror}"], f"dir:{store}", scratch=tmp_path / "scratch", report=reports.append,
                            trust="any")  # (signed mirrors: test_cache_signed.py)
    assert cache.where(key) == f"dir:{mirror}"
    (entry_dir(mirror, key) / "products.zst").write_bytes(b"")
    restored = cache.restore(key, tmp_path / "fresh")
    assert restored.url == f"dir:{store}" and "cut short" in reports[0]
    other = key_of("ubuntu")
    assert cache.save(other, sdk, PRODUCTS) == [f"dir:{store}"]  # never into the read-only mirror
    assert not entry_dir(mirror, other).exists()
    # What only a mirror has is copied into the store when restored (the next run finds it there).
    third = key_of("third")
    Cache.from_urls(store=str(mirror)).save(third, sdk, PRODUCTS)
    assert cache.restore(third, tmp_path / "fresh3").url == f"dir:{mirror}"
    assert (entry_dir(store, third) / "index.json").read_bytes() == \
        (entry_dir(mirror, third) / "index.json").read_bytes()


def test_cache_urls(tmp_path):
    assert open_backend("dir:cache", writable=True, base_dir=tmp_path).path == tmp_path / "cache"
    assert open_backend(str(tmp_path), writable=False).path == tmp_path
    assert open_backend(f"file://{tmp_path}", writable=False).path == tmp_path
    oci = open_backend("oci://registry.example:5000/team/rk3576-cache", writable=True)
    assert isinstance(oci, OciBackend) and not oci.insecure and oci.url == "oci://registry.example:5000/team/rk3576-cache"
    assert open_backend("oci://127.0.0.1:5000/c", writable=True).insecure
    with pytest.raises(UserError) as err:
        open_backend("oci://bob:s3cret@registry.example/c", writable=True)
    assert "s3cret" not in str(err.value) and "docker login registry.example" in str(err.value)
    with pytest.raises(UserError, match="use dir:PATH"):
        open_backend("s3://bucket/c", writable=True)


# --------------------------------------------------------------------------- an OCI registry


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with serve_registry(tmp_path_factory.mktemp("registry")) as served:
        yield served


@pytest.mark.registry
def test_registry_roundtrip(registry, sdk, tmp_path, reports):
    url, _ = registry
    cache = Cache.from_urls(store=url, scratch=tmp_path / "scratch", report=reports.append)
    key = key_of("registry-roundtrip")
    assert cache.where(key) is None
    assert cache.save(key, sdk, PRODUCTS, {"step": "u-boot"}) == [url]
    assert cache.where(key) == url
    # Another machine: only the URL in common.
    other = Cache.from_urls([url], scratch=tmp_path / "scratch2", report=reports.append, trust="any")
    restored = other.restore(key, tmp_path / "fresh")
    assert restored.url == url and tree(tmp_path / "fresh") == tree(sdk)
    assert other.restore(key_of("never-stored"), tmp_path / "fresh2") is None
    assert reports == []


@pytest.mark.registry
def test_registry_damaged_and_cut_short_blobs_are_refused(registry, sdk, tmp_path, reports):
    url, storage = registry
    cache = Cache.from_urls(store=url, scratch=tmp_path / "scratch", report=reports.append)
    key = key_of("registry-damaged")
    cache.save(key, sdk, PRODUCTS)
    blob = blob_file(storage, url, key, "products.zst")
    good = blob.read_bytes()
    damaged = bytearray(good)
    damaged[100] ^= 0x01
    blob.write_bytes(bytes(damaged))
    assert cache.restore(key, tmp_path / "fresh") is None
    assert "refused entry" in reports[-1] and "damaged" in reports[-1]  # (a file or the blob: whichever shows first)
    blob.write_bytes(good[:-1000])
    assert cache.restore(key, tmp_path / "fresh") is None
    assert len(reports) == 2
    assert tree(tmp_path / "fresh") == {}
    blob.write_bytes(good)
    assert cache.restore(key, tmp_path / "fresh") is not None


@pytest.mark.registry
def test_an_entry_streamed_from_a_registry_mirror_is_kept_by_the_store(registry, sdk, tmp_path, reports):
    """Restored straight from the blob stream (no scratch copy), and copied to the store as it is read."""
    url, _ = registry
    key = key_of("registry-to-dir")
    assert Cache.from_urls(store=url).save(key, sdk, PRODUCTS) == [url]
    cache = Cache.from_urls([url], f"dir:{tmp_path / 'store'}", scratch=tmp_path / "scratch",
                            report=reports.append, trust="any")
    assert cache.restore(key, tmp_path / "fresh").url == url
    assert sorted(p.name for p in entry_dir(tmp_path / "store", key).iterdir()) == ["index.json", "products.zst"]
    assert not list((tmp_path / "scratch").iterdir())
    again = Cache.from_urls(store=f"dir:{tmp_path / 'store'}", report=reports.append)
    assert again.restore(key, tmp_path / "fresh2").url == f"dir:{tmp_path / 'store'}"
    assert tree(tmp_path / "fresh2") == tree(sdk) and reports == []


@pytest.mark.registry
def test_unreachable_registry_is_reported_not_fatal(sdk, tmp_path, reports):
    url = f"oci://127.0.0.1:{free_port()}/rk3576/cache"
    cache = Cache.from_urls(store=url, scratch=tmp_path / "scratch", report=reports.append)
    started = time.monotonic()
    assert cache.where(key_of()) is None
    assert cache.save(key_of(), sdk, PRODUCTS) == []
    assert cache.restore(key_of(), tmp_path / "fresh") is None
    assert time.monotonic() - started < 15
    assert len(reports) == 1, reports  # reported once, then left alone for the run
    assert "could not look up" in reports[0] and "unreachable" in reports[0] and "not using it again" in reports[0]


def test_restore_or_build_stores_what_the_step_wrote_and_restores_it(tmp_path, reports):
    """The next steps need more than the declared products (lunch's defconfig, u-boot's parameter.txt)."""
    cache = Cache.from_urls(store=str(tmp_path / "cache"), scratch=tmp_path / "scratch", report=reports.append)
    first = make_sdk(tmp_path / "first")
    (first / "output" / "firmware" / "parameter.txt").unlink()
    builds = []

    def build_in(root):
        def build():
            builds.append(root)
            (root / "output" / "firmware" / "parameter.txt").write_text("CMDLINE: built\n")
            (root / "output" / "firmware" / "MiniLoaderAll.bin").write_bytes(b"LDR\n")
            (root / "device" / "rockchip" / ".chips" / "rk3576").mkdir(parents=True, exist_ok=True)
            (root / "device" / "rockchip" / ".chip").symlink_to(".chips/rk3576")  # what lunch selects
            (root / "output" / "sessions" / "2026-11-28_10-00-00").mkdir(parents=True)  # build.sh's logs
            (root / "output" / "sessions" / "2026-11-28_10-00-00" / "build.log").write_text("log\n")
            (root / "output" / "log").symlink_to("sessions")
        return build

    key = key_of()
    record = buildcache.restore_or_build(cache, key, first, build_in(first), products=["rockdev/MiniLoaderAll.bin"],
                                         meta={"step": "u-boot"})
    assert record == {"result": "built", "key": key, "stored_to": [f"dir:{tmp_path / 'cache'}"]}
    stored = json.loads((entry_dir(tmp_path / "cache", key) / "index.json").read_text())
    assert sorted(f["path"] for f in stored["files"]) == ["output/firmware/MiniLoaderAll.bin",
                                                          "output/firmware/parameter.txt"]
    assert {link["path"] for link in stored["links"]} == {"rockdev", "device/rockchip/.chip"}

    second = tmp_path / "second"
    (second / "output").mkdir(parents=True)
    (second / "rockdev").symlink_to("output/firmware")
    record = buildcache.restore_or_build(cache, key, second, build_in(second), products=["rockdev/MiniLoaderAll.bin"])
    assert record == {"result": "restored", "key": key, "from": f"dir:{tmp_path / 'cache'}"}
    assert builds == [first]
    assert (second / "rockdev" / "parameter.txt").read_text() == "CMDLINE: built\n"
    assert os.readlink(second / "device" / "rockchip" / ".chip") == ".chips/rk3576"

    # No cache (--no-cache): always built, nothing stored.
    third = make_sdk(tmp_path / "third")
    assert buildcache.restore_or_build(None, key, third, build_in(third), products=[]) == {
        "result": "built", "key": key, "stored_to": []}
    assert reports == []


@pytest.mark.registry
def test_registry_credentials_from_the_environment_or_the_docker_config(sdk, tmp_path, monkeypatch, reports):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # glibc's bcrypt, as htpasswd writes it

        line = f"ci:{crypt.crypt('t0p-s3cret', crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))}\n"
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.docker/config.json
    key = key_of("registry-auth")
    with serve_registry(tmp_path, htpasswd=line) as (url, _):
        anonymous = Cache.from_urls(store=url, scratch=tmp_path / "s1", report=reports.append)
        assert anonymous.save(key, sdk, PRODUCTS) == []
        assert len(reports) == 1 and f"run `docker login {url.split('/')[2]}`" in reports[0]

        monkeypatch.setenv(buildcache.USER_ENV, "ci")
        monkeypatch.setenv(buildcache.PASSWORD_ENV, "t0p-s3cret")
        with_login = Cache.from_urls(store=url, scratch=tmp_path / "s2", report=reports.append)
        assert with_login.save(key, sdk, PRODUCTS) == [url]

        monkeypatch.delenv(buildcache.USER_ENV)
        monkeypatch.delenv(buildcache.PASSWORD_ENV)
        docker_config = tmp_path / "docker"
        docker_config.mkdir()
        host = url.removeprefix("oci://").split("/", 1)[0]
        auth = base64.b64encode(b"ci:t0p-s3cret").decode()
        (docker_config / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
        monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))
        cache = Cache.from_urls([url], scratch=tmp_path / "s3", report=reports.append, trust="any")
        assert cache.restore(key, tmp_path / "fresh").url == url
    assert tree(tmp_path / "fresh") == tree(sdk)
    assert not any("t0p-s3cret" in r or auth in r for r in reports)


def test_restore_keeps_identical_files_and_links_to_directories_stay_links(sdk, tmp_path):
    (sdk / "device" / "rockchip" / ".chips" / "rk3576").mkdir(parents=True)
    (sdk / "device" / "rockchip" / ".chips" / "rk3576" / "parameter.txt").write_text("SDK source\n")
    (sdk / "device" / "rockchip" / ".chip").symlink_to(".chips/rk3576")
    found = buildcache.collect(sdk, ["device/rockchip/.chip", "rockdev", "rockdev/parameter.txt"])
    assert found.links["device/rockchip/.chip"] == ".chips/rk3576"
    assert sorted(found.files) == ["output/firmware/parameter.txt"]  # not the chip's sources

    key = key_of()
    buildcache.pack(sdk, PRODUCTS, tmp_path / "e", key=key)
    fresh = make_sdk(tmp_path / "fresh", uboot=b"an older u-boot\n")
    os.utime(fresh / "output" / "firmware" / "parameter.txt", (1000, 1000))
    buildcache.restore(tmp_path / "e", fresh, key=key)
    assert (fresh / "output" / "firmware" / "parameter.txt").stat().st_mtime == 1000  # same bytes: untouched
    assert (fresh / "u-boot" / "uboot.img").read_bytes() == b"u-boot image\n"


def test_the_sdk_path_in_text_files_and_links_is_relocated(tmp_path):
    """lunch writes the SDK's absolute path (output/.config, output/defconfig): restored, it names the new SDK."""
    sdk = make_sdk(tmp_path / "machine-a" / "sdk")
    defconfig = sdk / "device" / "rockchip" / ".chips" / "rk3576" / "rockchip_rk3576_myd_lr3576_defconfig"
    defconfig.parent.mkdir(parents=True)
    defconfig.write_text("RK_KERNEL_CFG=rockchip_linux_defconfig\n")
    (sdk / "output" / ".config").write_text(f'RK_DEFCONFIG="{defconfig}"\nRK_OLD="{sdk}2/x" RK_CHIP="rk3576"\n')
    (sdk / "output" / "defconfig").symlink_to(defconfig)
    key = key_of("lunch")
    index = buildcache.pack(sdk, ["output/.config", "output/defconfig"], tmp_path / "e", key=key)
    assert f"{sdk}/".encode() not in zstandard.ZstdDecompressor().decompressobj().decompress(
        (tmp_path / "e" / "products.zst").read_bytes())
    assert [f["path"] for f in index["files"] if f.get("relocate")] == ["output/.config"]
    assert index["links"][0]["target"].startswith("@@RK3576_SDK_ROOT@@/device/rockchip/")

    other = make_sdk(tmp_path / "machine-b" / "sdk")
    buildcache.restore(tmp_path / "e", other, key=key)
    moved = other / "device" / "rockchip" / ".chips" / "rk3576" / "rockchip_rk3576_myd_lr3576_defconfig"
    assert (other / "output" / ".config").read_text() == f'RK_DEFCONFIG="{moved}"\nRK_OLD="{sdk}2/x" RK_CHIP="rk3576"\n'
    assert os.readlink(other / "output" / "defconfig") == str(moved)


def test_a_refused_entry_means_the_step_builds_and_the_store_gets_a_good_one(sdk, tmp_path, reports):
    cache = Cache.from_urls(store=str(tmp_path / "cache"), scratch=tmp_path / "scratch", report=reports.append)
    key = key_of()
    cache.save(key, sdk, PRODUCTS)
    archive = entry_dir(tmp_path / "cache", key) / "products.zst"
    archive.write_bytes(archive.read_bytes()[:100])  # cut short
    fresh = make_sdk(tmp_path / "fresh", uboot=b"built here\n")
    builds = []
    record = buildcache.restore_or_build(cache, key, fresh, lambda: builds.append(1), products=PRODUCTS)
    assert builds == [1] and record["result"] == "built" and record["stored_to"] == [f"dir:{tmp_path / 'cache'}"]
    assert "cut short" in reports[0]
    again = Cache.from_urls(store=str(tmp_path / "cache"), scratch=tmp_path / "scratch", report=reports.append)
    assert again.restore(key, tmp_path / "third").url == f"dir:{tmp_path / 'cache'}"
    assert (tmp_path / "third" / "u-boot" / "uboot.img").read_bytes() == b"built here\n"
    assert len(reports) == 1


# --------------------------------------------------------------------------- real-SDK scale: sparse images, old entries


def sparse_file(path: Path, size: int, data: list[tuple[int, bytes]]) -> Path:
    """A file of `size` bytes that is all holes but for `data` [(offset, bytes)]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(size)
        for offset, chunk in data:
            fh.seek(offset)
            fh.write(chunk)
    return path


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def test_a_sparse_image_keeps_its_holes_and_its_bytes(tmp_path, reports):
    """Holes are neither stored nor written back: the restored image takes what the source takes."""
    sdk = tmp_path / "sdk"
    image = sparse_file(sdk / "output" / "firmware" / "rootfs.img", 256 << 20,
                        [(8 << 20, os.urandom(1 << 20)), (100 << 20, os.urandom(2 << 20))])
    # A real filesystem image too (made as build.sh makes rootfs.img): mostly holes, some data.
    files = tmp_path / "rootfs"
    (files / "usr" / "lib").mkdir(parents=True)
    (files / "usr" / "lib" / "librknnrt.so").write_bytes(os.urandom(3 << 20))
    (files / "etc").mkdir()
    (files / "etc" / "hostname").write_text("rk3576\n")
    ext4 = sdk / "output" / "firmware" / "oem.img"
    sparse_file(ext4, 64 << 20, [])
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(files), str(ext4)], check=True)
    assert allocated(image) == 3 << 20 and allocated(ext4) < 16 << 20

    cache = Cache.from_urls(store=str(tmp_path / "cache"), report=reports.append)
    key = key_of("ubuntu")
    cache.save(key, sdk, ["output/firmware"])
    index = json.loads((entry_dir(tmp_path / "cache", key) / "index.json").read_text())
    item = next(f for f in index["files"] if f["path"] == "output/firmware/rootfs.img")
    assert item["extents"] == [[8 << 20, 1 << 20], [100 << 20, 2 << 20]]
    assert item["sha256"] == sha256_file(image) and item["size"] == 256 << 20  # the full content's digest
    archive = entry_dir(tmp_path / "cache", key) / "products.zst"
    assert archive.stat().st_size < 8 << 20  # 6 MiB of data, 320 MiB with holes

    fresh = tmp_path / "fresh"
    assert cache.restore(key, fresh).url == f"dir:{tmp_path / 'cache'}"
    for source in (image, ext4):
        restored = fresh / source.relative_to(sdk)
        assert restored.stat().st_size == source.stat().st_size
        assert sha256_file(restored) == sha256_file(source)  # byte-identical
        assert restored.read_bytes() == source.read_bytes()
        assert allocated(restored) <= allocated(source) * 1.05  # holes kept
    check = subprocess.run(["e2fsck", "-fn", str(fresh / "output" / "firmware" / "oem.img")], capture_output=True)
    assert check.returncode == 0, check.stdout
    assert reports == []


def write_format_1(entry: Path, root: Path, paths: list[str], key: str) -> None:
    """An entry as the previous version wrote it: a gzip'd tar of whole files, index format 1."""
    found = buildcache.collect(root, paths)
    entry.mkdir(parents=True)
    files = []
    with tarfile.open(entry / "products.tar.gz", "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for rel in sorted(found.files):
            data = Path(found.files[rel]).read_bytes()
            info = tarfile.TarInfo(rel)
            info.size, info.mode = len(data), 0o755 if os.access(found.files[rel], os.X_OK) else 0o644
            tar.addfile(info, io.BytesIO(data))
            files.append({"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                          "mode": info.mode})
    archive = entry / "products.tar.gz"
    (entry / "index.json").write_text(json.dumps({
        "format": 1, "key": key, "meta": {}, "files": files,
        "links": [{"path": p, "target": t} for p, t in sorted(found.links.items())],
        "archive": {"size": archive.stat().st_size, "sha256": sha256_file(archive)}}, indent=1))


def test_entries_of_the_previous_format_still_restore(sdk, tmp_path, reports):
    key = key_of()
    write_format_1(entry_dir(tmp_path / "cache", key), sdk, PRODUCTS, key)
    cache = Cache.from_urls(store=str(tmp_path / "cache"), report=reports.append)
    assert cache.restore(key, tmp_path / "fresh").url == f"dir:{tmp_path / 'cache'}"
    assert tree(tmp_path / "fresh") == tree(sdk) and reports == []
    # A damaged one is refused and, once the step is built, replaced by an entry of today's format.
    archive = entry_dir(tmp_path / "cache", key) / "products.tar.gz"
    archive.write_bytes(archive.read_bytes()[:-10])
    record = buildcache.restore_or_build(cache, key, sdk, lambda: None, products=PRODUCTS)
    assert record["result"] == "built" and "cut short" in reports[0]
    assert json.loads((entry_dir(tmp_path / "cache", key) / "index.json").read_text())["format"] == 2
    assert not archive.exists()


class FlakyProxy:
    """A loopback HTTP proxy to a registry that fails chosen PATCH requests of an upload:
    `refuse` ones answer 503 unseen by the registry, `drop` ones reach it but lose their answer."""

    def __init__(self, upstream: str):
        self.upstream, self.refuse, self.drop, self.patches = upstream, set(), set(), []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.command == "PATCH":
                    proxy.patches.append(self.headers["Content-Range"])
                    if len(proxy.patches) in proxy.refuse:
                        self.send_response(503)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                answer = requests.request(self.command, proxy.upstream + self.path, data=body, allow_redirects=False,
                                          headers={k: v for k, v in self.headers.items()}, timeout=30)
                if self.command == "PATCH" and len(proxy.patches) in proxy.drop:
                    self.close_connection = True  # the chunk landed; its answer is lost
                    return
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.content)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.registry
def test_registry_upload_goes_in_chunks_and_resumes_where_the_registry_stands(registry, tmp_path, reports):
    url, _ = registry
    host = url.removeprefix("oci://").split("/", 1)[0]
    proxy = FlakyProxy(f"http://{host}")
    try:
        sdk = tmp_path / "sdk"
        (sdk / "output" / "firmware").mkdir(parents=True)
        image = sdk / "output" / "firmware" / "rootfs.img"
        image.write_bytes(os.urandom(5 << 20))  # 5 MiB, incompressible: 6 chunks of 1 MiB
        via_proxy = f"oci://127.0.0.1:{proxy.port}/rk3576/chunked"
        cache = Cache.from_urls(store=via_proxy, scratch=tmp_path / "scratch", report=reports.append)
        cache.backends[0].chunk_size = 1 << 20
        chunks = [f"{n << 20}-{((n + 1) << 20) - 1}" for n in range(5)]

        # The registry refuses the archive's second chunk once: it is sent again, the upload goes on.
        proxy.refuse = {3}
        key = key_of("chunked")
        assert cache.save(key, sdk, ["output/firmware/rootfs.img"]) == [via_proxy] and reports == []
        archive = proxy.patches[1:]  # (the index goes first)
        assert archive[:6] == [chunks[0], chunks[1], chunks[1], chunks[2], chunks[3], chunks[4]]
        assert len(archive) == 7  # and the last, short one

        # An answer lost after the chunk landed: the registry cannot say where the upload stands
        # without the state that answer carried, so the upload starts over, and still lands whole.
        first = image.read_bytes()
        image.write_bytes(os.urandom(5 << 20))  # (the same bytes would not be sent again: the registry has them)
        proxy.patches, proxy.refuse, proxy.drop = [], set(), {4}
        other_key = key_of("chunked-dropped")
        assert cache.save(other_key, sdk, ["output/firmware/rootfs.img"]) == [via_proxy] and reports == []
        assert proxy.patches[1:6] == [chunks[0], chunks[1], chunks[2], chunks[0], chunks[1]]

        reader = Cache.from_urls([url.rsplit("/", 1)[0] + "/chunked"], report=reports.append, trust="any")
        for k, data in ((key, first), (other_key, image.read_bytes())):
            assert reader.restore(k, tmp_path / k) is not None and reports == []
            assert (tmp_path / k / "output" / "firmware" / "rootfs.img").read_bytes() == data
    finally:
        proxy.close()


# --------------------------------------------------------------------------- machines sharing a build cache


@pytest.fixture(scope="module")
def demo_sources(sources):
    """The variables recipes/demo.yaml reads, pointed at the tarballs the `sources` fixture serves."""
    url, checksums, _ = sources
    return {"DEMO_SOURCES_URL": url, "BOARD_KIT": str(find_kit().root), "sdk_sha256": checksums[demo.SDK_TARBALL],
            "drivers": {v: (demo.driver_tarball_name(v), checksums[demo.driver_tarball_name(v)])
                        for v in demo.DRIVER_RELEASES}}


def machine(base: Path, name: str, sources: dict, driver: str, cache: dict):
    """A fresh machine: its own work dir and downloads, the demo recipe (SDK pinned) with `cache`.

    Returns a function running `rk3576-build ARGS` there.
    """
    shutil.rmtree(base / name, ignore_errors=True)
    (base / name).mkdir(parents=True)
    recipe = base / name / "r.yaml"
    recipe.write_text(yaml.safe_dump({"extends": "demo", "workdir": str(base / name / "work"),
                                      "downloads": str(base / name / "downloads"),
                                      "sdk": {"sha256": sources["sdk_sha256"]}, "cache": cache}))
    file, sha256 = sources["drivers"][driver]
    env = {"DEMO_SOURCES_URL": sources["DEMO_SOURCES_URL"], "BOARD_KIT": sources["BOARD_KIT"],
           "DEMO_DRIVER_VERSION": driver, "DEMO_DRIVER_FILE": file, "DEMO_DRIVER_SHA256": sha256}
    return functools.partial(rk, "--recipe", str(recipe), env=env, timeout=1200, keep_settings=True)


def build(rk) -> tuple[dict, bytes]:
    """`run` to the manifest: each step's cache record (built or restored, from where) and update.img."""
    result = rk("run")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    manifest_path = Path(result.args[result.args.index("--recipe") + 1]).parent / "work" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    image = manifest_path.parent / "sdk" / "output" / "update" / "Image" / "update.img"
    return {s["name"]: s["cache"] for s in manifest["steps"]}, image.read_bytes()


def restored(steps: dict) -> dict[str, str]:
    return {name: record["from"] for name, record in steps.items() if record["result"] == "restored"}


def built(steps: dict) -> set[str]:
    return {name for name, record in steps.items() if record["result"] == "built"}


@pytest.mark.docker
@pytest.mark.registry
def test_fresh_work_dirs_after_a_driver_bump_restore_what_the_driver_does_not_touch(tmp_path, demo_sources, registry):
    """Machines share a cache: each restores lunch, u-boot and ubuntu and builds what the driver changes.

    The team signs what it stores and takes only what its key signed."""
    shared, oci = f"dir:{tmp_path / 'shared-cache'}", registry[0] + "-scenario"
    key = tmp_path / "keys" / "team"
    key.parent.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    team = {"signing_key": str(key), "trusted": [f"{key}.pub"]}
    # A: a full build of 0.9.8 that stores every step in a shared directory.
    a, full_image = build(machine(tmp_path, "a", demo_sources, "0.9.8", {"store": shared, **team}))
    assert restored(a) == {} and all(r["stored_to"] == [shared] for r in a.values())

    # B, fresh, driver 0.9.6: the directory as a read-only mirror, the registry as its store.
    b, _ = build(machine(tmp_path, "b", demo_sources, "0.9.6", {"mirrors": [shared], "store": oci, **team}))
    assert restored(b) == {"lunch": shared, "u-boot": shared, "ubuntu": shared}
    assert built(b) == {"kernel", "module", "updateimg"}

    # A again from nothing, 0.9.8, with only the registry (B stored its steps and the mirror's there):
    # its driver is not the registry's, and its update.img is the full build's, byte for byte.
    # Before anything runs, plan says which steps the cache restores and info shows a step's key.
    rk = machine(tmp_path, "a", demo_sources, "0.9.8", {"store": oci, "signing_key": str(key)})
    plan = rk("plan").stdout
    assert re.search(rf"RESTORE +step:ubuntu \[.*\]: from {oci}", plan), plan
    assert re.search(r"RUN +step:kernel", plan) and re.search(r"RESTORE +step:lunch", plan)
    assert "RESTORE" not in rk("--no-cache", "plan").stdout
    info = rk("info", "step:u-boot").stdout
    assert f"'cache_key': '{b['u-boot']['key']}'" in info and "'builder':" in info, info
    a2, image = build(rk)
    assert restored(a2) == {"lunch": oci, "u-boot": oci, "ubuntu": oci}
    assert built(a2) == {"kernel", "module", "updateimg"}
    assert image == full_image
