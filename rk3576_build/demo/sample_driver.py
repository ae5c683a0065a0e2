"""The sample RKNPU driver: a source tree and a tarball laid out like Rockchip's.

Used by the demo recipe and the tests. The tarball mirrors
`rknpu_driver_0.9.8_20241009.tar.bz2`: one top-level `drivers/rknpu/`, members
owned by zf/nogroup, plain files and directories only, the version in
`include/rknpu_drv.h`. Output is byte-for-byte reproducible, so a recipe can pin
its sha256.
"""

from __future__ import annotations

import bz2
import calendar
import io
import tarfile
import time
from importlib import resources
from pathlib import Path

SOURCE = resources.files("rk3576_build.demo") / "sample" / "rknpu"
HEADER_TEMPLATE = "include/rknpu_drv.h.in"
# What Rockchip's driver dates look like for each version (domain.md).
KNOWN_DATES = {"0.9.6": "20240322", "0.9.7": "20240424", "0.9.8": "20240828"}


def driver_files(version: str, date: str | None = None) -> dict[str, bytes]:
    """Relative path (under drivers/rknpu) -> content, with the version filled in."""
    major, minor, patchlevel = (int(part) for part in version.split("."))
    date = date or KNOWN_DATES.get(version, "20240828")
    files: dict[str, bytes] = {}

    def walk(node, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            rel = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, rel + "/")
            elif rel == HEADER_TEMPLATE:
                text = child.read_text()
                for key, value in (("@DATE@", date), ("@MAJOR@", major),
                                   ("@MINOR@", minor), ("@PATCHLEVEL@", patchlevel)):
                    text = text.replace(key, str(value))
                files["include/rknpu_drv.h"] = text.encode()
            else:
                files[rel] = child.read_bytes()

    walk(SOURCE, "")
    return files


def write_driver_tree(dest: Path, version: str, date: str | None = None,
                      extra: dict[str, bytes] | None = None) -> Path:
    """Write the driver sources into `dest` (which becomes drivers/rknpu)."""
    for rel, content in {**driver_files(version, date), **(extra or {})}.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return dest


def make_driver_tarball(out: Path, version: str, date: str | None = None,
                        extra: dict[str, bytes] | None = None) -> Path:
    """Write a reproducible `.tar.bz2` like Rockchip's driver tarball to `out`."""
    files = {**driver_files(version, date), **(extra or {})}
    mtime = calendar.timegm(time.strptime(date or KNOWN_DATES.get(version, "20240828"), "%Y%m%d"))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        dirs = sorted({"drivers", "drivers/rknpu"} |
                      {f"drivers/rknpu/{Path(rel).parent}" for rel in files if "/" in rel})
        for name in dirs:
            tar.addfile(_info(name + "/", tarfile.DIRTYPE, 0o755, mtime))
        for rel in sorted(files):
            info = _info(f"drivers/rknpu/{rel}", tarfile.REGTYPE, 0o644, mtime)
            info.size = len(files[rel])
            tar.addfile(info, io.BytesIO(files[rel]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(bz2.compress(raw.getvalue(), 9))
    return out


def _info(name: str, kind: bytes, mode: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, mtime
    info.uid, info.gid, info.uname, info.gname = 1000, 65534, "zf", "nogroup"
    return info
