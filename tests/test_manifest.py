"""The build manifest: checksums and sizes match the files, atomic JSON with schema and time."""

from __future__ import annotations

import datetime
import hashlib
import json

import pytest

from rk3576_build.core.errors import UserError
from rk3576_build.pipeline.manifest import SCHEMA_VERSION, build_manifest, sha256_file, write_manifest


def _tree(tmp_path):
    root = tmp_path / "sdk"
    (root / "output" / "update" / "Image").mkdir(parents=True)
    (root / "output" / "update" / "Image" / "update.img").write_bytes(b"\x01" * (3 * 1024 * 1024 + 7))
    (root / "rockdev").mkdir()
    (root / "rockdev" / "boot.img").write_bytes(b"kernel")
    return root


def test_artifacts_have_the_size_and_sha256_of_the_files(tmp_path):
    root = _tree(tmp_path)
    rels = ["output/update/Image/update.img", "rockdev/boot.img"]
    manifest = build_manifest(recipe={"name": "demo"}, inputs=[{"name": "sdk", "sha256": "ab"}],
                              steps=[{"name": "kernel", "duration": 1.5, "exit_status": 0}],
                              artifacts_root=root, artifacts=rels)
    for entry, rel in zip(manifest["artifacts"], rels, strict=True):
        data = (root / rel).read_bytes()
        assert entry == {"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert sha256_file(root / rels[0]) == hashlib.sha256((root / rels[0]).read_bytes()).hexdigest()
    assert manifest["recipe"] == {"name": "demo"} and manifest["steps"][0]["name"] == "kernel"


def test_missing_artifact_names_it(tmp_path):
    root = _tree(tmp_path)
    with pytest.raises(UserError, match="rockdev/rootfs.img"):
        build_manifest(recipe={}, inputs=[], steps=[], artifacts_root=root, artifacts=["rockdev/rootfs.img"])


def test_written_json_is_sorted_with_schema_and_utc_time(tmp_path):
    root = _tree(tmp_path)
    manifest = build_manifest(recipe={"z": 1, "a": 2}, inputs=[], steps=[], artifacts_root=root,
                              artifacts=["rockdev/boot.img"])
    out = tmp_path / "state" / "manifest.json"
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    assert write_manifest(out, manifest) == out
    text = out.read_text()
    data = json.loads(text)
    assert data["schema_version"] == SCHEMA_VERSION
    created = datetime.datetime.fromisoformat(data["created"])
    assert created.utcoffset() == datetime.timedelta(0) and created >= before
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"
    assert data["artifacts"][0]["sha256"] == sha256_file(root / "rockdev" / "boot.img")
    assert out.stat().st_mode & 0o644 == 0o644
    # Rewriting replaces the file whole and leaves no temporary behind.
    write_manifest(out, {**manifest, "recipe": {"name": "second"}})
    assert json.loads(out.read_text())["recipe"] == {"name": "second"}
    assert [p.name for p in out.parent.iterdir()] == ["manifest.json"]


def test_credentials_in_recipe_urls_never_reach_the_manifest(tmp_path):
    """Finding 7: `user:password@` in sdk.url / driver.url (and anywhere else) is scrubbed."""
    root = _tree(tmp_path)
    secret = "hunter2-pw"
    recipe = {"name": "myd", "sdk": {"url": f"https://bob:{secret}@mirror.example/sdk.tar.gz"},
              "driver": {"url": f"http://tok:{secret}@127.0.0.1:8080/rknpu.tar.bz2", "sha256": "ab"},
              "mirrors": [f"https://u:{secret}@m.example/dl/"],
              "builder": {"env": {"NOTE": f"see ftp://anon:{secret}@files.example/x"}}}
    manifest = build_manifest(recipe=recipe, inputs=[{"name": "sdk", "url": recipe["sdk"]["url"]}],
                              steps=[{"name": "kernel", "command": f"wget https://a:{secret}@h/x"}],
                              artifacts_root=root, artifacts=["rockdev/boot.img"])
    out = write_manifest(tmp_path / "manifest.json", manifest)
    text = out.read_text()
    assert secret not in text and "bob" not in text and "tok" not in text
    data = json.loads(text)
    assert data["recipe"]["sdk"]["url"] == "https://mirror.example/sdk.tar.gz"
    assert data["recipe"]["driver"] == {"url": "http://127.0.0.1:8080/rknpu.tar.bz2", "sha256": "ab"}
    assert data["recipe"]["mirrors"] == ["https://m.example/dl/"]
    assert data["inputs"][0]["url"] == "https://mirror.example/sdk.tar.gz"
    assert recipe["sdk"]["url"].startswith("https://bob:")        # the caller's dict untouched
