"""The restore gate: where an entry's files and links may go under the SDK root, and putting
them there all or nothing.

Every path is resolved the way the kernel would, through the links already in the tree and
the ones the entry brings, before anything is created: a path or a link target that leaves
the SDK root is refused, and so is a path under a link of the same entry (packing never makes
one). The legitimate links are the SDK's own: relative links that stay inside the root
(`rockdev -> output/firmware`, `output/firmware/uboot.img -> ../../u-boot/uboot.img`,
`device/rockchip/.chip -> .chips/rk3576`) and absolute links into the SDK, which an entry
stores relative to a placeholder for the root (lunch's `output/defconfig`).

Files are written and verified in a staging directory inside the root first; only then are
missing directories made (one level at a time, each checked) and everything moved into place,
with a journal that undoes it all if one move fails.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import stat
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rk3576_build.build.cache.errors import CacheEntryError, CannotPlace

MAX_LINK_HOPS = 40  # as the kernel's ELOOP limit
STAGING_PREFIX = ".rk3576-cache-restore."


class Tree:
    """Resolves paths under `root` through the links on disk and `overlay` (rel path -> target)."""

    def __init__(self, root: Path, overlay: Mapping[str, str] | None = None):
        self.root = os.path.abspath(root)
        self.spellings = sorted({self.root, os.path.realpath(root)}, key=len, reverse=True)
        self.overlay = dict(overlay or {})

    def inside(self, target: str) -> str | None:
        """An absolute path as a path relative to the root ('' for the root); None when outside it."""
        norm = posixpath.normpath(target)
        for spelling in self.spellings:
            if norm == spelling:
                return ""
            if norm.startswith(spelling.rstrip("/") + "/"):
                return norm[len(spelling.rstrip("/")) + 1:]
        return None

    def resolve(self, rel: str, *, follow_last: bool = True) -> str:
        """The link-free path relative to the root that `rel` leads to ('' for the root itself).

        Raises CacheEntryError when it leaves the root, loops, or runs through a file.
        """
        stack = [p for p in reversed(rel.split("/"))]
        done: list[str] = []
        hops = 0
        while stack:
            name = stack.pop()
            if name in ("", "."):
                continue
            if name == "..":
                if not done:
                    raise CacheEntryError(f"{rel} leads outside the SDK")
                done.pop()
                continue
            current = "/".join([*done, name])
            target = self.overlay.get(current)
            path = os.path.join(self.root, current)
            if target is None:
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    st = None
                if st is not None and stat.S_ISLNK(st.st_mode):
                    target = os.readlink(path)
                elif st is not None and not stat.S_ISDIR(st.st_mode) and stack:
                    raise CacheEntryError(f"{rel}: {current} is a file, not a directory")
            if target is None or (not stack and not follow_last):
                done.append(name)
                continue
            hops += 1
            if hops > MAX_LINK_HOPS:
                raise CacheEntryError(f"{rel}: too many levels of links")
            if target.startswith("/"):
                inner = self.inside(target)
                if inner is None:
                    raise CacheEntryError(f"{rel} leads outside the SDK (through {current} -> {target})")
                done = []
                stack.extend(reversed(inner.split("/")))
            else:
                stack.extend(reversed(target.split("/")))
        return "/".join(done)


@dataclass
class Plan:
    """Where each of an entry's files and links goes (link-free paths relative to the root)."""

    files: list[tuple[str, dict]] = field(default_factory=list)   # (dest, index item)
    links: list[tuple[str, str]] = field(default_factory=list)    # (dest, target as it will be written)


