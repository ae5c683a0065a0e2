"""The sample SDK: a small Rockchip-style source tree standing in for MYIR's MYD-LR3576 SDK.

Used by the tests and the offline demo. Its `build.sh` answers to the same steps
as the vendor one and really cross-builds the overlaid RKNPU driver; the tarball
is byte-for-byte reproducible, so a recipe can pin its sha256.
"""

from __future__ import annotations

import calendar
import gzip
import io
import tarfile
from importlib import resources
from pathlib import Path

from .sample_driver import driver_files

SDK_SOURCE = resources.files("rk3576_build.demo") / "sample" / "sdk"
BOARD_SOURCE = resources.files("rk3576_build.demo") / "sample" / "board"
BOARD_DEST = "device/rockchip/rk3576/board"
PASSWORD_HASH_FILE = f"{BOARD_DEST}/root-password-hash"
# rockdev is a link into output/, as in Rockchip's SDKs.
SYMLINKS = {"rockdev": "output/firmware"}
MTIME = calendar.timegm((2024, 10, 9, 0, 0, 0))


def _walk(node, prefix: str, files: dict[str, bytes]) -> None:
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.name == "__pycache__":
            continue
        rel = f"{prefix}{child.name}"
        if child.is_dir():
            _walk(child, rel + "/", files)
        else:
            files[rel] = child.read_bytes()


def sdk_files(driver_version: str = "0.9.7", root_password_hash: str | None = None) -> dict[str, bytes]:
    """Relative path -> content of every regular file in the sample SDK."""
    files: dict[str, bytes] = {}
    _walk(SDK_SOURCE, "", files)
    _walk(BOARD_SOURCE, f"{BOARD_DEST}/", files)
    for rel, content in driver_files(driver_version).items():
        files[f"kernel/drivers/rknpu/{rel}"] = content
    if root_password_hash is not None:
        if root_password_hash and not root_password_hash.startswith("$"):
            raise ValueError("root_password_hash must be a crypt hash (starting with $), never a password")
        files[PASSWORD_HASH_FILE] = f"{root_password_hash}\n".encode()
    return files


def _mode(rel: str) -> int:
    """Scripts are executable; package data may have lost the bit, so decide by name."""
    name = rel.rsplit("/", 1)[-1]
    if name.endswith(".sh") or name in ("build.sh", "init"):
        return 0o755
    if rel == PASSWORD_HASH_FILE:
        return 0o600
    return 0o644


def write_sample_sdk(dest: Path, *, driver_version: str = "0.9.7", root_password_hash: str | None = None) -> Path:
    """Write the sample SDK tree into `dest` (created); return `dest`."""
    dest = Path(dest)
    for rel, content in sdk_files(driver_version, root_password_hash).items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(_mode(rel))
    for link, target in SYMLINKS.items():
        (dest / link).unlink(missing_ok=True)
        (dest / link).symlink_to(target)
    return dest


def make_sample_sdk_tarball(out: Path, *, driver_version: str = "0.9.7", top: str = "MYD-LR3576-Sample-SDK",
                            root_password_hash: str | None = None) -> Path:
    """Write a reproducible `.tar.gz` of the sample SDK under one top-level directory."""
    files = sdk_files(driver_version, root_password_hash)
    dirs = {top}
    for rel in files:
        parts = rel.split("/")[:-1]
        dirs.update(f"{top}/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(dirs):
            tar.addfile(_info(name + "/", tarfile.DIRTYPE, 0o755))
        for rel in sorted(files):
            info = _info(f"{top}/{rel}", tarfile.REGTYPE, _mode(rel))
            info.size = len(files[rel])
            tar.addfile(info, io.BytesIO(files[rel]))
        for link, target in sorted(SYMLINKS.items()):
            info = _info(f"{top}/{link}", tarfile.SYMTYPE, 0o777)
            info.linkname = target
            tar.addfile(info)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gz:
        gz.write(raw.getvalue())
    return out


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info
