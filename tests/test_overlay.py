"""rootfs_overlays: host files baked into the root filesystem the way RK_ROOTFS_OVERLAY_DIRS does it."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers import REPO, executed, rk_recipe, write_recipe
from rk3576_build.build import rootfs_overlays
from rk3576_build.config.model import RecipeError
from rk3576_build.config.recipe import load_recipe
from rk3576_build.core.errors import UserError
from rk3576_build.demo.sample_sdk import write_sample_sdk


def _demo_with(tmp_path: Path, change) -> Path:
    data = yaml.safe_load((REPO / "recipes" / "demo.yaml").read_text())
    data["workdir"] = str(tmp_path / "work")
    change(data)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _errors(path: Path) -> list[str]:
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    return caught.value.errors


def test_recipe_validation(tmp_path):
    (tmp_path / "files").mkdir()
    recipe = load_recipe(_demo_with(tmp_path, lambda d: d.update(
        rootfs_overlays=[{"source": "files"}, {"source": "files", "name": "again"}])))
    assert [(o.source, o.name) for o in recipe.rootfs_overlays] == [
        (tmp_path / "files", "files"), (tmp_path / "files", "again")], "relative to the recipe; name defaults"

    overlays = [{"source": "files"}, {"source": "x/files"}, {"source": "a b"}, {"source": "y", "name": "../up"}]
    path = _demo_with(tmp_path, lambda d: d.update(rootfs_overlays=overlays))
    assert _errors(path) == [
        f"{path}: rootfs_overlays[3].name: invalid overlay name '../up': use letters, digits, '.', '-' and '_' "
        "(it names a directory in the SDK)",
        f"{path}: rootfs_overlays[1].name: duplicate overlay name 'files' (also rootfs_overlays[0]); "
        "set a different name",
        f"{path}: rootfs_overlays[2].source: invalid overlay name 'a b': use letters, digits, '.', '-' and '_' "
        "(it names a directory in the SDK); set name"]

    def no_user(d):
        d["rootfs_overlays"] = [{"source": "files"}]
        for step in d["steps"]:
            step["depends"] = [x for x in step["depends"] if x != "overlays"]
    path = _demo_with(tmp_path, no_user)
    assert _errors(path) == [f"{path}: rootfs_overlays: no step depends on 'overlays': add it to the rootfs "
                             "step's depends (the overlays are applied before that step and rerun it when they change)"]
    path = _demo_with(tmp_path, lambda d: d.update(rootfs_overlays=[], apps={}))  # an app is an overlay too
    assert _errors(path) == [f"{path}: steps: step 'ubuntu' depends on 'overlays' but rootfs_overlays is empty"]


def test_scan_and_config(tmp_path):
    source = tmp_path / "ov"
    (source / "usr" / "bin").mkdir(parents=True)
    (source / "usr" / "bin" / "tool").write_bytes(b"#!/bin/sh\n")
    (source / "usr" / "bin" / "tool").chmod(0o700)
    (source / "usr" / "bin" / "alias").symlink_to("tool")
    entries = rootfs_overlays.scan(source)
    assert entries == [
        {"path": "usr", "type": "dir", "mode": "0755"}, {"path": "usr/bin", "type": "dir", "mode": "0755"},
        {"path": "usr/bin/alias", "type": "link", "target": "tool"},
        {"path": "usr/bin/tool", "type": "file", "mode": "0700", "size": 10,
         "sha256": hashlib.sha256(b"#!/bin/sh\n").hexdigest()}]

    (source / "usr" / "escape").symlink_to("../../secret")
    with pytest.raises(UserError, match=r"the link usr/escape -> \.\./\.\./secret points outside the overlay"):
        rootfs_overlays.scan(source)
    with pytest.raises(UserError, match="is not a directory"):
        rootfs_overlays.scan(tmp_path / "missing")

    config = tmp_path / ".config"
    config.write_text('RK_ROOTFS=y\nRK_ROOTFS_OVERLAY_DIRS="board/overlay-extra"\nRK_UPDATE=y\n')
    ours = [rootfs_overlays.sdk_dir("a"), rootfs_overlays.sdk_dir("b")]
    assert rootfs_overlays.set_dirs(config, ours)
    assert not rootfs_overlays.set_dirs(config, ours), "idempotent: the file is not rewritten"
    assert rootfs_overlays.set_dirs(config, ours[1:])  # an overlay removed from the recipe leaves the list
    assert config.read_text() == ('RK_ROOTFS=y\nRK_ROOTFS_OVERLAY_DIRS="board/overlay-extra '
                                  'device/rockchip/.rk3576-build/overlays/b"\nRK_UPDATE=y\n')


def test_sample_post_overlay_hook_order_and_install_sh(tmp_path):
    """The sample SDK's hook: overlay-<os> first, then RK_ROOTFS_OVERLAY_DIRS in order; install.sh runs."""
    sdk = write_sample_sdk(tmp_path / "sdk")
    target = tmp_path / "rootfs"
    target.mkdir()
    for rel, line in (("device/rockchip/common/overlays/overlay-debian", "os"), ("one", "one"), ("two", "two")):
        script = sdk / rel / "install.sh"
        script.parent.mkdir(parents=True)
        script.write_text(f'#!/bin/sh\necho "{line} $2" >>"$1/order"\n')
        script.chmod(0o755)
    env = {**os.environ, "RK_ROOTFS_OVERLAY_DIRS": "two missing one"}
    result = subprocess.run([str(sdk / "device/rockchip/common/scripts/post-overlay.sh"), str(target), "debian"],
                            capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (target / "order").read_text() == "os debian\ntwo debian\none debian\n"
    assert "Ignoring overlay missing" in result.stderr


def _cpio_members(image: Path) -> dict[str, tuple[int, bytes]]:
    """name -> (mode, content) of a gzip'd newc cpio (the sample's rootfs.img)."""
    data, members, pos = gzip.decompress(image.read_bytes()), {}, 0
    while True:
        header = data[pos:pos + 110]
        fields = [int(header[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_end = pos + 110 + namesize
        name = data[pos + 110:name_end - 1].decode()
        start = (name_end + 3) & ~3
        if name == "TRAILER!!!":
            return members
        members[name.removeprefix("./")] = (mode & 0o7777, data[start:start + size])
        pos = (start + size + 3) & ~3


@pytest.mark.docker
def test_overlay_baked_in_stamped_and_only_rootfs_reruns(tmp_path, sources):
    url, checksums, _directory = sources
    overlay = tmp_path / "extra"
    (overlay / "usr" / "bin").mkdir(parents=True)
    (overlay / "usr" / "bin" / "hello").write_bytes(b"#!/bin/sh\necho hello\n")
    (overlay / "usr" / "bin" / "hello").chmod(0o700)
    (overlay / "etc").mkdir()
    (overlay / "etc" / "hello.conf").write_bytes(b"greeting=1\n")
    (overlay / "etc" / "hello.conf").chmod(0o600)

    def add(data):
        data["rootfs_overlays"].append({"source": str(overlay), "name": "hello"})
    recipe = write_recipe(tmp_path / "ov" / "r.yaml", url, checksums, change=add)
    work = tmp_path / "ov" / "work"
    first = rk_recipe(recipe, "run")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    config = (work / "sdk" / "output" / ".config").read_text()
    assert ('RK_ROOTFS_OVERLAY_DIRS="device/rockchip/.rk3576-build/overlays/rkllm '
            'device/rockchip/.rk3576-build/overlays/hello"') in config
    members = _cpio_members(work / "sdk" / "rockdev" / "rootfs.img")
    assert members["usr/bin/hello"] == (0o755, b"#!/bin/sh\necho hello\n"), "u=rwX,go=rX"
    assert members["etc/hello.conf"] == (0o644, b"greeting=1\n")
    assert members["usr/bin/llm_demo"][0] == 0o755 and members["usr/share/rkllm/standin.rkllm"][0] == 0o644
    assert "etc/passwd" in members, "the overlay adds to the rootfs, it does not replace it"

    stamp = json.loads((work / "state" / "rootfs-overlays.json").read_text())
    hello = {"path": "etc/hello.conf", "type": "file", "mode": "0600", "size": 11,
             "sha256": hashlib.sha256(b"greeting=1\n").hexdigest()}
    assert hello in next(o["files"] for o in stamp["overlays"] if o["name"] == "hello")
    inputs = {i["name"]: i for i in json.loads((work / "manifest.json").read_text())["inputs"]}
    assert hello in inputs["overlay:hello"]["files"]
    assert inputs["overlay:hello"]["sha256"] == rootfs_overlays.digest(inputs["overlay:hello"]["files"])
    rkllm_files = {f["path"] for f in inputs["overlay:rkllm"]["files"]}
    assert {"usr/bin/llm_demo", "usr/share/rkllm/standin.rkllm"} <= rkllm_files

    same = rk_recipe(recipe, "run")
    assert same.returncode == 0 and executed(same.stdout) == set(), same.stdout[-2000:]

    (overlay / "etc" / "hello.conf").write_bytes(b"greeting=2\n")
    again = rk_recipe(recipe, "run")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert executed(again.stdout) == {"sdk:overlays", "step:ubuntu", "step:updateimg", "manifest"}
    assert _cpio_members(work / "sdk" / "rockdev" / "rootfs.img")["etc/hello.conf"] == (0o644, b"greeting=2\n")
