"""`rk3576-build release`, `verify-release`, `publish`, `pull` and `rebuild-check` as a user runs them:
on one demo build made in Docker (helpers.write_recipe over the session's sample sources), keys made
with ssh-keygen, Debian's docker-registry on loopback."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from cache_fixtures import serve_registry
from helpers import executed, rk, rk_recipe, write_recipe
from test_release import make_key

SUPPLIER = "ACME Devices"


def one_error_line(result: subprocess.CompletedProcess, code: int, *texts: str) -> str:
    """The command exited `code` with one `rk3576-build: error:` line on stderr, its last, holding `texts`
    (info lines of what it did may come before it; no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stdout[-2000:] + result.stderr[-2000:]
    errors = [line for line in lines if line.startswith("rk3576-build: error: ")]
    assert errors == lines[-1:] and "Traceback" not in result.stderr, result.stderr
    for text in texts:
        assert text in errors[0], errors[0]
    return errors[0]


def fingerprint(pub: Path) -> str:
    return subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                          check=True).stdout.split()[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory, sources):
    """A finished demo build whose recipe names the release key, supplier and signer."""
    url, checksums, _ = sources
    root = tmp_path_factory.mktemp("release-cli")
    key = make_key(root)

    def with_release(data):
        data["release"] = {"key": str(key), "supplier": SUPPLIER, "trusted": [f"{key}.pub"]}

    recipe = write_recipe(root / "project" / "r.yaml", url, checksums, change=with_release)
    result = rk_recipe(recipe, "run")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"recipe": recipe, "work": root / "project" / "work", "key": key, "pub": key.with_name(key.name + ".pub"),
            "root": root}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with serve_registry(tmp_path_factory.mktemp("registry")) as (url, _storage):
        yield url.rsplit("/", 2)[0]  # oci://127.0.0.1:PORT


def test_what_would_stop_a_release_is_one_line_before_anything_runs(tmp_path):
    work = tmp_path / "work"
    base = ("--recipe", "demo", "--workdir", str(work))
    one_error_line(rk(*base, "release", cwd=tmp_path), 2, "no signing key", "--key", "release.key")
    key = make_key(tmp_path)
    one_error_line(rk(*base, "release", "--key", str(tmp_path / "nope"), cwd=tmp_path), 2,
                   f"signing key {tmp_path / 'nope'} not found")
    one_error_line(rk(*base, "release", "--key", str(key), cwd=tmp_path), 2, "no supplier", "--supplier",
                   "release.supplier")
    one_error_line(rk(*base, "release", "--key", str(key), "--supplier", SUPPLIER, "--since", str(tmp_path),
                      cwd=tmp_path), 2, f"--since {tmp_path} is not a release directory")
    one_error_line(rk(*base, "release", "--key", str(key), "--supplier", SUPPLIER, "--since", "oci://127.0.0.1/a/b:1",
                      cwd=tmp_path), 2, "give the previous release's signer with --trusted")
    assert not work.exists(), "nothing was built or fetched"
    refused = rk("verify-release", str(tmp_path), cwd=tmp_path)
    assert refused.returncode == 2 and "the following arguments are required: --trusted" in refused.stderr


