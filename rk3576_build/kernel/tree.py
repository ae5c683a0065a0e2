"""The kernel tree under git: vendor baseline, RKNPU driver overlay, patch series.

Each state is one commit on BRANCH made with a fixed identity and fixed dates, so
the same baseline, driver and patches always give the same commit shas.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import git

from rk3576_build.core.errors import UserError
from rk3576_build.core.patches import (  # the facts every patched tree shares (the apps' trees too)
    BRANCH,
    commit_message,
    describe_patch,
    isolated_env,
    list_patches,
    safe_config,
)

_log = logging.getLogger(__name__)

BASELINE_TAG = "vendor-baseline"
OVERLAY_TAG = "rknpu-overlay"

__all__ = ["BASELINE_TAG", "BRANCH", "OVERLAY_TAG", "DriverVersion", "apply_patches", "ensure_baseline",
           "list_patches", "overlay_driver", "read_driver_version", "read_kernel_version", "tree_state"]


@dataclass(frozen=True)
class DriverVersion:
    """The RKNPU driver version as its header declares it."""

    major: int
    minor: int
    patchlevel: int
    date: str

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patchlevel}"


def read_driver_version(driver_dir: Path) -> DriverVersion:
    """Parse DRIVER_MAJOR/MINOR/PATCHLEVEL/DATE from <driver_dir>/include/rknpu_drv.h."""
    header = Path(driver_dir) / "include" / "rknpu_drv.h"
    if not header.is_file():
        nested = Path(driver_dir) / "drivers" / "rknpu" / "include" / "rknpu_drv.h"
        hint = (f" (it is at {nested}: point driver.source_dir at drivers/rknpu)"
                if nested.is_file() else " (is this an RKNPU driver tree?)")
        raise UserError(f"RKNPU driver header not found: {header}{hint}")
    text = header.read_text(errors="replace")
    fields = {}
    for key, pattern in (("major", r"DRIVER_MAJOR\s+(\d+)"), ("minor", r"DRIVER_MINOR\s+(\d+)"),
                         ("patchlevel", r"DRIVER_PATCHLEVEL\s+(\d+)"),
                         ("date", r'DRIVER_DATE\s+"([^"]*)"')):
        match = re.search(r"^\s*#\s*define\s+" + pattern, text, re.MULTILINE)
        if match:
            fields[key] = match.group(1)
    missing = [k for k in ("major", "minor", "patchlevel", "date") if k not in fields]
    if missing:
        names = ", ".join("DRIVER_" + k.upper() for k in missing)
        raise UserError(f"cannot read the driver version from {header}: no #define for {names}")
    return DriverVersion(int(fields["major"]), int(fields["minor"]),
                         int(fields["patchlevel"]), fields["date"])


def read_kernel_version(kernel_dir: Path) -> str:
    """The kernel version ("6.1.75") from the top Makefile's VERSION/PATCHLEVEL/SUBLEVEL/EXTRAVERSION."""
    makefile = Path(kernel_dir) / "Makefile"
    if not makefile.is_file():
        raise UserError(f"kernel Makefile not found: {makefile} (is sdk.kernel_dir right?)")
    # The version block is at the very top of the kernel Makefile.
    with makefile.open(errors="replace") as handle:
        head = handle.read(8192)
    values = {}
    for key in ("VERSION", "PATCHLEVEL", "SUBLEVEL", "EXTRAVERSION"):
        match = re.search(rf"^{key}\s*=[ \t]*(\S*)[ \t]*$", head, re.MULTILINE)
        if match:
            values[key] = match.group(1)
    numbers = [values.get(k, "") for k in ("VERSION", "PATCHLEVEL", "SUBLEVEL")]
    if not all(n.isdigit() for n in numbers):
        raise UserError(f"cannot read the kernel version from {makefile}: "
                        "expected numeric VERSION, PATCHLEVEL and SUBLEVEL lines at its top")
    return ".".join(numbers) + values.get("EXTRAVERSION", "")


