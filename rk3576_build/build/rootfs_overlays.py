"""Recipe `rootfs_overlays`: host trees installed into the SDK and listed in RK_ROOTFS_OVERLAY_DIRS.

Rockchip's build framework applies every directory in `RK_ROOTFS_OVERLAY_DIRS` (paths relative
to the SDK root, read from output/.config) to the root filesystem it builds: an executable
`install.sh` in it runs, otherwise the tree is copied with `--chmod=u=rwX,go=rX`. This module
copies each overlay to `device/rockchip/.rk3576-build/overlays/<name>/`, appends those paths to
the setting in output/.config (never the environment: build.sh stops on RK_* variables there),
and describes each tree file by file (path, mode, sha256) for the stamp and the manifest.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
from pathlib import Path
from typing import Any

from rk3576_build.core.errors import UserError
from rk3576_build.core.files import atomic_write, json_sha256, sha256_file

OVERLAY_ROOT = "device/rockchip/.rk3576-build/overlays"  # relative to the SDK root
SETTING = "RK_ROOTFS_OVERLAY_DIRS"


def sdk_dir(name: str) -> str:
    """Where overlay `name` goes, relative to the SDK root (as RK_ROOTFS_OVERLAY_DIRS lists it)."""
    return f"{OVERLAY_ROOT}/{name}"


def scan(source: Path, known: dict | None = None, *, where: str = "") -> list[dict]:
    """Every entry under `source`, sorted: directories and files with their mode, files with size and
    sha256, links with their target. `known` maps a file's path to [size, mtime_ns, sha256] from an
    earlier scan (reused while size and mtime match; updated in place). UserError when `source` is not
    a directory, or holds a link that leaves it or a device, fifo or socket."""
    where = where or str(source)
    if not source.is_dir():
        raise UserError(f"{where}: {source} is not a directory (it must exist when the build runs)")
    root = source.resolve()
    known = {} if known is None else known
    entries: list[dict[str, Any]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            info = os.lstat(path)
            mode = f"{stat.S_IMODE(info.st_mode):04o}"
            if stat.S_ISLNK(info.st_mode):
                target = os.readlink(path)
                inside = os.path.normpath(os.path.join(os.path.dirname(rel), target))
                if not target.startswith("/") and (inside == ".." or inside.startswith("../")):
                    raise UserError(f"{where}: the link {rel} -> {target} points outside the overlay; "
                                    "make it relative inside the overlay or absolute (a path in the rootfs)")
                entries.append({"path": rel, "type": "link", "target": target})
            elif stat.S_ISDIR(info.st_mode):
                entries.append({"path": rel, "type": "dir", "mode": mode})
            elif stat.S_ISREG(info.st_mode):
                cached = known.get(rel)
                if not cached or cached[:2] != [info.st_size, info.st_mtime_ns]:
                    cached = known[rel] = [info.st_size, info.st_mtime_ns, sha256_file(path)]
                entries.append({"path": rel, "type": "file", "mode": mode, "size": info.st_size,
                                "sha256": cached[2]})
            else:
                raise UserError(f"{where}: {rel} is not a file, directory or link; an overlay holds only those")
    return entries


def digest(entries: list[dict]) -> str:
    """One sha256 over an overlay's entries (what the manifest and a cache key carry)."""
    return json_sha256(entries)


def install(source: Path, dest: Path) -> None:
    """Replace `dest` with a copy of `source` (modes, times and links kept; nothing merged)."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source.resolve(), tmp, symlinks=True)
    if dest.exists() or dest.is_symlink():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def matches(dest: Path, entries: list[dict]) -> bool:
    """Whether the installed copy `dest` still has exactly `entries`. The copy keeps its source's times,
    so a file whose size and mtime are as recorded counts as unchanged (no re-hashing)."""
    known = {}
    for entry in entries:
        if entry["type"] == "file":
            try:
                known[entry["path"]] = [entry["size"], os.lstat(dest / entry["path"]).st_mtime_ns, entry["sha256"]]
            except OSError:
                return False
    try:
        return scan(dest, known) == entries
    except UserError:
        return False


def _value(line: str) -> list[str]:
    raw = line.split("=", 1)[1].strip()
    try:
        words = shlex.split(raw)
    except ValueError:
        words = [raw]
    return " ".join(words).split()


def configured_dirs(config: Path) -> list[str]:
    """The RK_ROOTFS_OVERLAY_DIRS entries in an SDK .config ([] when unset)."""
    for line in config.read_text().splitlines():
        if line.startswith(f"{SETTING}="):
            return _value(line)
    return []


def set_dirs(config: Path, dirs: list[str]) -> bool:
    """Set RK_ROOTFS_OVERLAY_DIRS in `config` to what it lists (the defconfig's own entries, in their
    order, without any from an earlier run of ours) followed by `dirs`. Rewrites the file only when
    that changes it; returns whether it did."""
    lines = config.read_text().splitlines()
    index = next((i for i, line in enumerate(lines) if line.startswith(f"{SETTING}=")), None)
    theirs = [] if index is None else [d for d in _value(lines[index]) if not d.startswith(OVERLAY_ROOT + "/")]
    line = f'{SETTING}="{" ".join(theirs + dirs)}"'
    if index is not None and lines[index] == line:
        return False
    if index is None:
        lines.append(line)
    else:
        lines[index] = line
    atomic_write(config, "\n".join(lines) + "\n", mode=stat.S_IMODE(config.stat().st_mode))
    return True