@pytest.mark.docker
def test_release_verify_and_a_changed_byte(built, tmp_path):
    work, pub = built["work"], built["pub"]
    result = rk_recipe(built["recipe"], "release")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    release = work / "release"
    assert result.stdout.splitlines()[-1] == str(release)
    assert executed(result.stdout) == {"release"}, "the build was up to date; only the release ran"
    assert {"update.img", "SHA256SUMS", "SHA256SUMS.sig", "RELEASE.md", "sbom.cdx.json", "images/boot.img"} <= {
        p.relative_to(release).as_posix() for p in release.rglob("*")}

    # The kernel tree's commit, as the manifest records it, is the release's.
    manifest = json.loads((work / "manifest.json").read_text())
    head = subprocess.run(["git", "-C", str(work / "sdk" / "kernel"), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert next(i for i in manifest["inputs"] if i["name"] == "sdk")["kernel_commit"] == head
    assert f"commit `{head}`" in (release / "RELEASE.md").read_text()
    sbom = json.loads((release / "sbom.cdx.json").read_text())
    assert sbom["metadata"]["component"]["supplier"]["name"] == SUPPLIER

    checked = rk("verify-release", str(release), "--trusted", str(pub))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == f"{release}: verified, signed by {fingerprint(pub)}"

    copy = tmp_path / "copy"
    shutil.copytree(release, copy)
    data = bytearray((copy / "images" / "boot.img").read_bytes())
    data[100] ^= 1
    (copy / "images" / "boot.img").write_bytes(bytes(data))
    one_error_line(rk("verify-release", str(copy), "--trusted", str(pub)), 1,
                   "images/boot.img: changed (its sha256 differs from SHA256SUMS)")
    other = make_key(tmp_path, "other")
    one_error_line(rk("verify-release", str(release), "--trusted", f"{other}.pub"), 1, "SHA256SUMS")

    # Not over an existing release; the options win over the recipe's release section.
    one_error_line(rk_recipe(built["recipe"], "release"), 2, f"release directory {release} already exists")
    second = rk_recipe(built["recipe"], "release", "--out", str(tmp_path / "next"), "--since", str(release),
                       "--supplier", "Other Co")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert second.stdout.splitlines()[-1] == str(tmp_path / "next")
    notes = (tmp_path / "next" / "RELEASE.md").read_text()
    assert "## Changes since" in notes and "Nothing the SBOM records changed." in notes
    assert json.loads((tmp_path / "next" / "sbom.cdx.json").read_text())["metadata"]["component"]["supplier"] == {
        "name": "Other Co"}


@pytest.mark.docker
@pytest.mark.registry
def test_publish_and_pull(built, registry, tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))  # no login but the test's
    work, pub = built["work"], built["pub"]
    release = work / "release"
    if not release.exists():
        made = rk_recipe(built["recipe"], "release")
        assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    host = registry.removeprefix("oci://")
    published = rk("publish", f"{registry}/fw/demo:1", "--release", str(release), "--trusted", str(pub))
    assert published.returncode == 0, published.stderr
    pinned = published.stdout.strip()
    assert pinned.startswith(f"oci://{host}/fw/demo@sha256:")
    # Without --release: the recipe's work directory's release, the same artifact.
    again = rk_recipe(built["recipe"], "publish", f"{registry}/fw/demo:2")
    assert again.returncode == 0 and again.stdout.strip() == pinned, again.stderr

    pulled = rk("pull", f"{registry}/fw/demo:1", str(tmp_path / "fw"), "--trusted", str(pub))
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip() == f"{tmp_path / 'fw'}: verified, signed by {fingerprint(pub)}"
    assert (tmp_path / "fw" / "update.img").read_bytes() == (release / "update.img").read_bytes()

    other = make_key(tmp_path, "other")
    one_error_line(rk("pull", pinned, str(tmp_path / "untrusted"), "--trusted", f"{other}.pub"), 1,
                   "SHA256SUMS: signed by an untrusted key")
    assert not (tmp_path / "untrusted").exists()


@pytest.mark.docker
@pytest.mark.timeout(1800)
def test_rebuild_check_builds_again_and_compares(built):
    work = built["work"]
    result = rk_recipe(built["recipe"], "rebuild-check")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "rebuild check passed: 1 artifact(s) bit-identical" in result.stdout
    second = work.with_name(work.name + ".rebuild")
    assert json.loads((second / "manifest.json").read_text())["artifacts"] == \
        json.loads((work / "manifest.json").read_text())["artifacts"]
    assert "step:kernel" in executed(result.stdout), "the second work directory was built from scratch"
    summary = json.loads((work / "rebuild-check" / "rebuild-check.json").read_text())
    assert summary["status"] == "passed" and summary["identical"] == ["output/update/Image/update.img"]
