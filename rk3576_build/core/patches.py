"""Patch series on a tree under git: the `series` file, what a patch says, one commit per patch.

A tree gets a repository of its own (never the caller's git settings, hooks or identity) whose
first commit is the tree as found; each patch is then applied with `git apply --index` and
committed with a fixed identity and fixed dates, so the same tree and patches give the same
commit shas. A patch that does not apply is reported with its file and the hunk that failed.
Git runs as a command here (the kernel tree's git library stays in kernel/tree.py).
"""

from __future__ import annotations

import email.header
import email.parser
import logging
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from rk3576_build.core.errors import UserError

_log = logging.getLogger(__name__)

IDENTITY_NAME = "rk3576-build"
IDENTITY_EMAIL = "rk3576-build@localhost"
# Fixed dates make a commit's sha depend only on its tree, parents and message.
FIXED_DATE = "2024-01-01T00:00:00+0000"
BRANCH = "rk3576-build"
# Settings that would make results depend on the user's or the repo's config
# (hooks, signing, line-ending conversion, personal excludes, background gc).
SAFE_CONFIG = (
    "core.hooksPath=/dev/null",
    "commit.gpgSign=false",
    "tag.gpgSign=false",
    "core.autocrlf=false",
    "core.safecrlf=false",
    "core.fileMode=true",
    "core.excludesFile=/dev/null",
    "core.attributesFile=/dev/null",
    "core.fsmonitor=false",
    "core.quotePath=false",
    "gc.auto=0",
    "maintenance.auto=false",
    "advice.detachedHead=false",
    "i18n.commitEncoding=UTF-8",
    "apply.whitespace=nowarn",
)
_DIFF_START = re.compile(r"^(diff |--- |Index: )", re.MULTILINE)
_FAILED_AT = re.compile(r"patch failed: (.+):(\d+)\s*$", re.M)
_NOT_APPLY = re.compile(r"error: (.+): patch does not apply\s*$", re.M)
_MISSING = re.compile(r"error: (.+): (?:does not exist in index|No such file or directory)\s*$", re.M)
_ALREADY = re.compile(r"error: (.+): already exists in (?:index|working directory)\s*$", re.M)
_HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@.*$", re.M)


