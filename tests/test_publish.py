"""Publishing a release as one OCI artifact to Debian's docker-registry on loopback and pulling it
back verified; tampered blobs, hostile manifests and untrusted signers are refused with nothing
left behind."""

from __future__ import annotations

import json
import math
import os
import subprocess
import warnings

import pytest
import requests

from cache_fixtures import serve_registry
from release_fixtures import ext4_rootfs, make_build
from rk3576_build.core import oci, signing
from rk3576_build.core.errors import UserError
from rk3576_build.core.oci import DigestMismatch, Registry, parse_reference
from rk3576_build.core.signing import SignatureError
from rk3576_build.release import bundle, publish
from rk3576_build.release.bundle import make_release
from test_release import PACKAGES_A, make_key

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # glibc's bcrypt, as htpasswd writes it (the module is deprecated, not gone, in 3.11)

BLOBS = "docker/registry/v2/blobs/sha256"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with serve_registry(tmp_path_factory.mktemp("registry")) as (url, storage):
        yield url.rsplit("/", 2)[0], storage  # oci://127.0.0.1:PORT


@pytest.fixture(autouse=True)
def _no_docker_login(tmp_path, monkeypatch):
    """Credentials only from what a test sets: an empty Docker config."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))


@pytest.fixture
def released(tmp_path):
    key = make_key(tmp_path)
    image = ext4_rootfs(tmp_path / "rootfs.img", PACKAGES_A)
    build = make_build(tmp_path / "build", image)
    out = make_release(tmp_path / "bundle", manifest_path=build["manifest"], sdk_dir=build["sdk"], key=key,
                       supplier="ACME Devices", kernel_commit=build["kernel_commit"])
    return {"out": out, "pub": key.with_suffix(".pub"), "build": build, "tmp": tmp_path}


def files(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def raw_manifest(host_url: str, repository: str, ref: str) -> dict:
    host = host_url.removeprefix("oci://")
    response = requests.get(f"http://{host}/v2/{repository}/manifests/{ref}",
                            headers={"Accept": oci.OCI_MANIFEST}, timeout=5)
    response.raise_for_status()
    return response.json()


def blob_path(storage, digest: str):
    hexd = digest.removeprefix("sha256:")
    return storage / BLOBS / hexd[:2] / hexd / "data"


def nothing_left(parent, name: str) -> bool:
    return not (parent / name).exists() and not [p for p in parent.iterdir() if p.name.startswith(f".{name}.")]


# -- references ----------------------------------------------------------------------------

def test_references_are_parsed_strictly_and_never_carry_credentials():
    ref = parse_reference("oci://127.0.0.1:5000/team/rk3576:v1.2")
    assert (ref.host, ref.repository, ref.tag, ref.digest, ref.insecure) == ("127.0.0.1:5000", "team/rk3576", "v1.2",
                                                                              None, True)
    assert ref.url == "oci://127.0.0.1:5000/team/rk3576:v1.2"
    remote = parse_reference("oci://registry.example/team/fw@sha256:" + "a" * 64)
    assert remote.digest == "sha256:" + "a" * 64 and remote.ref == remote.digest and not remote.insecure
    assert parse_reference("oci+http://build-host:5000/fw:1").insecure
    with pytest.raises(UserError) as err:
        parse_reference("oci://bob:s3cret@registry.example/fw:1")
    assert "s3cret" not in str(err.value) and "docker login registry.example" in str(err.value)
    for bad in ("https://registry.example/fw:1", "oci://registry.example/", "oci://registry.example/Fw:1",
                "oci://registry.example/fw@sha256:abc", "oci://registry.example/fw:bad/tag"):
        with pytest.raises(UserError):
            parse_reference(bad)
    with pytest.raises(UserError, match="name a tag"):
        parse_reference("oci://registry.example/fw", tag=True)
    with pytest.raises(UserError, match="no tag"):
        parse_reference("oci://registry.example/fw:1", tag=False)


def test_layer_media_types():
    assert publish.media_type("update.img") == "application/vnd.rockchip.update-image"
    assert publish.media_type("images/rootfs.img") == "application/vnd.rockchip.partition-image"
    assert publish.media_type("images/MiniLoaderAll.bin") == "application/vnd.rockchip.loader"
    assert publish.media_type("sbom.cdx.json") == "application/vnd.cyclonedx+json"
    assert publish.media_type("sbom.spdx.json") == "application/spdx+json"
    assert publish.media_type("provenance.intoto.jsonl") == "application/vnd.dsse.envelope.v1+json"
    assert publish.media_type("sbom.cdx.json.sig") == "application/vnd.rk3576-build.sshsig"
    assert publish.media_type("patches/0001-x.patch") == "text/x-diff"
    assert publish.media_type("images/sub/odd.img") == "application/octet-stream"


# -- push, pull, verify --------------------------------------------------------------------

@pytest.mark.registry
def test_publish_pull_and_verify(registry, released, tmp_path):
    host, _ = registry
    out, pub = released["out"], released["pub"]
    published = publish.publish(out, f"{host}/rk3576/release:v1", trusted=[pub])
    assert published.files == len(files(out)) and published.digest.startswith("sha256:")
    assert published.pinned == f"{host}/rk3576/release@{published.digest}"

    manifest = raw_manifest(host, "rk3576/release", "v1")
    assert manifest["artifactType"] == publish.ARTIFACT_TYPE and manifest["mediaType"] == oci.OCI_MANIFEST
    assert manifest["config"] == {"mediaType": oci.EMPTY_JSON, "size": 2,
                                  "digest": oci.sha256_digest(b"{}")}
    layers = {layer["annotations"][oci.TITLE]: layer for layer in manifest["layers"]}
    assert set(layers) == set(files(out))
    sums = dict(reversed(line.split("  ", 1)) for line in (out / "SHA256SUMS").read_text().splitlines())
    for name, layer in layers.items():
        assert layer["mediaType"] == publish.media_type(name)
        assert layer["size"] == (out / name).stat().st_size
        if name in sums:
            assert layer["digest"] == f"sha256:{sums[name]}"
    assert layers["update.img"]["mediaType"] == "application/vnd.rockchip.update-image"
    assert layers["sbom.spdx.json"]["mediaType"] == "application/spdx+json"
    sbom = json.loads((out / "sbom.cdx.json").read_text())
    notes = manifest["annotations"]
    assert notes["org.opencontainers.image.version"] == sbom["metadata"]["component"]["version"]
    assert notes["org.opencontainers.image.created"] == sbom["metadata"]["timestamp"]
    assert notes["org.opencontainers.image.revision"] == released["build"]["kernel_commit"]
    assert notes["org.opencontainers.image.source"].endswith("MYD-LR3576-Distribution-L6.1.75-V1.1.0.tar.gz")
    assert notes["org.opencontainers.image.title"] == "myd-test"

    # The same release again: the same manifest, nothing new stored.
    assert publish.publish(out, f"{host}/rk3576/release:v1").digest == published.digest

    fingerprint = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True).stdout.split()[1]
    pulled = publish.pull(f"{host}/rk3576/release:v1", tmp_path / "pulled", [pub])
    assert pulled.signer == fingerprint and pulled.digest == published.digest
    assert files(tmp_path / "pulled") == files(out)
    assert bundle.verify_release(tmp_path / "pulled", [pub]) == fingerprint
    # by digest, into an empty directory the caller made
    (tmp_path / "by-digest").mkdir()
    assert publish.pull(published.pinned, tmp_path / "by-digest", [pub]).path == tmp_path / "by-digest"
    assert files(tmp_path / "by-digest") == files(out)
    with pytest.raises(UserError, match="already exists"):
        publish.pull(published.pinned, tmp_path / "pulled", [pub])


class CountingRegistry(Registry):
    """The real client, counting the requests it makes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    def request(self, url, method="GET", **kwargs):
        self.calls.append(method)
        return super().request(url, method, **kwargs)