class _Repo:
    """Runs git in one kernel tree with a fixed identity, dates and safe config."""

    def __init__(self, kernel_dir: Path):
        self.dir = Path(kernel_dir).resolve()
        if not self.dir.is_dir():
            raise UserError(f"kernel tree not found: {self.dir}")
        git_dir = self._git_dir()
        self.git = git.Git(self.dir)
        # Explicit locations, fixed identity and dates, no user or system config (core.patches).
        self.git.update_environment(**isolated_env(git_dir, work_tree=self.dir, index=git_dir / "index"))
        self.config = safe_config(self.dir)

    def _git_dir(self) -> Path:
        dot_git = self.dir / ".git"
        if dot_git.is_file():  # a worktree or submodule: ".git" names the real dir
            text = dot_git.read_text(errors="replace").strip()
            if text.startswith("gitdir:"):
                return (self.dir / text[len("gitdir:"):].strip()).resolve()
        return dot_git

    def is_repo(self) -> bool:
        return (self.dir / ".git").exists()

    def try_run(self, *args: str) -> tuple[int, str, str]:
        """Run git; return (status, stdout, stderr) without raising."""
        try:
            return self.git.execute(["git", *self.config, *args], with_extended_output=True,
                                    with_exceptions=False)
        except git.GitCommandNotFound:
            raise UserError("git is not installed: install it (apt-get install git)") from None

    def run(self, *args: str) -> str:
        """Run git; a failure is reported as a UserError with git's own message."""
        status, out, err = self.try_run(*args)
        if status != 0:
            raise UserError(f"git {args[0]} failed in {self.dir}: {err.strip() or out.strip()}\n"
                            "Check that the kernel tree is writable and the disk is not full.")
        return out

    def rev(self, ref: str) -> str | None:
        status, out, _ = self.try_run("rev-parse", "-q", "--verify", f"{ref}^{{commit}}")
        return out.strip() if status == 0 else None

    def require(self, tag: str, step: str) -> str:
        sha = self.rev(tag) if self.is_repo() else None
        if sha is None:
            raise UserError(f"kernel tree {self.dir} has no '{tag}' tag: run the {step} step first")
        return sha

    def commit(self, message: str, author: str | None = None) -> str:
        args = ["commit", "-q", "--no-verify", "--allow-empty", "-m", message]
        if author:
            args.append(f"--author={author}")
        self.run(*args)
        sha = self.rev("HEAD")
        assert sha is not None  # the commit just made
        return sha

    def tag(self, name: str, sha: str) -> None:
        self.run("update-ref", f"refs/tags/{name}", sha)

    def save_local_changes(self, why: str) -> None:
        """Stash edits and untracked files (not ignored build output) so a reset loses nothing."""
        if not self.run("status", "--porcelain", "--untracked-files=normal").strip():
            return
        self.run("stash", "push", "--include-untracked", "-q", "-m", f"rk3576-build: saved {why}")
        _log.warning(f"the kernel tree {self.dir} had local changes; they are saved as "
                     f"stash@{{0}} (see: git -C {self.dir} stash show -p --include-untracked stash@{{0}})")

    def reset(self, ref: str) -> None:
        """Put BRANCH at `ref` and make the work tree match it (ignored build output stays)."""
        self.run("checkout", "-q", "-f", "-B", BRANCH, ref)
        self.run("clean", "-fdq")


def ensure_baseline(kernel_dir: Path) -> str:
    """Commit the kernel tree as found as BASELINE_TAG on BRANCH; return its sha.

    Idempotent: if the tag exists nothing is done. A plain directory becomes a repo
    whose first commit is the tree as unpacked. A tree that already is a git repo
    (the user's own checkout) keeps its history: its current state, uncommitted
    changes included, is committed on BRANCH and that commit is the baseline.
    Files the tree's own .gitignore marks as generated are not part of it.
    """
    repo = _Repo(kernel_dir)
    if repo.is_repo():
        sha = repo.rev(BASELINE_TAG)
        if sha:
            return sha
        if repo.rev("HEAD"):
            repo.run("checkout", "-q", "-B", BRANCH)
        else:
            repo.run("symbolic-ref", "HEAD", f"refs/heads/{BRANCH}")
    else:
        repo.run("init", "-q", "--template=", f"--initial-branch={BRANCH}")
    repo.run("add", "-A")
    head = repo.rev("HEAD")
    if head and repo.try_run("diff", "--cached", "--quiet", "HEAD")[0] == 0:
        sha = head  # the user's repo was clean: its HEAD is the baseline
    else:
        try:
            title = f"Vendor kernel baseline (Linux {read_kernel_version(repo.dir)})"
        except UserError:
            title = "Vendor kernel baseline"
        sha = repo.commit(f"{title}\n\nThe kernel tree as rk3576-build found it, "
                          "before any driver overlay or patch.")
    repo.tag(BASELINE_TAG, sha)
    return sha