def list_patches(patch_dir: Path) -> list[Path]:
    """The patches to apply, in order: as listed in `series`, else sorted *.patch; no dir -> []."""
    patch_dir = Path(patch_dir)
    if not patch_dir.is_dir():
        return []
    series = patch_dir / "series"
    if not series.is_file():
        return sorted(patch_dir.glob("*.patch"))
    patches = []
    for number, line in enumerate(series.read_text(errors="replace").splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if len(entry.split()) > 1:
            raise UserError(f"{series}:{number}: expected one patch file name per line, got {entry!r}")
        path = patch_dir / entry
        if not path.is_file():
            raise UserError(f"{series}:{number} lists {entry}, but {path} does not exist: "
                            "add the file or remove the line")
        patches.append(path)
    unlisted = sorted({p.name for p in patch_dir.glob("*.patch")} - {p.name for p in patches})
    if unlisted:
        _log.warning(f"not in {series}, so not applied: {', '.join(unlisted)}")
    return patches


def describe_patch(patch: Path) -> tuple[str, str, str | None]:
    """(subject, body, author) from a format-patch mail or a quilt-style header."""
    text = Path(patch).read_text(errors="replace")
    start = _DIFF_START.search(text)
    head = text[:start.start()] if start else text
    if re.match(r"From [0-9a-f]{40} |From:|Subject:", head):
        mail = email.parser.Parser().parsestr(head.split("\n", 1)[1] if head.startswith("From ")
                                              else head, headersonly=True)
        subject = _decode(mail.get("Subject", ""))
        subject = re.sub(r"^\s*\[[^]]*PATCH[^]]*\]\s*", "", subject).strip()
        author = _decode(mail.get("From", "")).strip() or None
        if author and not re.fullmatch(r".+ <[^<>]+@[^<>]+>", author):
            author = None
        payload = mail.get_payload()
        body = ("\n" + payload).split("\n---\n", 1)[0].strip() if isinstance(payload, str) else ""
        return subject, body, author
    lines = [line.rstrip() for line in head.strip().splitlines()]
    if not lines:
        return "", "", None
    return lines[0].strip(), "\n".join(lines[1:]).strip(), None


def _decode(value: str) -> str:
    """A mail header as text (RFC 2047 words decoded, folded lines joined)."""
    decoded = email.header.make_header(email.header.decode_header(value))
    return " ".join(str(decoded).split())


def failed_hunk(patch: Path, git_error: str) -> str:
    """Which file and hunk of `patch` git could not apply, from `git apply`'s messages, in a few words."""
    failed = _FAILED_AT.search(git_error)
    if failed:
        name, line = failed.group(1), int(failed.group(2))
        return f"{name}, hunk {_hunk_header(patch, name, line) or f'at line {line}'} does not match"
    for pattern, what in ((_MISSING, "is not in the tree"), (_ALREADY, "already exists in the tree"),
                          (_NOT_APPLY, "does not match")):
        found = pattern.search(git_error)
        if found:
            return f"{found.group(1)} {what}"
    lines = [line for line in git_error.strip().splitlines() if line.strip()]
    return lines[-1].removeprefix("error: ") if lines else "git apply failed without a message"


def _hunk_header(patch: Path, name: str, line: int) -> str | None:
    """The `@@ -line,... @@` header of `name`'s hunk starting at old line `line` in `patch`."""
    text = Path(patch).read_text(errors="replace")
    for section in re.split(r"^(?=diff --git |--- )", text, flags=re.M):
        first = section.split("\n", 1)[0]
        if not (first.endswith(f"/{name}") or f"/{name} " in first or first.endswith(f" {name}")):
            continue
        for hunk in _HUNK.finditer(section):
            if int(hunk.group(1)) == line:
                return hunk.group(0).split(" @@")[0] + " @@"
    return None


def isolated_env(git_dir: Path, work_tree: Path | None = None, index: Path | None = None) -> dict[str, str]:
    """The environment git runs in here: explicit locations, so GIT_DIR/GIT_INDEX_FILE leaked from a caller
    (a git hook, say) cannot point git at another repository; no global or system config, no prompt for a
    password; the fixed identity and dates."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env.update(
        GIT_DIR=str(git_dir), GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0",
        GIT_AUTHOR_NAME=IDENTITY_NAME, GIT_AUTHOR_EMAIL=IDENTITY_EMAIL,
        GIT_COMMITTER_NAME=IDENTITY_NAME, GIT_COMMITTER_EMAIL=IDENTITY_EMAIL,
        GIT_AUTHOR_DATE=FIXED_DATE, GIT_COMMITTER_DATE=FIXED_DATE, LC_ALL="C")
    if work_tree is not None:
        env["GIT_WORK_TREE"] = str(work_tree)
    if index is not None:
        env["GIT_INDEX_FILE"] = str(index)
    return env


def safe_config(*directories: Path) -> list[str]:
    """`-c` arguments: SAFE_CONFIG, and `directories` trusted whoever owns them."""
    return [arg for item in (*SAFE_CONFIG, *(f"safe.directory={d}" for d in directories)) for arg in ("-c", item)]


class GitTree:
    """git in one tree, with its own repository, safe settings, a fixed identity and fixed dates."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise UserError(f"tree not found: {self.root}")
        git_dir = self.root / ".git"
        self.env = isolated_env(git_dir, work_tree=self.root, index=git_dir / "index")
        self.config = safe_config(self.root)

    def try_run(self, *args: str) -> tuple[int, str, str]:
        """Run git; (status, stdout, stderr) without raising."""
        try:
            done = subprocess.run(["git", *self.config, *args], cwd=self.root, env=self.env,
                                  capture_output=True, text=True, errors="replace")
        except FileNotFoundError:
            raise UserError("git is not installed: install it (apt-get install git)") from None
        return done.returncode, done.stdout, done.stderr

    def run(self, *args: str) -> str:
        """Run git; a failure is one UserError with git's own message."""
        status, out, err = self.try_run(*args)
        if status != 0:
            said = (err.strip() or out.strip() or f"exit {status}").splitlines()[-1]
            raise UserError(f"git {args[0]} failed in {self.root}: {said}; "
                            "check that the directory is writable and the disk is not full")
        return out

    def rev(self, ref: str) -> str | None:
        status, out, _ = self.try_run("rev-parse", "-q", "--verify", f"{ref}^{{commit}}")
        return out.strip() if status == 0 else None

    def commit(self, message: str, author: str | None = None) -> str:
        args = ["commit", "-q", "--no-verify", "--allow-empty", "-m", message]
        if author:
            args.append(f"--author={author}")
        self.run(*args)
        sha = self.rev("HEAD")
        assert sha is not None
        return sha

    def init_baseline(self, message: str) -> str:
        """A new repository whose first commit is the tree as found (its own .gitignore applies)."""
        if (self.root / ".git").exists():
            raise UserError(f"{self.root} already has a .git: a baseline is made only in a fresh copy")
        self.run("init", "-q", "--template=", f"--initial-branch={BRANCH}")
        self.run("add", "-A")
        return self.commit(message)


def apply_series(tree: GitTree, patches: Sequence[Path], *, what: str, start: str) -> list[str]:
    """Apply `patches` in order on `tree`'s HEAD, one commit each; return the commit shas.

    `what` names the tree in messages ("the source of app demo"), `start` its state before the
    first patch. A patch that does not apply raises a UserError naming the file and the hunk;
    the tree is then left at the commit of the last patch that applied.
    """
    shas: list[str] = []
    last_good = start
    for patch in (Path(p).resolve() for p in patches):
        if not patch.is_file():
            raise UserError(f"patch file not found: {patch}")
        subject, body, author = describe_patch(patch)
        status, _, err = tree.try_run("apply", "--index", str(patch))
        if status != 0:
            raise UserError(f"patch {patch.name} does not apply to {what}: {failed_hunk(patch, err)} "
                            f"(git apply: {_git_reason(err)}); the tree is left at {last_good}. Refresh the patch "
                            f"against {tree.root} (paths relative to it, a/ and b/ prefixes) and run again")
        shas.append(tree.commit(commit_message(patch, subject, body), author))
        last_good = f"the commit of {patch.name} ({shas[-1][:12]})"
    return shas


def commit_message(patch: Path, subject: str, body: str) -> str:
    """The message of the commit that applies `patch` (part of what makes the commit's sha)."""
    message = f"Apply {patch.name}" + (f": {subject}" if subject else "")
    message += f"\n\n{body}\n" if body else "\n"
    return message + f"\nPatch file: {patch.name}\n"


def _git_reason(err: str) -> str:
    """git apply's first error line, without its `error: ` prefix."""
    lines = [line.removeprefix("error: ").strip() for line in err.splitlines() if line.startswith("error:")]
    return lines[0] if lines else (err.strip().splitlines() or ["failed"])[-1]