@pytest.mark.registry
def test_a_large_image_goes_up_in_chunks_streamed_from_disk(registry, released, tmp_path):
    host, storage = registry
    out = released["out"]
    # a bigger partition image, listed and signed like any other
    big = os.urandom(3 << 20) + b"tail"
    (out / "images" / "oem.img").write_bytes(big)
    bundle.write_sums(out)
    signing.sign_file(out / "SHA256SUMS", released["pub"].with_suffix(""), bundle.NAMESPACE)
    ref = parse_reference(f"{host}/rk3576/chunked:v1")
    client = CountingRegistry.for_reference(ref)
    client.chunk_size = 1 << 20
    published = publish.publish(out, ref.url, trusted=[released["pub"]], registry=client)
    patches = client.calls.count("PATCH")
    # a new repository: every file goes up, each in ceil(size / chunk) PATCH requests
    sizes = [p.stat().st_size for p in out.rglob("*") if p.is_file()]
    assert len(sizes) == published.files
    assert patches == sum(math.ceil(size / client.chunk_size) for size in sizes)
    assert math.ceil(len(big) / client.chunk_size) == 4
    digest = "sha256:" + bundle.sha256_file(out / "images" / "oem.img")
    assert blob_path(storage, digest).read_bytes() == big
    pulled = publish.pull(published.pinned, tmp_path / "pulled", [released["pub"]])
    assert (pulled.path / "images" / "oem.img").read_bytes() == big


