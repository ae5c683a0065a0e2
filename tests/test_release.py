"""Release bundles against real parts: ssh-keygen signatures, the CycloneDX and SPDX validators,
debugfs on ext4 images made with mkfs.ext4 -d (and a real Debian rootfs from the debootstrap
base image, compared with dpkg-query in that image), sha256sum -c."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from helpers import BASE_IMAGE as BASE
from release_fixtures import ext4_rootfs, make_build, status_text
from rk3576_build.core.errors import UserError
from rk3576_build.core.signing import SignatureError
from rk3576_build.release import bundle, provenance, rootfs
from rk3576_build.release.bundle import compare_deb_versions, make_release, verify_release

PACKAGES_A = [("libc6", "2.36-9+deb12u4", "amd64"), ("libc6", "2.36-9+deb12u4", "arm64"),
              ("zlib1g", "1:1.2.13.dfsg-1", "amd64"), ("gone", "1.0", "all"), ("stale", "2.0", "all", "config-files")]
PACKAGES_B = [("libc6", "2.36-9+deb12u7", "amd64"), ("libc6", "2.36-9+deb12u4", "arm64"),
              ("zlib1g", "1:1.2.13.dfsg-1", "amd64"), ("libstdc++6", "12.2.0-14", "amd64")]


def make_key(tmp_path: Path, name: str = "release") -> Path:
    key = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


@pytest.fixture
def released(tmp_path):
    """One finished build, released and signed."""
    key = make_key(tmp_path)
    image = ext4_rootfs(tmp_path / "rootfs-a.img", PACKAGES_A)
    build = make_build(tmp_path / "build-a", image, driver_version="0.9.7", driver_date="20240424")
    out = make_release(tmp_path / "release-a", manifest_path=build["manifest"], sdk_dir=build["sdk"], key=key,
                       supplier="ACME Devices", kernel_commit=build["kernel_commit"])
    return {"key": key, "pub": key.with_suffix(".pub"), "out": out, "build": build, "tmp": tmp_path}


def _flip(path: Path, offset: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1
    path.write_bytes(bytes(data))


# -- the release directory and its check -----------------------------------------------------

def test_release_has_every_file_listed_signed_and_checkable_without_the_tool(released):
    out, pub = released["out"], released["pub"]
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == sorted(["RELEASE.md", "SHA256SUMS", "SHA256SUMS.sig", "images/MiniLoaderAll.bin",
                            "images/boot.img", "images/modules.img", "images/parameter.txt", "images/rootfs.img",
                            "images/uboot.img", "kernel.config", "manifest.json", "patches/0001-rknpu-fix.patch",
                            "provenance.intoto.jsonl", "provenance.intoto.jsonl.sig", "sbom.cdx.json",
                            "sbom.cdx.json.sig", "sbom.spdx.json", "sbom.spdx.json.sig", "update.img"])
    assert not (out.parent / "release-a.partial").exists()
    # what docs/release.md tells a user without this tool to run
    subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=out, check=True, capture_output=True)
    allowed = out.parent / "allowed_signers"
    allowed.write_text(f'release namespaces="{bundle.NAMESPACE}" {pub.read_text()}')
    with (out / "SHA256SUMS").open("rb") as fh:
        subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "release", "-n", bundle.NAMESPACE,
                        "-s", str(out / "SHA256SUMS.sig")], stdin=fh, check=True, capture_output=True)
    listed = {line.split("  ", 1)[1] for line in (out / "SHA256SUMS").read_text().splitlines()}
    assert listed == set(names) - {"SHA256SUMS", "SHA256SUMS.sig"}
    fingerprint = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True).stdout.split()[1]
    assert verify_release(out, [pub]) == fingerprint
    built = released["build"]["sdk"] / "output/update/Image/update.img"
    assert (out / "update.img").read_bytes() == built.read_bytes()


@pytest.mark.parametrize("target", ["update.img", "images/rootfs.img", "sbom.cdx.json", "patches/0001-rknpu-fix.patch"])
def test_a_changed_byte_names_the_file(released, target):
    out = released["out"]
    _flip(out / target, 1100 if target == "images/rootfs.img" else 3)
    with pytest.raises(SignatureError, match=f"{target}: changed") as err:
        verify_release(out, [released["pub"]])
    assert err.value.exit_code == 1


def test_changed_sums_missing_or_untrusted_signature_and_unlisted_files_fail(released, tmp_path):
    out, pub = released["out"], released["pub"]
    stranger = make_key(tmp_path, "stranger")
    with pytest.raises(SignatureError, match="SHA256SUMS: signed by an untrusted key SHA256:"):
        verify_release(out, [stranger.with_suffix(".pub")])
    (out / "notes.txt").write_text("added later\n")
    (out / "images" / "extra.img").write_bytes(b"x")
    with pytest.raises(SignatureError, match="extra.img: not listed in SHA256SUMS") as err:
        verify_release(out, [pub])
    assert "notes.txt: not listed" in str(err.value)
    (out / "notes.txt").unlink()
    (out / "images" / "extra.img").unlink()
    verify_release(out, [pub])
    (out / "sbom.spdx.json.sig").unlink()
    with pytest.raises(SignatureError, match=r"sbom.spdx.json: unsigned \(sbom.spdx.json.sig is missing\)"):
        verify_release(out, [pub])
    (out / "SHA256SUMS.sig").unlink()
    with pytest.raises(SignatureError, match="SHA256SUMS: unsigned"):
        verify_release(out, [pub])
    with pytest.raises(UserError, match="no trusted keys"):
        verify_release(out, [])


def test_rewritten_sums_with_matching_hashes_still_fail_on_the_signature(released):
    """An attacker who swaps a file and fixes SHA256SUMS cannot re-sign it."""
    out = released["out"]
    (out / "images/boot.img").write_bytes(b"evil")
    digest = bundle.sha256_file(out / "images/boot.img")
    lines = [f"{digest}  images/boot.img" if line.endswith("  images/boot.img") else line
             for line in (out / "SHA256SUMS").read_text().splitlines()]
    (out / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    with pytest.raises(SignatureError, match="SHA256SUMS: bad signature") as err:
        verify_release(out, [released["pub"]])
    assert "provenance.intoto.jsonl: subject images/boot.img does not match SHA256SUMS" in str(err.value)


def test_release_refuses_a_stale_update_img_and_an_existing_out(tmp_path):
    key = make_key(tmp_path)
    build = make_build(tmp_path / "b", ext4_rootfs(tmp_path / "r.img", PACKAGES_A))
    common = dict(manifest_path=build["manifest"], sdk_dir=build["sdk"], key=key, supplier="ACME",
                  kernel_commit=build["kernel_commit"])
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    with pytest.raises(UserError, match="already exists"):
        make_release(tmp_path / "taken", **common)
    _flip(build["sdk"] / "output/update/Image/update.img", 600)
    with pytest.raises(UserError, match="changed since the manifest was written"):
        make_release(tmp_path / "rel", **common)
    assert not (tmp_path / "rel").exists() and not (tmp_path / "rel.partial").exists()


def test_release_notes_say_what_changed_since_the_previous_release(released):
    tmp = released["tmp"]
    image = ext4_rootfs(tmp / "rootfs-b.img", PACKAGES_B)
    build = make_build(tmp / "build-b", image, driver_version="0.9.8", kernel_sublevel=84,
                       patches={"0001-rknpu-fix.patch": b"--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+c\n",
                                "0002-more.patch": b"--- a/y\n+++ b/y\n"})
    out = make_release(tmp / "release-b", manifest_path=build["manifest"], sdk_dir=build["sdk"],
                       key=released["key"], supplier="ACME Devices", kernel_commit=build["kernel_commit"],
                       since=released["out"], trusted=[released["pub"]], version="2.0")
    notes = (out / "RELEASE.md").read_text()
    assert notes.startswith("# myd-test 2.0\n")
    assert "## Changes since myd-test " in notes
    assert "- RKNPU driver: 0.9.7 (20240424) -> 0.9.8 (20240828)" in notes
    assert "- Kernel: 6.1.75 -> 6.1.84" in notes
    assert f"-> {build['kernel_commit']}" in notes
    assert "- Patches added: 0002-more.patch" in notes and "- Patches changed: 0001-rknpu-fix.patch" in notes
    assert "- Debian packages added (1):\n  - libstdc++6:amd64 12.2.0-14" in notes
    assert "- Debian packages removed (1):\n  - gone:all 1.0" in notes
    assert "- Debian packages upgraded (1):\n  - libc6:amd64 2.36-9+deb12u4 -> 2.36-9+deb12u7" in notes
    assert "stale" not in notes and "libc6:arm64" not in notes and "zlib1g" not in notes
    # a previous release that does not verify is refused before anything is made
    _flip(released["out"] / "images/uboot.img", 5)
    with pytest.raises(SignatureError, match="images/uboot.img: changed"):
        make_release(tmp / "release-c", manifest_path=build["manifest"], sdk_dir=build["sdk"],
                     key=released["key"], supplier="ACME", kernel_commit=build["kernel_commit"],
                     since=released["out"], trusted=[released["pub"]])


def test_debian_version_order_matches_dpkg():
    pairs = [("1.0", "1.0"), ("1.0", "1.0-1"), ("1.0~rc1", "1.0"), ("1:0.9", "2.0"),
             ("2.36-9+deb12u4", "2.36-9+deb12u7"), ("1.2.13.dfsg-1", "1.2.13-1"), ("1.0a", "1.0+"), ("1.10", "1.9"),
             ("0~~", "0~"), ("1.0-1~bpo1", "1.0-1"),
             ("2.0", "10.0"), ("1.0.0", "1.0"), ("7:1", "7:1.0")]
    if not shutil.which("dpkg"):
        pytest.skip("dpkg is not installed")
    for a, b in pairs:
        for x, y in ((a, b), (b, a)):
            lt = subprocess.run(["dpkg", "--compare-versions", x, "lt", y]).returncode == 0
            eq = subprocess.run(["dpkg", "--compare-versions", x, "eq", y]).returncode == 0
            assert compare_deb_versions(x, y) == (-1 if lt else 0 if eq else 1), (x, y)


# -- the SBOMs -----------------------------------------------------------------------------

def _ntia_cyclonedx(document: dict) -> None:
    metadata = document["metadata"]
    assert metadata["authors"][0]["name"] and metadata["timestamp"]
    components = [metadata["component"], *document["components"]]
    refs = {c["bom-ref"] for c in components}
    assert len(refs) == len(components)
    dependencies = document["dependencies"]
    in_graph = {d["ref"] for d in dependencies} | {r for d in dependencies for r in d["dependsOn"]}
    for component in components:
        assert component["supplier"]["name"] not in ("", "NOASSERTION"), component["name"]
        assert component["name"] and component["version"] not in ("", "NOASSERTION"), component["name"]
        assert component["purl"].startswith("pkg:"), component["name"]
        assert component["bom-ref"] in in_graph, component["name"]
    assert {d["ref"] for d in document["dependencies"]} == refs
    assert set().union(*(d["dependsOn"] for d in document["dependencies"])) <= refs


def _ntia_spdx(document: dict) -> None:
    info = document["creationInfo"]
    assert info["created"].endswith("Z") and any(c.startswith("Tool: rk3576-build") for c in info["creators"])
    assert any(c.startswith("Organization: ") for c in info["creators"])
    related = {r["spdxElementId"] for r in document["relationships"]} | \
        {r["relatedSpdxElement"] for r in document["relationships"]}
    ids = [p["SPDXID"] for p in document["packages"]]
    assert len(set(ids)) == len(ids)
    for package in document["packages"]:
        assert package["supplier"].startswith("Organization: "), package["name"]
        assert package["versionInfo"] not in ("", "NOASSERTION"), package["name"]
        assert package["externalRefs"][0]["referenceLocator"].startswith("pkg:")
        assert package["SPDXID"] in related, package["name"]


def test_sboms_validate_against_the_official_schemas_with_ntia_minimum_elements(released):
    out = released["out"]
    cdx_text = (out / "sbom.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(cdx_text) is None
    document = json.loads(cdx_text)
    _ntia_cyclonedx(document)
    spdx_document = parse_file(str(out / "sbom.spdx.json"))
    assert validate_full_spdx_document(spdx_document, "SPDX-2.3") == []
    spdx_json = json.loads((out / "sbom.spdx.json").read_text())
    _ntia_spdx(spdx_json)
    # the validator does reject a broken document (the checks above can fail)
    broken = json.loads(cdx_text)
    broken["components"][0]["type"] = "not-a-type"
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(broken)) is not None

    components = {c["bom-ref"]: c for c in [document["metadata"]["component"], *document["components"]]}
    firmware = components["firmware"]
    assert firmware["type"] == "firmware"
    assert firmware["hashes"][0]["content"] == bundle.sha256_file(out / "update.img")
    kernel = components["kernel"]
    build = released["build"]
    assert (kernel["type"], kernel["name"], kernel["version"]) == ("operating-system", "linux", "6.1.75")
    assert kernel["pedigree"]["commits"] == [{"uid": build["kernel_commit"]}]
    assert kernel["pedigree"]["patches"] == [{"type": "unofficial", "diff": {"url": "patches/0001-rknpu-fix.patch"}}]
    config = kernel["externalReferences"][0]
    assert config["url"] == "kernel.config"
    assert config["hashes"][0]["content"] == bundle.sha256_file(out / "kernel.config")
    assert "CONFIG_ROCKCHIP_RKNPU=y" in (out / "kernel.config").read_text()
    driver = components["driver"]
    props = {p["name"]: p["value"] for p in driver["properties"]}
    assert (driver["type"], driver["name"], driver["version"]) == ("device-driver", "rknpu", "0.9.7")
    assert props["rk3576-build:driver-date"] == "20240424"
    assert props["rk3576-build:overlay-commit"] == build["overlay_commit"]
    manifest = json.loads(build["manifest"].read_text())
    assert driver["hashes"][0]["content"] == next(i["sha256"] for i in manifest["inputs"] if i["name"] == "driver")
    patch = components["patch:patches/0001-rknpu-fix.patch"]
    assert patch["hashes"][0]["content"] == bundle.sha256_file(out / "patches/0001-rknpu-fix.patch")
    uboot = components["boot:images/uboot.img"]
    assert uboot["version"] == "2017.09"
    assert uboot["hashes"][0]["content"] == bundle.sha256_file(out / "images/uboot.img")
    loader = components["boot:images/MiniLoaderAll.bin"]
    assert loader["type"] == "firmware"
    assert loader["hashes"][0]["content"] == bundle.sha256_file(out / "images/MiniLoaderAll.bin")
    sdk = components["sdk"]
    assert sdk["version"] == "1.1.0" and sdk["externalReferences"][0]["type"] == "source-distribution"
    debs = sorted(c["purl"] for c in document["components"] if c["purl"].startswith("pkg:deb/"))
    assert debs == ["pkg:deb/debian/gone@1.0?arch=all&distro=bookworm",
                    "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=bookworm",
                    "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=arm64&distro=bookworm",
                    "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64&distro=bookworm"]
    rootfs_ref = components["rootfs"]["bom-ref"]
    assert len(next(d for d in document["dependencies"] if d["ref"] == rootfs_ref)["dependsOn"]) == 4
    spdx_packages = {p["name"] for p in spdx_json["packages"]}
    expected = {"linux", "rknpu", "uboot.img", "MiniLoaderAll.bin", "libc6", "zlib1g", "0001-rknpu-fix.patch"}
    assert expected <= spdx_packages
    assert {"spdxElementId": "SPDXRef-patch-patches-0001-rknpu-fix.patch", "relationshipType": "PATCH_APPLIED",
            "relatedSpdxElement": "SPDXRef-kernel"} in spdx_json["relationships"]


def test_a_rootfs_that_is_not_debian_is_said_so(tmp_path):
    key = make_key(tmp_path)
    cpio = tmp_path / "rootfs.cpio.gz"
    cpio.write_bytes(b"\x1f\x8b" + b"\x00" * 4096)
    build = make_build(tmp_path / "b", cpio)
    out = make_release(tmp_path / "rel", manifest_path=build["manifest"], sdk_dir=build["sdk"], key=key,
                       supplier="ACME", kernel_commit=build["kernel_commit"])
    document = json.loads((out / "sbom.cdx.json").read_text())
    assert not [c for c in document["components"] if c["purl"].startswith("pkg:deb/")]
    rootfs_component = next(c for c in document["components"] if c["bom-ref"] == "rootfs")
    assert {"name": "rk3576-build:packages", "value": "not listed: not an ext file system with a dpkg database"} \
        in rootfs_component["properties"]
    assert "Debian packages | not listed" in (out / "RELEASE.md").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str((out / "sbom.cdx.json").read_text()) is None


def test_dpkg_status_parsing_keeps_installed_packages_only(tmp_path):
    text = status_text(PACKAGES_A) + ("Package: halfway\nStatus: install ok half-configured\nVersion: 3\n"
                                      "Architecture: all\n")
    packages = rootfs.parse_dpkg_status(text)
    assert [(p.name, p.architecture, p.status) for p in packages] == [
        ("gone", "all", "installed"), ("halfway", "all", "half-configured"), ("libc6", "amd64", "installed"),
        ("libc6", "arm64", "installed"), ("zlib1g", "amd64", "installed")]
    image = ext4_rootfs(tmp_path / "r.img", PACKAGES_A, os_release='ID=ubuntu\nVERSION_ID="22.04"\n'
                                                                   'VERSION_CODENAME=jammy\n')
    distro, listed = rootfs.rootfs_packages(image)  # etc/os-release is a link into usr/lib
    assert (distro.id, distro.codename) == ("ubuntu", "jammy")
    assert listed[1].purl(distro) == "pkg:deb/ubuntu/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=jammy"
    for package in listed:  # canonical purls, as the purl library writes them
        purl = package.purl(distro)
        assert PackageURL.from_string(purl).to_string() == purl
    assert rootfs.rootfs_packages(tmp_path / "r.tree" / "var/lib/dpkg/status") is None  # not ext4
    (tmp_path / "empty").mkdir()
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tmp_path / "empty"), str(tmp_path / "e.img"), "4M"],
                   check=True, capture_output=True)
    assert rootfs.rootfs_packages(tmp_path / "e.img") is None  # ext4 without a dpkg database


@pytest.mark.docker
def test_packages_of_a_real_debian_rootfs_match_dpkg_query(tmp_path):
    """The debootstrap base image, exported and packed with mkfs.ext4 -d, listed by debugfs,
    against dpkg-query run inside that image."""
    tree = tmp_path / "root"
    tree.mkdir()
    container = subprocess.run(["docker", "create", BASE, "true"], capture_output=True, text=True,
                               check=True).stdout.strip()
    try:
        export = subprocess.Popen(["docker", "export", container], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(tree)], stdin=export.stdout, check=True)
        assert export.wait() == 0
    finally:
        subprocess.run(["docker", "rm", container], capture_output=True)
    image = tmp_path / "rootfs.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(image), "320M"], check=True, capture_output=True)
    shutil.rmtree(tree, ignore_errors=True)
    expected = subprocess.run(["docker", "run", "--rm", BASE, "dpkg-query", "-W", "-f",
                               "${db:Status-Status}\t${Package}\t${Architecture}\t${Version}\n"],
                              capture_output=True, text=True, check=True).stdout
    want = sorted(tuple(line.split("\t")[1:]) for line in expected.splitlines() if line.startswith("installed\t"))
    distro, packages = rootfs.rootfs_packages(image)
    assert len(want) > 50
    assert sorted((p.name, p.architecture, p.version) for p in packages) == want
    assert (distro.id, distro.version_id, distro.codename) == ("debian", "12", "bookworm")
    base_files = next(p for p in packages if p.name == "base-files")
    assert base_files.purl(distro).startswith("pkg:deb/debian/base-files@12")

    # and a release of an image with that rootfs lists them in both SBOMs, valid
    key = make_key(tmp_path)
    build = make_build(tmp_path / "b", image)
    out = make_release(tmp_path / "rel", manifest_path=build["manifest"], sdk_dir=build["sdk"], key=key,
                       supplier="ACME", kernel_commit=build["kernel_commit"], trusted=[key.with_suffix(".pub")])
    cdx_text = (out / "sbom.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(cdx_text) is None
    assert len([c for c in json.loads(cdx_text)["components"] if c["purl"].startswith("pkg:deb/")]) == len(want)
    assert validate_full_spdx_document(parse_file(str(out / "sbom.spdx.json")), "SPDX-2.3") == []
    _ntia_cyclonedx(json.loads(cdx_text))


# -- the provenance ------------------------------------------------------------------------

def test_dsse_pae_matches_the_spec():
    assert provenance.pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    assert provenance.pae("", b"") == b"DSSEv1 0  0 "


def test_provenance_is_a_signed_slsa_v1_statement(released, tmp_path):
    out, pub = released["out"], released["pub"]
    line = (out / "provenance.intoto.jsonl").read_text()
    assert line.count("\n") == 1
    envelope = json.loads(line)
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    statement, signer = provenance.verify_envelope(line.encode(), [pub], bundle.NAMESPACE)
    assert signer == envelope["signatures"][0]["keyid"]
    # the signature is SSHSIG over PAE, checkable with ssh-keygen alone
    payload = base64.b64decode(envelope["payload"])
    (tmp_path / "pae").write_bytes(provenance.pae(envelope["payloadType"], payload))
    (tmp_path / "pae.sig").write_bytes(base64.b64decode(envelope["signatures"][0]["sig"]))
    (tmp_path / "allowed").write_text(f"release {pub.read_text()}")
    with (tmp_path / "pae").open("rb") as fh:
        subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(tmp_path / "allowed"), "-I", "release",
                        "-n", bundle.NAMESPACE, "-s", str(tmp_path / "pae.sig")], stdin=fh, check=True,
                       capture_output=True)

    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    assert subjects["update.img"] == bundle.sha256_file(out / "update.img")
    assert subjects["images/rootfs.img"] == bundle.sha256_file(out / "images/rootfs.img")
    definition = statement["predicate"]["buildDefinition"]
    assert definition["buildType"] == provenance.BUILD_TYPE
    manifest = json.loads((out / "manifest.json").read_text())
    recipe = definition["externalParameters"]["recipe"]
    assert recipe["name"] == "myd-test"
    assert recipe["digest"]["sha256"] == hashlib.sha256(provenance.canonical_json(manifest["recipe"])).hexdigest()
    assert [s["name"] for s in definition["externalParameters"]["steps"]] == ["kernel", "updateimg"]
    deps = {d["name"]: d for d in definition["resolvedDependencies"]}
    assert deps["sdk"]["digest"] == {"sha256": "a" * 64} and deps["sdk"]["uri"].startswith("https://")
    assert deps["driver"]["annotations"]["version"] == "0.9.7"
    patch_digest = deps["patch:0001-rknpu-fix.patch"]["digest"]["sha256"]
    assert patch_digest == bundle.sha256_file(out / "patches/0001-rknpu-fix.patch")
    assert deps["builder-image"]["digest"] == {"sha256": "b" * 64}
    assert deps["base-image"]["uri"] == "docker-image:rk3576-build/debian-base:bookworm"
    assert deps["kernel-tree"]["digest"] == {"gitCommit": released["build"]["kernel_commit"]}
    run = statement["predicate"]["runDetails"]
    assert run["builder"]["id"] == provenance.BUILDER_ID and run["builder"]["version"]["rk3576-build"]
    assert run["metadata"]["startedOn"] < run["metadata"]["finishedOn"]
    assert run["byproducts"][0]["digest"]["sha256"] == bundle.sha256_file(out / "manifest.json")

    # a changed payload, a foreign key, a wrong namespace fail
    tampered = dict(envelope, payload=base64.b64encode(payload.replace(b"myd-test", b"myd-evil")).decode())
    with pytest.raises(SignatureError, match="bad signature"):
        provenance.verify_envelope(json.dumps(tampered).encode(), [pub], bundle.NAMESPACE)
    stranger = make_key(tmp_path, "stranger")
    with pytest.raises(SignatureError, match="untrusted key"):
        provenance.verify_envelope(line.encode(), [stranger.with_suffix(".pub")], bundle.NAMESPACE)
    with pytest.raises(SignatureError, match="wrong namespace"):
        provenance.verify_envelope(line.encode(), [pub], "other@rk3576-build.invalid")
    with pytest.raises(SignatureError, match="unsigned"):
        provenance.verify_envelope(json.dumps(dict(envelope, signatures=[])).encode(), [pub], bundle.NAMESPACE)


def test_encrypted_key_through_askpass_never_leaks_its_passphrase_into_the_release(tmp_path, monkeypatch, capfd):
    """An encrypted key through SSH_ASKPASS: the release is made, and the passphrase is nowhere."""
    secret = "release passphrase 91c2"
    key = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", secret, "-f", str(key)], check=True)
    (tmp_path / "pw").write_text(secret + "\n")
    askpass = tmp_path / "askpass.sh"
    askpass.write_text(f"#!/bin/sh\ncat '{tmp_path / 'pw'}'\n")
    askpass.chmod(0o700)
    monkeypatch.setenv("SSH_ASKPASS", str(askpass))
    monkeypatch.delenv("SSH_ASKPASS_REQUIRE", raising=False)
    build = make_build(tmp_path / "b", ext4_rootfs(tmp_path / "r.img", PACKAGES_B))
    out = make_release(tmp_path / "rel", manifest_path=build["manifest"], sdk_dir=build["sdk"], key=key,
                       supplier="ACME", kernel_commit=build["kernel_commit"], echo=print)
    assert verify_release(out, [key.with_suffix(".pub")])
    captured = capfd.readouterr()
    assert secret not in captured.out + captured.err
    for path in out.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert os.environ.get("SSH_ASKPASS_REQUIRE") is None  # the tool set it for ssh-keygen only
