"""The recipe's `apps:` (config): one app overridden by name through `extends:`, paths rebased, each
source one of a tarball, a git commit or a directory, the overlays check counting apps, the shipped
rknn-llm-demos recipe loading and planning."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from helpers import REPO, rk
from rk3576_build.config.layout import Layout
from rk3576_build.config.model import RecipeError
from rk3576_build.config.recipe import load_recipe

COMMIT = "d546a0f975d62469cf1306f98103c737ff933506"
SHA = "188306a3eba7ca48c186fe2a39acf232dec8536484581e54e9b96c3f65677eba"
BASE = {
    "name": "x",
    "sdk": {"url": "sdk.tar.gz"},
    "driver": {"version": "0.9.8", "url": "https://example.invalid/rknpu.tar.bz2"},
    "lunch": {"defconfig": "rockchip_rk3576_myd_lr3576_defconfig"},
    "steps": [
        {"name": "lunch", "command": "./build.sh lunch", "depends": ["sdk"]},
        {"name": "rootfs", "command": "./build.sh rootfs", "depends": ["sdk", "lunch", "overlays"]},
    ],
    "artifacts": ["output/update/Image/update.img"],
    "apps": {
        "hello": {"source": "src/hello", "patches": "patches/hello", "build": "make",
                  "files": [{"source": "models/m.rkllm", "dest": "/opt/models/m.rkllm"}]},
        "viewer": {"source": {"git": "clones/viewer", "commit": COMMIT}, "subdir": "deploy",
                   "options": {"RUNTIME_VERSION": "1.2.1"}},
    },
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith(("MYIR_", "DEMO_", "RK3576_", "RKNN_LLM_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def errors(path: Path) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    return info.value.errors


def test_apps_load_with_paths_relative_to_their_recipe_and_an_extending_recipe_changes_one_by_name(tmp_path):
    base = write(tmp_path / "base" / "base.yaml", BASE)
    recipe = load_recipe(base)
    hello, viewer = recipe.apps["hello"], recipe.apps["viewer"]
    assert (hello.name, hello.source.kind, hello.source.dir) == ("hello", "dir", tmp_path / "base" / "src" / "hello")
    assert hello.patches == tmp_path / "base" / "patches" / "hello"
    assert hello.files[0].source == tmp_path / "base" / "models" / "m.rkllm"
    assert (viewer.source.kind, viewer.source.git, viewer.build, viewer.prefix, viewer.toolchain) == \
        ("git", str(tmp_path / "base" / "clones" / "viewer"), "cmake", "/usr", "auto")

    child = write(tmp_path / "project" / "child.yaml", {
        "extends": "../base/base.yaml", "name": "child",
        "apps": {"viewer": {"enabled": False}, "extra": {"source": {"url": "https://example.invalid/e.tar.gz",
                                                                    "sha256": SHA}}}})
    recipe = load_recipe(child)
    assert list(recipe.apps) == ["hello", "viewer", "extra"]
    assert recipe.apps["hello"].source.dir == tmp_path / "base" / "src" / "hello", "the base's paths stay its own"
    assert recipe.apps["viewer"].source.git == str(tmp_path / "base" / "clones" / "viewer")
    assert [a.name for a in recipe.enabled_apps] == ["hello", "extra"]
    layout = Layout(recipe)
    assert [(o.name, o.source) for o in layout.overlays()] == [
        ("app-hello", recipe.workdir / "apps" / "hello" / "root"),
        ("app-extra", recipe.workdir / "apps" / "extra" / "root")]


def test_each_app_problem_is_one_line_naming_its_key(tmp_path):
    data = copy.deepcopy(BASE)
    data["apps"] = {
        "Bad Name": {"source": "a"},
        "both": {"source": {"dir": "a", "git": "https://example.invalid/r.git", "commit": COMMIT}},
        "tarball": {"source": {"url": "https://example.invalid/a.tar.gz"}},
        "moving": {"source": {"git": "git@example.invalid:r.git"}, "prefix": "opt/x"},
        "files": {"source": "a", "files": [{"url": "https://example.invalid/m", "dest": "/m"},
                                          {"source": "m", "url": "https://example.invalid/m", "dest": "/m"}]},
        "tool": {"source": "a", "toolchain": "clang", "build": "meson"},
    }
    path = write(tmp_path / "r.yaml", data)
    assert errors(path) == [
        f"{path}: apps.Bad Name: expected an app name: lowercase letters, digits, '.', '-' and '_', starting "
        "with a letter or digit (it names a directory and the overlay app-<name>), got 'Bad Name'",
        f"{path}: apps.moving.prefix: expected an absolute path in the root filesystem below /, without '..', "
        "got 'opt/x'",
        f"{path}: apps.tool.build: expected one of 'cmake', 'make', got 'meson'",
        f"{path}: apps.tool.toolchain: expected one of 'auto', 'sdk', 'builder', got 'clang'",
    ]
    del data["apps"]["Bad Name"], data["apps"]["tool"]
    data["apps"]["moving"]["prefix"] = "/opt/x"
    path = write(tmp_path / "r.yaml", data)
    assert errors(path) == [
        f"{path}: apps.both.source: set exactly one of url (a tarball, with sha256), git (with commit) and dir "
        "(a local directory); got git, dir",
        f"{path}: apps.tarball.source.sha256: a source tarball needs its sha256 (64 hex digits): `sha256sum` of "
        "the file you checked",
        f"{path}: apps.moving.source.commit: a git source needs the commit to build (40 hex digits): "
        "`git rev-parse <tag>^{commit}` in a clone",
        f"{path}: apps.files.files[0].sha256: a file from a URL needs its sha256 (64 hex digits)",
        f"{path}: apps.files.files[1]: set exactly one of source (a local file or directory) and url (with sha256)",
    ]


def test_an_enabled_app_needs_a_step_depending_on_overlays_and_its_overlay_name_is_its_own(tmp_path):
    data = copy.deepcopy(BASE)
    data["steps"][1]["depends"] = ["sdk", "lunch"]
    path = write(tmp_path / "r.yaml", data)
    assert errors(path) == [f"{path}: apps: no step depends on 'overlays': add it to the rootfs step's depends "
                            "(the apps' install trees are rootfs overlays, applied before that step and rerun it "
                            "when they change)"]
    data = copy.deepcopy(BASE)
    for app in data["apps"].values():
        app["enabled"] = False
    path = write(tmp_path / "r.yaml", data)
    assert errors(path) == [f"{path}: steps: step 'rootfs' depends on 'overlays' but rootfs_overlays is empty "
                            "and no app is enabled"]
    data = copy.deepcopy(BASE)
    data["rootfs_overlays"] = [{"source": "files", "name": "app-hello"}]
    path = write(tmp_path / "r.yaml", data)
    assert errors(path) == [f"{path}: apps.hello: the app's install tree is the rootfs overlay 'app-hello', and "
                            "rootfs_overlays has one of that name: rename that overlay (overlay names starting "
                            "with 'app-' belong to apps)"]


def test_the_shipped_rknn_llm_demos_recipe_plans_with_only_the_clone_given(tmp_path):
    clone = tmp_path / "rknn-llm"
    clone.mkdir()
    result = rk("--recipe", str(REPO / "recipes" / "rknn-llm-demos.yaml"), "--workdir", str(tmp_path / "work"),
                "plan", env={"RKNN_LLM_DIR": str(clone)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for task in ("fetch:app-rknn-llm-1.2.1-text", "app:rknn-llm-1.2.1-text", "app:rknn-llm-1.2.1-multimodal",
                 "sdk:overlays"):
        assert task in result.stdout
    assert "app:rknn-llm-1.3.0-text" not in result.stdout, "switched off"
    recipe = load_recipe(REPO / "recipes" / "rknn-llm-demos.yaml", variables={"RKNN_LLM_DIR": str(clone)})
    multimodal = recipe.apps["rknn-llm-1.2.1-multimodal"]
    assert multimodal.patches == REPO / "patches" / "rknn-llm-1.2.1" / "qwen2-vl-3b"
    assert multimodal.files[0].source == clone / "models" / "vl.rkllm"
    assert recipe.verify.multimodal["program"] == "/opt/rknn-llm/1.2.1/multimodal/demo"
