"""An app's git source (sources/gitsource.py): a real repository, a pinned commit written out through a
bare mirror in the download cache, offline once fetched, and one clear line when it cannot be had."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rk3576_build.core.errors import UserError
from rk3576_build.sources import gitsource


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid",
                           *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> tuple[Path, str, str]:
    """A clone with two commits on its branch and a third only on a deleted branch (advertised by no ref)."""
    repo = tmp_path / "clone"
    repo.mkdir()
    git(repo, "init", "-q", "--initial-branch=main")
    (repo / "CMakeLists.txt").write_text("project(one)\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "one")
    first = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "topic")
    (repo / "CMakeLists.txt").write_text("project(two)\n")
    (repo / "src").mkdir()
    (repo / "src" / "main.cpp").write_text("int main() { return 0; }\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "two")
    hidden = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    git(repo, "branch", "-q", "-D", "topic")
    return repo, first, hidden


def test_a_pinned_commit_is_written_out_whatever_the_clone_has_checked_out(repo, tmp_path):
    clone, first, hidden = repo
    downloads, dest = tmp_path / "downloads", tmp_path / "source"
    gitsource.checkout(str(clone), hidden, dest, downloads_dir=downloads)
    assert (dest / "CMakeLists.txt").read_text() == "project(two)\n"
    assert (dest / "src" / "main.cpp").exists() and not (dest / ".git").exists()
    assert (clone / "CMakeLists.txt").read_text() == "project(one)\n", "the clone is left as it was"

    gitsource.checkout(str(clone), first, dest, downloads_dir=downloads)
    assert sorted(p.name for p in dest.iterdir()) == ["CMakeLists.txt"], "replaced, not merged"
    mirrors = list((downloads / "git").glob("*.git"))
    assert [m.name.split("-")[0] for m in mirrors] == ["clone"]

    (clone / ".git").rename(tmp_path / "gone")  # the repository is gone: offline, the mirror has both commits
    gitsource.checkout(str(clone), hidden, dest, downloads_dir=downloads, offline=True)
    assert (dest / "src" / "main.cpp").exists()


def test_a_commit_the_repository_lacks_or_a_missing_repository_is_one_line(repo, tmp_path):
    clone, first, _ = repo
    downloads = tmp_path / "downloads"
    missing = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(UserError) as caught:
        gitsource.checkout(str(clone), missing, tmp_path / "s", downloads_dir=downloads, what="app x")
    assert str(caught.value).startswith(f"app x: {clone} has no commit {missing} (")
    assert str(caught.value).endswith("fetch it into that repository (`git fetch --tags` in a clone), or fix the "
                                      "commit in the recipe")
    with pytest.raises(UserError) as caught:
        gitsource.checkout(str(clone), missing, tmp_path / "s", downloads_dir=downloads, offline=True, what="app x")
    assert str(caught.value).startswith(f"app x: commit {missing[:12]} of {clone} is not in the download cache")
    with pytest.raises(UserError) as caught:
        gitsource.checkout("https://user:hunter22@127.0.0.1:9/r.git", first, tmp_path / "s",
                           downloads_dir=downloads, what="app x")
    message = str(caught.value)
    assert message.startswith("app x: cannot fetch https://127.0.0.1:9/r.git: ") and "\n" not in message
    assert "hunter22" not in message
    assert not any("hunter22" in p.name for p in (downloads / "git").iterdir())
    assert not (tmp_path / "s").exists()
