"""What a step left in the SDK: cheap before/after snapshots, and the files and links to store."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

# Where build.sh steps leave what later steps read: output/ (rockdev/ links into it) and the chip
# selection links lunch makes in device/rockchip (.chip); plus the SDK root's own files and links.
SNAPSHOT_DIRS = ("output", "device/rockchip")
# build.sh's per-run session logs: never products.
SNAPSHOT_SKIP = ("output/sessions", "output/log")


def snapshot(root: Path, dirs: Iterable[str] = SNAPSHOT_DIRS) -> dict[str, tuple]:
    """Identity (type, size, mtime, inode) of every file and link under `dirs` and at the top of `root`.

    Cheap (stat only): taken before and after a step, it tells what the step wrote, which
    is what the next steps need of it besides its declared products.
    """
    root = Path(root)
    seen: dict[str, tuple] = {}

    def note(path: str, rel: str) -> None:
        st = os.lstat(path)
        seen[rel] = (st.st_mode >> 12, st.st_size, st.st_mtime_ns, st.st_ino)

    if root.is_dir():
        for entry in os.scandir(root):
            if not entry.is_dir(follow_symlinks=False):
                note(entry.path, entry.name)
    for top in dirs:
        base = root / top
        if base.is_symlink() or not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
            dirnames[:] = [d for d in dirnames if f"{rel_dir}/{d}" not in SNAPSHOT_SKIP]
            for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                if f"{rel_dir}/{name}" not in SNAPSHOT_SKIP:
                    note(os.path.join(dirpath, name), f"{rel_dir}/{name}")
    return seen


def changed(before: Mapping[str, tuple], after: Mapping[str, tuple]) -> list[str]:
    """Paths that are new or different in `after` (removed ones are not products)."""
    return sorted(p for p, ident in after.items() if before.get(p) != ident)


@dataclass
class Collected:
    files: dict[str, str]    # rel path -> absolute path of a regular file
    links: dict[str, str]    # rel path -> link target as written


def collect(root: Path, paths: Iterable[str]) -> Collected:
    """The files and links that make up `paths` (relative to `root`).

    A link on the way (`rockdev` -> `output/firmware`, or `output/firmware/uboot.img` ->
    `../../u-boot/uboot.img`) is kept as a link and followed, so its target is kept too;
    a link asked for itself that points to a directory (`device/rockchip/.chip`) stays just
    a link; a directory brings everything under it.
    """
    root = Path(root).resolve()
    base = str(root)
    out = Collected({}, {})
    seen: set[str] = set()
    pending = [clean_rel(p) for p in paths]
    while pending:
        rel = pending.pop()
        if rel in seen:
            continue
        seen.add(rel)
        parts = rel.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            path = os.path.join(base, prefix)
            if not os.path.islink(path):
                continue
            target = os.readlink(path)
            out.links[prefix] = target
            inside = link_dest(root, prefix, target)
            if inside is None:
                if i < len(parts):
                    raise ValueError(f"{rel}: {prefix} links outside the SDK ({target})")
            elif i < len(parts):
                pending.append(posixpath.join(inside, *parts[i:]))
            elif not os.path.isdir(os.path.join(base, inside)):  # a link to a directory (.chip, rockdev) stays a link
                pending.append(inside)
            break
        else:
            path = os.path.join(base, rel)
            if os.path.isfile(path):
                out.files[rel] = path
            elif os.path.isdir(path):
                _walk(base, rel, out, pending)
            else:
                raise FileNotFoundError(f"{rel} does not exist in {root}")
    return out


def _walk(base: str, top: str, out: Collected, pending: list[str]) -> None:
    """Every file under the directory `top` into `out`; links found there go back to `pending`."""
    stack = [top]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(os.path.join(base, rel_dir)) as entries:
            for entry in entries:
                rel = f"{rel_dir}/{entry.name}"
                if entry.is_symlink():
                    pending.append(rel)
                elif entry.is_dir(follow_symlinks=False):
                    stack.append(rel)
                elif entry.is_file(follow_symlinks=False):
                    out.files[rel] = entry.path
                else:
                    raise FileNotFoundError(f"{rel} is neither a file, a directory nor a link")


def link_dest(root: Path, rel: str, target: str) -> str | None:
    """Where a link at `rel` points, relative to `root`; None when outside it."""
    if os.path.isabs(target):
        try:
            joined = Path(os.path.normpath(target)).relative_to(root).as_posix()
        except ValueError:
            return None
    else:
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    if joined in (".", "") or joined == ".." or joined.startswith("../"):
        return None
    return joined


def clean_rel(rel: str) -> str:
    norm = posixpath.normpath(str(rel))
    if not rel or os.path.isabs(rel) or norm in (".", "..") or norm.startswith("../"):
        raise ValueError(f"{rel!r} is not a path inside the SDK")
    return norm

