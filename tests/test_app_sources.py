"""An app's sources: a git source (sources/gitsource.py; a real repository, a pinned commit written out through
a bare mirror in the download cache, offline once fetched, one clear line when it cannot be had), and the apps'
fetch stage (pipeline/app_stages.py) with a tarball and files: URLs from a loopback server."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from helpers import REPO
from http_server import LoopbackServer
from rk3576_build.config.recipe import load_recipe
from rk3576_build.core.errors import UserError
from rk3576_build.pipeline.tasks import RecipeTasks
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


# --------------------------------------------------------------------------- the apps' fetch stage

def _tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_the_fetch_stage_unpacks_a_tarball_checks_out_a_commit_and_fetches_files_by_url(repo, tmp_path):
    clone, first, hidden = repo
    tarball = _tarball({"hello-1.0/CMakeLists.txt": b"project(hello)\n", "hello-1.0/src/main.c": b"int main;\n"})
    model = b"RKLLM-STANDIN-MODEL 1\n" * 100
    local = tmp_path / "local"
    (local / "src").mkdir(parents=True)
    (local / "CMakeLists.txt").write_text("project(local)\n")
    with LoopbackServer() as srv:
        srv.add("/hello-1.0.tar.gz", tarball)
        srv.add("/model.rkllm", model)
        apps = {
            "tar": {"source": {"url": srv.url("/hello-1.0.tar.gz"), "sha256": hashlib.sha256(tarball).hexdigest()},
                    "files": [{"url": srv.url("/model.rkllm"), "sha256": hashlib.sha256(model).hexdigest(),
                               "dest": "/opt/models/m.rkllm"},
                              {"source": str(local / "CMakeLists.txt"), "dest": "/opt/x/CMakeLists.txt"}]},
            "git": {"source": {"git": str(clone), "commit": hidden}, "subdir": "src"},
            "local": {"source": str(local)},
        }
        recipe = _recipe(tmp_path, apps)
        stages = RecipeTasks(load_recipe(recipe), echo=lambda line: None).apps
        assert [stages.needs_fetch(a) for a in stages.recipe.apps.values()] == [True, True, False]
        for name in ("tar", "git"):
            assert not stages.fetched_present(name)
            stages.fetch(name)
            assert stages.fetched_present(name)
        stages.fetch("tar")  # again: from the download cache
        assert srv.count("/hello-1.0.tar.gz") == 1 and srv.count("/model.rkllm") == 1

    work = tmp_path / "work"
    assert (work / "app-sources" / "tar" / "src" / "main.c").read_bytes() == b"int main;\n", "one directory stripped"
    assert (work / "app-sources" / "git" / "src" / "main.cpp").exists()
    tar = stages.build_spec("tar")
    assert tar.source_dir == work / "app-sources" / "tar"
    assert tar.files[0].source.read_bytes() == model and tar.files[0].dest == "/opt/models/m.rkllm"
    assert tar.files[1].source == local / "CMakeLists.txt"
    assert stages.source_id("tar") == f"sha256:{hashlib.sha256(tarball).hexdigest()}"
    assert stages.source_id("git") == f"git:{hidden}"
    assert (stages.build_spec("git").source_dir, stages.build_spec("git").subdir) == (work / "app-sources" / "git",
                                                                                      "src")
    before = stages.source_id("local")
    assert before.startswith("tree:") and stages.source_id("local") == before
    (local / "src" / "new.c").write_text("int x;\n")
    assert stages.source_id("local") != before, "a local source's content is its identity"


def test_a_files_url_with_the_wrong_sha256_is_refused(tmp_path):
    with LoopbackServer() as srv:
        srv.add("/model.rkllm", b"not the model\n")
        recipe = _recipe(tmp_path, {"tar": {"source": str(tmp_path), "files": [
            {"url": srv.url("/model.rkllm"), "sha256": "0" * 64, "dest": "/m"}]}})
        stages = RecipeTasks(load_recipe(recipe), echo=lambda line: None).apps
        with pytest.raises(UserError, match="sha256"):
            stages.fetch("tar")
    assert not stages.fetched_present("tar")


def _recipe(tmp_path: Path, apps: dict, sdk_sha256: str | None = None) -> Path:
    data = {"name": "x", "workdir": str(tmp_path / "work"), "downloads": str(tmp_path / "downloads"),
            "sdk": {"url": "sdk.tar.gz", "sha256": sdk_sha256}, "driver": {"version": "0.9.8", "url": "https://example.invalid/d.tar.bz2"},
            "lunch": {"defconfig": "rockchip_rk3576_myd_lr3576_defconfig"},
            "steps": [{"name": "rootfs", "command": "./build.sh rootfs", "depends": ["sdk", "overlays"]}],
            "artifacts": ["output/update/Image/update.img"], "apps": apps,
            "builder": {"dockerfile": str(REPO / "Dockerfile.builder")}}
    path = tmp_path / "r.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_an_apps_cache_key_is_portable_and_known_before_it_is_built(tmp_path):
    """The rootfs step's cache key counts an app by what it is built from: the same on another machine (another
    work directory, another clone of the files), before the app is built; not by paths or times."""
    keys = []
    for machine in ("a", "b"):
        here = tmp_path / machine
        (here / "src").mkdir(parents=True)
        (here / "src" / "CMakeLists.txt").write_text("project(x)\n")
        (here / "model.rkllm").write_bytes(b"m" * 1000)
        recipe = _recipe(here, {"x": {"source": str(here / "src"), "options": {"A": "1"},
                                      "files": [{"source": str(here / "model.rkllm"), "dest": "/m"}]}},
                         sdk_sha256="ab" * 32)
        keys.append(RecipeTasks(load_recipe(recipe), echo=lambda line: None).apps.key("x"))
    assert keys[0] is not None and keys[0] == keys[1]

    stages = RecipeTasks(load_recipe(tmp_path / "b" / "r.yaml"), echo=lambda line: None).apps
    model = tmp_path / "b" / "model.rkllm"
    os.utime(model, (1, 1))
    assert stages.key("x") == keys[0], "a file's time is not its content"
    model.write_bytes(b"n" * 1000)
    assert stages.key("x") != keys[0]
    unpinned = _recipe(tmp_path / "c", {"x": {"source": str(tmp_path / "b" / "src")}})
    assert RecipeTasks(load_recipe(unpinned), echo=lambda line: None).apps.key("x") is None, \
        "the SDK's digest is unknown before its first fetch"
