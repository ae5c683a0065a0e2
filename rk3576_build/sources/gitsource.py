"""A git source pinned to a commit: fetched into a bare mirror in the download cache, its tree written out.

The mirror (`<downloads>/git/<name>-<hash of the URL>.git`) keeps what was fetched, so a second
build, or another commit of the same repository, fetches only what is missing, and `offline` works
once the commit is there. The commit is asked for by its id first (git's protocol v2 serves any
commit that way, a local clone too), then, for a server that refuses, every branch and tag. The tree
is written with `read-tree` and `checkout-index` into a fresh directory: no repository, no hooks, no
attributes of the user's, the same bytes for the same commit. Git runs as a command (the kernel
tree's git library stays in kernel/tree.py); its environment is core/patches.py's.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

from rk3576_build.core.errors import UserError
from rk3576_build.core.patches import isolated_env, safe_config
from rk3576_build.core.text import redact_url
from rk3576_build.sources.slots import cache_lock

COMMIT = re.compile(r"[0-9a-f]{40}")
ALL_REFS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")


def mirror_path(downloads_dir: Path, url: str) -> Path:
    """The bare mirror of `url` in the download cache (credentials never part of its name)."""
    shown = redact_url(url)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(shown.rstrip("/")).name.removesuffix(".git")).strip("-.") or "repo"
    return Path(downloads_dir) / "git" / f"{stem}-{hashlib.sha256(shown.encode()).hexdigest()[:16]}.git"


class _Mirror:
    """git in one bare mirror."""

    def __init__(self, path: Path, what: str):
        self.path, self.what = path, what

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(["git", *safe_config(self.path), *args], env=env or isolated_env(self.path),
                                  capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise UserError("git is not installed: install it (apt-get install git)") from None

    def check(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = self.run(*args, env=env)
        if done.returncode != 0:
            raise UserError(f"{self.what}: git {args[0]} failed in {self.path}: {_last_line(done)}; check that "
                            "the download cache is writable and the disk is not full")
        return done.stdout

    def has(self, commit: str) -> bool:
        return self.run("cat-file", "-e", f"{commit}^{{commit}}").returncode == 0


def checkout(url: str, commit: str, dest: Path, *, downloads_dir: Path, offline: bool = False,
             what: str = "git source") -> Path:
    """The tree of `commit` of the repository at `url` (a URL or a local clone) in `dest`, replacing what
    was there; fetched into the mirror only when it lacks the commit. One UserError line naming the
    repository (without credentials) and what to do when it cannot be had."""
    if not COMMIT.fullmatch(commit):
        raise UserError(f"{what}: commit {commit!r} is not a full commit id (40 lowercase hex digits)")
    shown = redact_url(url)
    mirror = _Mirror(mirror_path(downloads_dir, url), what)
    with cache_lock(mirror.path):
        if not (mirror.path / "HEAD").exists():
            mirror.path.mkdir(parents=True, exist_ok=True)
            mirror.check("init", "-q", "--bare", "--template=")
        if not mirror.has(commit):
            if offline:
                raise UserError(f"{what}: commit {commit[:12]} of {shown} is not in the download cache "
                                f"({mirror.path}) and the build is offline: run once online (or without "
                                "RK3576_OFFLINE) to fetch it")
            _fetch(mirror, url, commit, shown, what)
        _write_tree(mirror, commit, Path(dest))
    return Path(dest)


def _fetch(mirror: _Mirror, url: str, commit: str, shown: str, what: str) -> None:
    """The commit by its id, else every branch and tag (a server that serves advertised refs only)."""
    by_id = mirror.run("fetch", "-q", "--no-tags", "--no-write-fetch-head", url, commit)
    if mirror.has(commit):
        return
    everything = mirror.run("fetch", "-q", "--no-write-fetch-head", url, *ALL_REFS)
    if mirror.has(commit):
        return
    if everything.returncode != 0:
        reason = _last_line(everything).replace(url, shown)
        raise UserError(f"{what}: cannot fetch {shown}: {reason}; check the URL (or the clone's path), the "
                        "network and your access to it")
    reason = _last_line(by_id).replace(url, shown) if by_id.returncode != 0 else "not found"
    raise UserError(f"{what}: {shown} has no commit {commit} ({reason}): fetch it into that repository "
                    "(`git fetch --tags` in a clone), or fix the commit in the recipe")


def _write_tree(mirror: _Mirror, commit: str, dest: Path) -> None:
    """The commit's files in `dest` (replaced as a whole, never half written)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-") as tmp:
        tree = Path(tmp) / "tree"
        env = isolated_env(mirror.path, work_tree=tree, index=Path(tmp) / "index")
        mirror.check("read-tree", commit, env=env)
        tree.mkdir()
        mirror.check("checkout-index", "-a", "-f", f"--prefix={tree}/", env=env)
        if dest.exists() or dest.is_symlink():
            old = Path(tmp) / "old"
            os.replace(dest, old)
        os.replace(tree, dest)


def _last_line(done: subprocess.CompletedProcess) -> str:
    """git's reason: its first fatal/error line (the advice after it says less), else its last line."""
    lines = [line.strip() for line in (done.stderr or done.stdout or "").splitlines() if line.strip()]
    said = [line for line in lines if line.startswith(("fatal: ", "error: "))]
    line = said[0] if said else lines[-1] if lines else f"exit {done.returncode}"
    return line.removeprefix("fatal: ").removeprefix("error: ")