@pytest.mark.registry
def test_a_tampered_blob_is_refused_and_nothing_is_left(registry, released, tmp_path):
    host, storage = registry
    out, pub = released["out"], released["pub"]
    published = publish.publish(out, f"{host}/rk3576/tampered:v1")
    boot_digest = f"sha256:{bundle.sha256_file(out / 'images/boot.img')}"
    blob = blob_path(storage, boot_digest)
    good = blob.read_bytes()
    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 0x01
    blob.write_bytes(bytes(damaged))  # the registry serves it as it is
    try:
        with pytest.raises(DigestMismatch) as err:
            publish.pull(published.pinned, tmp_path / "pulled", [pub])
        assert err.value.exit_code == 1 and "images/boot.img" in str(err.value)
        assert "does not match its digest" in str(err.value)
        assert nothing_left(tmp_path, "pulled")
        blob.write_bytes(good[:-10])  # cut short
        with pytest.raises(DigestMismatch, match="cut short"):
            publish.pull(published.pinned, tmp_path / "pulled", [pub])
        assert nothing_left(tmp_path, "pulled")
    finally:
        blob.write_bytes(good)

    # A SHA256SUMS rewritten in the registry's storage fails its digest too.
    sums = blob_path(storage, "sha256:" + bundle.sha256_file(out / "SHA256SUMS"))
    good = sums.read_bytes()
    sums.write_bytes(good.replace(b"  update.img", b"  update.imh"))
    try:
        with pytest.raises(DigestMismatch, match="SHA256SUMS"):
            publish.pull(published.pinned, tmp_path / "pulled", [pub])
        assert nothing_left(tmp_path, "pulled")
    finally:
        sums.write_bytes(good)
    assert publish.pull(published.pinned, tmp_path / "pulled", [pub]).path.is_dir()


@pytest.mark.registry
def test_a_replaced_list_fails_its_signature_before_any_image_is_downloaded(registry, released, tmp_path):
    """A new SHA256SUMS blob (well formed, matching a changed image) in an otherwise intact artifact."""
    host, _ = registry
    out, pub = released["out"], released["pub"]
    publish.publish(out, f"{host}/rk3576/relisted:v1")
    ref = parse_reference(f"{host}/rk3576/relisted:v2")
    client = CountingRegistry.for_reference(ref)
    manifest = raw_manifest(host, "rk3576/relisted", "v1")
    boot, boot_size = client.push_bytes(ref.repository, b"ANDROID! a different kernel")
    sums = (out / "SHA256SUMS").read_text().replace(bundle.sha256_file(out / "images/boot.img"),
                                                     boot.removeprefix("sha256:"))
    sums_digest, sums_size = client.push_bytes(ref.repository, sums.encode())
    for layer in manifest["layers"]:
        title = layer["annotations"][oci.TITLE]
        if title == "images/boot.img":
            layer.update(digest=boot, size=boot_size)
        elif title == "SHA256SUMS":
            layer.update(digest=sums_digest, size=sums_size)
    client.push_manifest(ref.repository, "v2", manifest)
    client.calls.clear()
    with pytest.raises(SignatureError, match="SHA256SUMS: bad signature") as err:
        publish.pull(ref.url, tmp_path / "pulled", [pub], registry=client)
    assert err.value.exit_code == 1
    assert client.calls == ["GET", "GET", "GET"]  # the manifest, SHA256SUMS and its signature: no image
    assert nothing_left(tmp_path, "pulled")


