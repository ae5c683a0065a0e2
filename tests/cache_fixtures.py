"""Shared plumbing of the build cache's tests and bench: a small SDK output, a tree listing,
keys, and a Docker Distribution registry on loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import requests

from rk3576_build.build.cache import step_key

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