def overlay_driver(kernel_dir: Path, driver_src: Path, *, dest: str = "drivers/rknpu",
                   description: str, expected_version: str | None = None) -> str:
    """Replace `dest` with `driver_src` on top of the baseline, commit, tag OVERLAY_TAG; return sha.

    The tree is first reset to BASELINE_TAG (local changes are stashed), so the result
    never depends on an earlier run. On any error the tree is left at the baseline.
    """
    repo = _Repo(kernel_dir)
    baseline = repo.require(BASELINE_TAG, "kernel baseline")
    target = _inside(repo.dir, dest, "driver.dest")
    source = Path(driver_src).resolve()
    if source == repo.dir or repo.dir in source.parents:
        raise UserError(f"driver source {source} lies inside the kernel tree {repo.dir}: "
                        "unpack the driver somewhere else")
    repo.save_local_changes("before the driver overlay")
    repo.reset(baseline)
    version = read_driver_version(source)
    if expected_version is not None and expected_version.strip().lstrip("v") != str(version):
        raise UserError(
            f"driver version mismatch: the recipe expects {expected_version} but "
            f"{source / 'include' / 'rknpu_drv.h'} declares {version} (date {version.date}). "
            "Fix driver.version or driver.url in the recipe. The kernel tree is left at the "
            "vendor baseline.")
    # Replace wholesale: files of an older driver (0.9.6's stray rknpu.mod.c,
    # ignored build output) must not survive a version change.
    if target.exists() or target.is_symlink():
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    # Plain copies get fresh mtimes, so make rebuilds everything in the new driver.
    shutil.copytree(source, target, copy_function=shutil.copy,
                    ignore=shutil.ignore_patterns(".git"))
    repo.run("add", "-A", "--", dest)
    message = (f"Overlay RKNPU driver {version} ({version.date}) onto {dest}\n\n"
               f"Source: {description}\n"
               f"Version: {version} (DRIVER_DATE {version.date}, from {dest}/include/rknpu_drv.h)\n")
    sha = repo.commit(message)
    repo.tag(OVERLAY_TAG, sha)
    return sha


def apply_patches(kernel_dir: Path, patches: Sequence[Path]) -> list[str]:
    """Reset to OVERLAY_TAG and apply each patch as one commit; return the commit shas.

    A patch that does not apply raises a UserError; the tree is then left at the
    commit of the last patch that applied (or at the overlay if it was the first).
    """
    repo = _Repo(kernel_dir)
    overlay = repo.require(OVERLAY_TAG, "driver overlay")
    patches = [Path(p).resolve() for p in patches]
    for patch in patches:
        if not patch.is_file():
            raise UserError(f"patch file not found: {patch}")
    repo.save_local_changes("before applying patches")
    repo.reset(overlay)
    shas: list[str] = []
    last_good = f"the driver overlay ({OVERLAY_TAG}, {overlay[:12]})"
    for patch in patches:
        subject, body, author = describe_patch(patch)
        status, _, err = repo.try_run("apply", "--index", str(patch))
        if status != 0:
            raise UserError(
                f"patch {patch.name} does not apply to the kernel tree {repo.dir}:\n"
                f"{err.strip()}\n"
                f"The tree is left at {last_good}. Refresh the patch against the tree after the "
                "driver overlay (paths relative to the kernel root, a/ and b/ prefixes) and run "
                "again: the series is replayed from the overlay.")
        shas.append(repo.commit(commit_message(patch, subject, body), author))
        last_good = f"the commit of {patch.name} ({shas[-1][:12]})"
    return shas


def tree_state(kernel_dir: Path) -> str:
    """The kernel tree's HEAD sha."""
    repo = _Repo(kernel_dir)
    sha = repo.rev("HEAD") if repo.is_repo() else None
    if sha is None:
        raise UserError(f"kernel tree {repo.dir} has no git history yet: run the kernel "
                        "baseline step first")
    return sha


def _inside(root: Path, rel: str, what: str) -> Path:
    """`root/rel`, refusing paths that leave `root` or touch .git."""
    parts = Path(rel).parts
    if not rel or Path(rel).is_absolute() or ".." in parts or ".git" in parts or rel in (".",):
        raise UserError(f"{what} must be a relative path inside the kernel tree, got {rel!r}")
    return root / rel
