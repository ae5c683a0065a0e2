"""Shared plumbing of the build cache's tests and bench: a small SDK output, a tree listing,
keys, and a Docker Distribution registry on loopback."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import requests
import zstandard

from rk3576_build.build.cache import step_key

KEY = "a" * 64  # the key of entries written by hand
PRODUCTS = ["rockdev/uboot.img", "output/firmware/parameter.txt", "output/modules"]


def make_sdk(root: Path, uboot: bytes = b"u-boot image\n") -> Path:
    """A small SDK output in the real layout: rockdev -> output/firmware, firmware links into u-boot/."""
    (root / "output" / "firmware").mkdir(parents=True)
    (root / "output" / "modules").mkdir()
    (root / "u-boot").mkdir()
    (root / "rockdev").symlink_to("output/firmware")
    (root / "u-boot" / "uboot.img").write_bytes(uboot)
    (root / "output" / "firmware" / "uboot.img").symlink_to("../../u-boot/uboot.img")
    (root / "output" / "firmware" / "parameter.txt").write_text("CMDLINE: mtdparts=...\n")
    (root / "output" / "modules" / "rknpu.ko").write_bytes(os.urandom(70_000))
    (root / "output" / "modules" / "mkmodules.sh").write_text("#!/bin/sh\n")
    (root / "output" / "modules" / "mkmodules.sh").chmod(0o755)
    return root


def tree(root: Path) -> dict[str, object]:
    """Path -> ('link', target) or (bytes, executable) for everything under root."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_file():
            out[rel] = (path.read_bytes(), bool(path.stat().st_mode & 0o111))
    return out


def key_of(name: str = "u-boot") -> str:
    return step_key({"step": {"name": name}, "builder": "c0ffee"}).key


def entry_dir(cache_dir: Path, key: str) -> Path:
    return cache_dir / key[:2] / key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_registry(base: Path, htpasswd: str | None = None):
    """A Docker Distribution registry on loopback, storage under `base`; yields (url, storage)."""
    port = free_port()
    auth = ""
    if htpasswd:
        (base / "htpasswd").write_text(htpasswd)
        auth = f"auth:\n  htpasswd:\n    realm: rk3576-tests\n    path: {base / 'htpasswd'}\n"
    config = base / "config.yml"
    config.write_text(f"""version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {base / 'data'}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: rk3576-build-tests
{auth}""")
    log = open(base / "registry.log", "wb")
    proc = subprocess.Popen([shutil.which("docker-registry") or "/usr/bin/docker-registry", "serve", str(config)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code in (200, 401):
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not start: {(base / 'registry.log').read_text()}")
            time.sleep(0.1)
        yield f"oci://127.0.0.1:{port}/rk3576/cache", base / "data"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def blob_file(storage: Path, url: str, key: str, name: str) -> Path:
    """The registry's on-disk blob of one file of the entry `key`."""
    host = url.removeprefix("oci://").split("/", 1)[0]
    manifest = requests.get(f"http://{host}/v2/rk3576/cache/manifests/{key}",
                            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}, timeout=5).json()
    digest = next(layer["digest"] for layer in manifest["layers"]
                  if layer["annotations"]["org.opencontainers.image.title"] == name)
    hexd = digest.removeprefix("sha256:")
    return storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_entry(entry: Path, files=(), links=(), *, fmt: int = 2, archive: bytes | None = None,
                edit=None) -> dict:
    """An entry written by hand: `files` [(path, bytes)], `links` [(path, target)]; `archive`
    replaces the archive's bytes and `edit(index)` changes the index before it is written."""
    entry.mkdir(parents=True, exist_ok=True)
    items = [{"path": p, "size": len(b), "sha256": sha(b), "mode": 0o644} for p, b in files]
    if fmt == 2:
        data = archive if archive is not None else zstandard.ZstdCompressor().compress(b"".join(b for _, b in files))
        name, described = "products.zst", {"name": "products.zst", "size": len(data)}
    else:
        data = archive if archive is not None else tar_gz([(p, b) for p, b in files])
        name, described = "products.tar.gz", {"size": len(data), "sha256": sha(data)}
    index = {"format": fmt, "key": KEY, "meta": {}, "files": items,
             "links": [{"path": p, "target": t} for p, t in links], "archive": described}
    if edit:
        edit(index)
    (entry / "index.json").write_text(json.dumps(index))
    (entry / name).write_bytes(data)
    return index


def tar_gz(members) -> bytes:
    """A format-1 archive: members (name, bytes) or (TarInfo, bytes | None)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members:
            info = name if isinstance(name, tarfile.TarInfo) else tarfile.TarInfo(name)
            if data is not None and not isinstance(name, tarfile.TarInfo):
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()