@pytest.mark.registry
def test_untrusted_signer_and_a_layer_the_signed_list_does_not_name_are_refused(registry, released, tmp_path):
    host, _ = registry
    out, pub = released["out"], released["pub"]
    publish.publish(out, f"{host}/rk3576/signed:v1")
    stranger = make_key(tmp_path, "stranger").with_suffix(".pub")
    with pytest.raises(SignatureError, match="untrusted key"):
        publish.pull(f"{host}/rk3576/signed:v1", tmp_path / "pulled", [stranger])
    assert nothing_left(tmp_path, "pulled")

    # The same signed files plus one more layer: the registry holds it, SHA256SUMS does not list it.
    ref = parse_reference(f"{host}/rk3576/signed:v2")
    client = Registry.for_reference(ref)
    manifest = raw_manifest(host, "rk3576/signed", "v1")
    digest, size = client.push_bytes(ref.repository, b"#!/bin/sh\necho owned\n")
    manifest["layers"].append({"mediaType": "text/plain", "digest": digest, "size": size,
                               "annotations": {oci.TITLE: "images/extra.sh"}})
    client.push_manifest(ref.repository, "v2", manifest)
    with pytest.raises(SignatureError, match="images/extra.sh: not listed in SHA256SUMS"):
        publish.pull(ref.url, tmp_path / "pulled", [pub])
    assert nothing_left(tmp_path, "pulled")


@pytest.mark.registry
@pytest.mark.parametrize("title", ["../escape", "/etc/escape", "images/../../escape", "a\\b", "images//x", ""])
def test_layer_names_that_leave_the_directory_are_refused(registry, released, tmp_path, title):
    host, _ = registry
    publish.publish(released["out"], f"{host}/rk3576/hostile:base")
    ref = parse_reference(f"{host}/rk3576/hostile:evil")
    client = Registry.for_reference(ref)
    manifest = raw_manifest(host, "rk3576/hostile", "base")
    manifest["layers"][0]["annotations"][oci.TITLE] = title
    client.push_manifest(ref.repository, "evil", manifest)
    target = tmp_path / "deep" / "pulled"
    with pytest.raises(DigestMismatch, match="not a path inside a release"):
        publish.pull(ref.url, target, [released["pub"]])
    assert not (tmp_path / "escape").exists() and not (tmp_path / "deep").exists()


@pytest.mark.registry
def test_what_is_not_a_release_is_refused(registry, released, tmp_path):
    host, _ = registry
    ref = parse_reference(f"{host}/rk3576/other:v1")
    client = Registry.for_reference(ref)
    config, size = client.push_bytes(ref.repository, b"{}")
    layer, layer_size = client.push_bytes(ref.repository, b"data")
    client.push_manifest(ref.repository, "v1", {
        "schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.unknown.config.v1+json", "digest": config, "size": size},
        "layers": [{"mediaType": "application/octet-stream", "digest": layer, "size": layer_size,
                    "annotations": {oci.TITLE: "index.json"}}]})
    with pytest.raises(UserError, match="is not an rk3576-build release") as err:
        publish.pull(ref.url, tmp_path / "pulled", [released["pub"]])
    assert err.value.exit_code == 1
    with pytest.raises(UserError, match="no release at"):
        publish.pull(f"{host}/rk3576/other:missing", tmp_path / "pulled", [released["pub"]])
    assert nothing_left(tmp_path, "pulled")

    # publishing refuses an incomplete release before talking to the registry
    (released["out"] / "stray.txt").write_text("not listed\n")
    with pytest.raises(UserError, match="stray.txt: not listed in SHA256SUMS"):
        publish.publish(released["out"], f"{host}/rk3576/other:v2")


@pytest.mark.registry
def test_a_registry_that_wants_a_login(tmp_path, released, monkeypatch):
    """htpasswd (basic auth): without credentials one line says how to log in; with them it works."""
    line = f"ci:{crypt.crypt('pa55-word', crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))}\n"
    (tmp_path / "auth-registry").mkdir()
    with serve_registry(tmp_path / "auth-registry", htpasswd=line) as (url, _):
        host = url.rsplit("/", 2)[0]
        with pytest.raises(UserError, match="asks for a login: run `docker login 127.0.0.1") as err:
            publish.publish(released["out"], f"{host}/rk3576/release:v1")
        assert "pa55-word" not in str(err.value)
        monkeypatch.setenv(oci.USER_ENV, "ci")
        monkeypatch.setenv(oci.PASSWORD_ENV, "pa55-word")
        published = publish.publish(released["out"], f"{host}/rk3576/release:v1")
        pulled = publish.pull(published.pinned, tmp_path / "pulled", [released["pub"]])
        assert files(pulled.path) == files(released["out"])