def plan(root: Path, files: list[dict], links: list[tuple[str, str]]) -> Plan:
    """Check where `files` (index items) and `links` ((path, target), targets already relocated)
    would go under `root`, creating nothing; CacheEntryError names the first refusal."""
    link_paths = {path for path, _ in links}
    clear: set[str] = set()  # directories known to hold none of the entry's links on the way up
    for path in [*(item["path"] for item in files), *link_paths]:
        parent = posixpath.dirname(path)
        while parent and parent not in clear:
            if parent in link_paths:
                raise CacheEntryError(f"{path} lies under {parent}, a link the same entry brings")
            clear.add(parent)
            parent = posixpath.dirname(parent)
    on_disk = Tree(root)
    out = Plan()
    dests: dict[str, str] = {}
    parents: dict[str, str] = {"": ""}

    def place(path: str) -> str:
        parent = posixpath.dirname(path)
        if parent not in parents:
            parents[parent] = on_disk.resolve(parent)
        dest = posixpath.join(parents[parent], posixpath.basename(path))
        if dest in dests:
            raise CacheEntryError(f"{path} and {dests[dest]} are the same place")
        if posixpath.basename(dest).startswith(STAGING_PREFIX):
            raise CacheEntryError(f"{path}: a name the restore itself uses")
        dests[dest] = path
        return dest

    for item in files:
        dest = place(item["path"])
        full = os.path.join(on_disk.root, dest)
        if os.path.isdir(full) and not os.path.islink(full):
            raise CacheEntryError(f"cannot restore {item['path']}: a directory is in the way")
        out.files.append((dest, item))
    overlay = {}
    for path, target in links:
        dest = place(path)
        full = os.path.join(on_disk.root, dest)
        if os.path.isdir(full) and not os.path.islink(full) and any(os.scandir(full)):
            raise CacheEntryError(f"cannot restore the link {path}: a directory with files is in the way")
        overlay[dest] = target
        out.links.append((dest, target))
    clear = set()
    for dest in dests:  # nothing goes under another of the entry's own files or links
        parent = posixpath.dirname(dest)
        while parent and parent not in clear:
            if parent in dests:
                raise CacheEntryError(f"{dests[dest]} lies under {dests[parent]}, which the same entry brings")
            clear.add(parent)
            parent = posixpath.dirname(parent)
    tree = Tree(root, overlay)
    for dest, target in out.links:
        if not target or "\0" in target:
            raise CacheEntryError(f"the link {dests[dest]} has no target")
        if target.startswith("/"):
            where = tree.inside(target)
            if where is None:
                raise CacheEntryError(f"the link {dests[dest]} points outside the SDK ({target})")
        else:
            where = posixpath.join(posixpath.dirname(dest), target)
        try:
            resolved = tree.resolve(where)
        except CacheEntryError as exc:
            raise CacheEntryError(f"the link {dests[dest]} -> {target} is refused: {exc}") from None
        if resolved == "":
            raise CacheEntryError(f"the link {dests[dest]} points at the SDK root itself")
    return out


class Staging:
    """A directory inside the root where files are written and checked before they are placed.

    As a context manager it is removed on exit, with whatever is still in it; `commit` moves
    everything into place or, if one move fails, undoes the others.
    """

    def __init__(self, root: Path):
        self.root = Path(os.path.abspath(root))
        self.made_root = not self.root.exists()
        if self.made_root:
            self.root.mkdir(parents=True)
        self.path = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.root))
        self._count = 0
        self._done = False
        self._dirs: set[str] = set()  # directories known to be there (made or checked)

    def new(self, prefix: str = "f") -> str:
        """A new path in staging."""
        self._count += 1
        return f"{self.path}/{prefix}{self._count}"

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self.made_root and not self._done:
            with contextlib.suppress(OSError):
                self.root.rmdir()

    def _make_parents(self, dest: str, made: list[str]) -> None:
        """Make the directories `dest` (link-free, relative) needs, one level at a time, each checked."""
        parent = posixpath.dirname(dest)
        if not parent or parent in self._dirs:
            return
        self._make_parents(parent, made)
        path = os.path.join(self.root, parent)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, 0o755)
            made.append(path)
        else:
            if not stat.S_ISDIR(st.st_mode):  # planned link-free: the tree changed under the restore
                raise CacheEntryError(f"{dest}: {parent} is no longer a directory")
        self._dirs.add(parent)

    def _backup(self, dest: str) -> str | None:
        if not os.path.lexists(dest):
            return None
        backup = self.new("old")
        os.link(dest, backup, follow_symlinks=False)
        return backup

    def commit(self, files: list[tuple[str, str, dict]], links: list[tuple[str, str]],
               same: Callable[[str, os.stat_result, dict], bool]) -> None:
        """Move staged `files` ((dest, staged path, item)) and `links` ((dest, target)) into place.

        `same(dest_path, its lstat, item)` says an existing file already holds the item (kept as it is).
        """
        made: list[str] = []
        journal: list[tuple[str, str | None, bool]] = []  # (dest, backup, was an empty directory)
        root = str(self.root)
        try:
            for dest, staged, item in files:
                self._make_parents(dest, made)
                path = os.path.join(root, dest)
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    st = None
                if st is not None and same(path, st, item):
                    continue
                journal.append((path, self._backup(path) if st is not None else None, False))
                os.replace(staged, path)
            for dest, target in links:
                self._make_parents(dest, made)
                path = os.path.join(root, dest)
                if os.path.islink(path) and os.readlink(path) == target:
                    continue
                staged = self.new("l")
                os.symlink(target, staged)
                emptied = os.path.isdir(path) and not os.path.islink(path)
                journal.append((path, None if emptied else self._backup(path), emptied))
                if emptied:
                    os.rmdir(path)
                os.replace(staged, path)
        except BaseException as exc:
            for path, backup, emptied in reversed(journal):  # undo, as far as the tree lets us
                with contextlib.suppress(OSError):
                    if backup is not None:
                        os.replace(backup, path)
                    else:
                        if os.path.lexists(path):
                            os.unlink(path)
                        if emptied:
                            os.mkdir(path)
            for directory in reversed(made):
                with contextlib.suppress(OSError):
                    os.rmdir(directory)
            if isinstance(exc, OSError):
                raise CannotPlace(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from exc
            raise
        self._done = True
