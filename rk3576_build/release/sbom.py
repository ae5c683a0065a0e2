"""The image's software bill of materials, as CycloneDX 1.6 JSON and SPDX 2.3 JSON.

Both documents describe the same graph: update.img (the firmware) contains the partition
images; boot.img contains the kernel (version, commit, config, patches), which contains the
RKNPU driver; U-Boot and the loader come from the SDK tarball (the source); rootfs.img
contains its Debian packages. The caller fills an `SbomInputs` (release/bundle.py maps a
build's manifest.json into one); nothing here reads the build itself.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from rk3576_build.release.rootfs import DebPackage, Distro

CYCLONEDX_SPEC = "1.6"
SPDX_VERSION = "SPDX-2.3"
NAMESPACE_BASE = "https://rk3576-build.invalid/spdx"
PROPERTY = "rk3576-build"  # the namespace of this tool's CycloneDX properties
DEFAULT_DRIVER_SUPPLIER = "Rockchip Electronics Co., Ltd."
DEFAULT_SDK_SUPPLIER = DEFAULT_DRIVER_SUPPLIER  # the framework, kernel, U-Boot and rkbin blobs
_SPDX_ID_BAD = re.compile(r"[^A-Za-z0-9.-]+")
_SPDX_DOWNLOAD = re.compile(r"^(https?|ftp|sftp)://[^\s]+$")  # what SPDX accepts as a download location
_MAINTAINER = re.compile(r"^\s*(.*?)\s*(?:<([^>]*)>)?\s*$")


@dataclass(frozen=True)
class Artifact:
    """A file (shipped in the release, or an input) with its digest."""

    name: str
    sha256: str
    size: int | None = None
    version: str = ""
    url: str = ""


@dataclass
class SbomInputs:
    """What the SBOM says, in plain values; see release/bundle.py collect_inputs() for the mapping
    from a build's manifest."""

    product: str                    # the recipe's name
    version: str                    # the release's version
    created: str                    # ISO 8601 UTC timestamp of the SBOM data
    supplier: str                   # who ships the firmware (the releasing organisation)
    firmware: Artifact              # update.img
    sdk: Artifact                   # the SDK tarball: the source of the kernel, U-Boot and loader
    kernel_version: str
    kernel_commit: str
    driver: Artifact                # the driver tarball (name: the tarball's file name)
    driver_name: str
    driver_date: str
    driver_commit: str              # the kernel-tree commit that overlaid the driver
    images: list[Artifact] = field(default_factory=list)      # other partition images, parameter.txt
    bootloader: list[Artifact] = field(default_factory=list)  # uboot.img, MiniLoaderAll.bin, ...
    patches: list[Artifact] = field(default_factory=list)     # name: path in the release (patches/...)
    kernel_config: Artifact | None = None                     # name: path in the release
    rootfs: Artifact | None = None
    distro: Distro | None = None
    packages: list[DebPackage] | None = None  # None: the rootfs is not a Debian one (not listed)
    sdk_supplier: str = "NOASSERTION"
    driver_supplier: str = DEFAULT_DRIVER_SUPPLIER
    tool_version: str = ""
    author: str = ""                # who made the SBOM; the supplier unless set


# -- shared helpers ------------------------------------------------------------------------

def generic_purl(name: str, version: str, sha256: str = "", url: str = "") -> str:
    """`pkg:generic/NAME@VERSION?checksum=sha256:...&download_url=...` (purl spec encoding)."""
    purl = f"pkg:generic/{quote(name, safe='')}"
    if version:
        purl += f"@{quote(version, safe=':')}"
    qualifiers = {}
    if sha256:
        qualifiers["checksum"] = f"sha256:{sha256}"
    if url and "://" in url:
        qualifiers["download_url"] = url
    if qualifiers:
        purl += "?" + "&".join(f"{k}={quote(v, safe=':/')}" for k, v in sorted(qualifiers.items()))
    return purl


def maintainer(text: str) -> tuple[str, str]:
    """A Debian Maintainer field as (name, email)."""
    match = _MAINTAINER.match(text or "")
    name, email = (match.group(1), match.group(2) or "") if match else (text, "")
    return name.replace("(", "").replace(")", "").strip() or "NOASSERTION", email.strip()


def _uuid(inputs: SbomInputs) -> uuid.UUID:
    """The same release always gets the same document id (a rebuilt release is identical)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{NAMESPACE_BASE}/{inputs.product}/{inputs.version}/"
                                          f"{inputs.firmware.sha256}")


def _author(inputs: SbomInputs) -> str:
    return inputs.author or inputs.supplier


def _is_boot_image(artifact: Artifact) -> bool:
    return Path(artifact.name).name == "boot.img"


class _Graph:
    """Components and what contains what, shared by both formats."""

    def __init__(self, inputs: SbomInputs):
        self.inputs = inputs
        self.nodes: list[dict] = []
        self.edges: list[tuple[str, str, str]] = []  # (from, relationship, to); CONTAINS, PATCH_APPLIED, ...
        i = inputs
        root = self._node("firmware", "firmware", i.product, i.version, i.supplier, i.firmware,
                          purl=generic_purl(i.product, i.version, i.firmware.sha256),
                          extra={"file": i.firmware.name})
        sdk = self._node("sdk", "source", Path(i.sdk.name).name, i.sdk.version, i.sdk_supplier, i.sdk,
                         purl=generic_purl(Path(i.sdk.name).name, i.sdk.version, i.sdk.sha256, i.sdk.url),
                         url=i.sdk.url)
        kernel = self._node("kernel", "kernel", "linux", i.kernel_version, i.sdk_supplier, None,
                            purl=generic_purl("linux", i.kernel_version),
                            extra={"kernel-commit": i.kernel_commit})
        driver = self._node("driver", "driver", i.driver_name, i.driver.version, i.driver_supplier, i.driver,
                            purl=generic_purl(i.driver_name, i.driver.version, i.driver.sha256, i.driver.url),
                            url=i.driver.url,
                            extra={"driver-date": i.driver_date, "overlay-commit": i.driver_commit,
                                   "tarball": Path(i.driver.name).name})
        holder = root
        for image in i.images:
            base = Path(image.name).name
            ref = self._node(f"image:{image.name}", "file", base, image.version or i.version, i.supplier,
                             image, purl=generic_purl(base, image.version or i.version, image.sha256))
            self.edges.append((root, "CONTAINS", ref))
            if _is_boot_image(image):
                holder = ref
        self.edges.append((holder, "CONTAINS", kernel))
        self.edges.append((kernel, "CONTAINS", driver))
        self.edges.append((kernel, "GENERATED_FROM", sdk))
        if i.kernel_config:
            config = self._node("kernel-config", "file", i.kernel_config.name, i.kernel_version, i.sdk_supplier,
                                i.kernel_config, purl=generic_purl("linux-config", i.kernel_version,
                                                                   i.kernel_config.sha256))
            self.edges.append((config, "BUILD_DEPENDENCY_OF", kernel))
        for patch in i.patches:
            ref = self._node(f"patch:{patch.name}", "patch", Path(patch.name).name, patch.version or
                             patch.sha256[:12], i.supplier, patch,
                             purl=generic_purl(Path(patch.name).name, patch.version or patch.sha256[:12],
                                               patch.sha256))
            self.edges.append((ref, "PATCH_APPLIED", kernel))
        for blob in i.bootloader:
            base = Path(blob.name).name
            ref = self._node(f"boot:{blob.name}", "bootloader", base, blob.version or i.sdk.version,
                             i.sdk_supplier, blob, purl=generic_purl(base, blob.version or i.sdk.version, blob.sha256))
            self.edges.append((root, "CONTAINS", ref))
            self.edges.append((ref, "GENERATED_FROM", sdk))
        if i.rootfs:
            base = Path(i.rootfs.name).name
            rootfs = self._node("rootfs", "file", base, i.rootfs.version or i.version, i.supplier,
                                i.rootfs, purl=generic_purl(base, i.rootfs.version or i.version, i.rootfs.sha256),
                                extra=self._rootfs_properties())
            self.edges.append((root, "CONTAINS", rootfs))
            for package in i.packages or []:
                name, email = maintainer(package.maintainer)
                ref = self._node(f"deb:{package.name}:{package.architecture}", "deb", package.name,
                                 package.version, name, None, purl=package.purl(i.distro), email=email,
                                 url=package.homepage,
                                 extra={"deb-source": package.source or package.name,
                                        "deb-architecture": package.architecture})
                self.edges.append((rootfs, "CONTAINS", ref))

    def _rootfs_properties(self) -> dict:
        i = self.inputs
        extra = {"packages": "not listed: not an ext file system with a dpkg database"
                 if i.packages is None else str(len(i.packages))}
        if i.distro:
            extra["distro"] = i.distro.pretty_name or f"{i.distro.id} {i.distro.version_id}"
        return extra

    def _node(self, key, kind, name, version, supplier, artifact, *, purl, url="", email="", extra=None) -> str:
        self.nodes.append({"key": key, "kind": kind, "name": name, "version": version or "NOASSERTION",
                           "supplier": supplier or "NOASSERTION", "email": email, "artifact": artifact,
                           "purl": purl, "url": url, "extra": {k: v for k, v in (extra or {}).items() if v}})
        return key


# -- CycloneDX -----------------------------------------------------------------------------

_CDX_TYPES = {"firmware": "firmware", "source": "file", "kernel": "operating-system", "driver": "device-driver",
              "file": "file", "patch": "file", "bootloader": "firmware", "deb": "library"}


def _cdx_component(node: dict, inputs: SbomInputs, patches: list[dict]) -> dict:
    supplier = {"name": node["supplier"]}
    if node["email"]:
        supplier["contact"] = [{"email": node["email"]}]
    component = {"type": _CDX_TYPES[node["kind"]], "bom-ref": node["key"], "supplier": supplier,
                 "name": node["name"], "version": node["version"], "purl": node["purl"]}
    artifact = node["artifact"]
    if artifact:
        component["hashes"] = [{"alg": "SHA-256", "content": artifact.sha256}]
    references = []
    if node["url"] and "://" in node["url"]:
        kind = {"source": "source-distribution", "driver": "distribution", "deb": "website"}.get(node["kind"],
                                                                                                  "distribution")
        reference = {"type": kind, "url": node["url"]}
        if artifact:
            reference["hashes"] = [{"alg": "SHA-256", "content": artifact.sha256}]
        references.append(reference)
    if node["kind"] == "kernel":
        if inputs.kernel_config:
            references.append({"type": "build-meta", "url": inputs.kernel_config.name,
                               "comment": "the kernel configuration it was built with",
                               "hashes": [{"alg": "SHA-256", "content": inputs.kernel_config.sha256}]})
        pedigree = {"commits": [{"uid": inputs.kernel_commit}], "patches": patches}
        component["pedigree"] = pedigree
    if node["kind"] == "driver":
        component["pedigree"] = {"commits": [{"uid": inputs.driver_commit}]}
    if references:
        component["externalReferences"] = references
    properties = [{"name": f"{PROPERTY}:{key}", "value": value} for key, value in node["extra"].items()]
    if node["kind"] == "kernel" and inputs.kernel_config:
        properties.append({"name": f"{PROPERTY}:kernel-config", "value": inputs.kernel_config.name})
    if node["kind"] == "patch":
        properties.append({"name": f"{PROPERTY}:patch-sha256", "value": artifact.sha256})
    if properties:
        component["properties"] = properties
    return component


def cyclonedx(inputs: SbomInputs) -> dict:
    """The CycloneDX 1.6 BOM (a JSON-ready dict)."""
    graph = _Graph(inputs)
    patches = [{"type": "unofficial", "diff": {"url": p.name}} for p in inputs.patches]
    nodes = {node["key"]: node for node in graph.nodes}
    root = _cdx_component(nodes["firmware"], inputs, patches)
    components = [_cdx_component(node, inputs, patches) for node in graph.nodes if node["key"] != "firmware"]
    depends: dict[str, list[str]] = {node["key"]: [] for node in graph.nodes}
    for source, relation, target in graph.edges:
        if relation == "CONTAINS":
            depends[source].append(target)
        else:  # GENERATED_FROM, PATCH_APPLIED, BUILD_DEPENDENCY_OF: the built thing depends on its input
            built, used = (source, target) if relation == "GENERATED_FROM" else (target, source)
            depends[built].append(used)
    author = _author(inputs)
    return {
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": CYCLONEDX_SPEC,
        "serialNumber": f"urn:uuid:{_uuid(inputs)}",
        "version": 1,
        "metadata": {
            "timestamp": inputs.created,
            "lifecycles": [{"phase": "build"}],
            "tools": {"components": [{"type": "application", "name": "rk3576-build",
                                      "version": inputs.tool_version or "unknown"}]},
            "authors": [{"name": author}],
            "supplier": {"name": inputs.supplier},
            "component": root,
        },
        "components": components,
        "dependencies": [{"ref": key, "dependsOn": sorted(set(value))} for key, value in depends.items()],
    }


# -- SPDX ----------------------------------------------------------------------------------

_SPDX_PURPOSE = {"firmware": "FIRMWARE", "source": "SOURCE", "kernel": "OPERATING-SYSTEM", "driver": "SOURCE",
                 "file": "FILE", "patch": "FILE", "bootloader": "FIRMWARE", "deb": "LIBRARY"}


def _spdx_id(key: str) -> str:
    return "SPDXRef-" + _SPDX_ID_BAD.sub("-", key).strip("-")


def _spdx_supplier(name: str, email: str) -> str:
    if not name or name == "NOASSERTION":
        return "NOASSERTION"
    return f"Organization: {name}" + (f" ({email})" if email else "")


def _spdx_created(timestamp: str) -> str:
    """SPDX wants YYYY-MM-DDThh:mm:ssZ."""
    text = timestamp.replace("+00:00", "Z")
    return text.split(".")[0].rstrip("Z") + "Z"


def spdx(inputs: SbomInputs) -> dict:
    """The SPDX 2.3 document (a JSON-ready dict)."""
    graph = _Graph(inputs)
    ids = {node["key"]: _spdx_id(node["key"]) for node in graph.nodes}
    packages = []
    for node in graph.nodes:
        artifact = node["artifact"]
        package = {"SPDXID": ids[node["key"]], "name": node["name"], "versionInfo": node["version"],
                   "supplier": _spdx_supplier(node["supplier"], node["email"]),
                   "downloadLocation": node["url"] if _SPDX_DOWNLOAD.match(node["url"]) and node["kind"] != "deb"
                   else "NOASSERTION",
                   "filesAnalyzed": False, "primaryPackagePurpose": _SPDX_PURPOSE[node["kind"]],
                   "licenseConcluded": "NOASSERTION", "licenseDeclared": "NOASSERTION",
                   "copyrightText": "NOASSERTION",
                   "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                                     "referenceLocator": node["purl"]}]}
        if node["kind"] == "deb" and node["url"]:
            package["homepage"] = node["url"]
        if artifact:
            package["checksums"] = [{"algorithm": "SHA256", "checksumValue": artifact.sha256}]
            if node["kind"] != "deb":
                package["packageFileName"] = artifact.name
        comments = [f"{key}: {value}" for key, value in node["extra"].items()]
        if node["kind"] == "driver":
            comments.insert(0, "device driver, overlaid on the kernel tree")
        if node["kind"] == "kernel":
            comments.append(f"kernel commit: {inputs.kernel_commit}")
        if comments:
            package["comment"] = "; ".join(dict.fromkeys(comments))
        packages.append(package)
    relationships = [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                      "relatedSpdxElement": ids["firmware"]}]
    relationships += [{"spdxElementId": ids[a], "relationshipType": relation, "relatedSpdxElement": ids[b]}
                      for a, relation, b in graph.edges]
    author = _author(inputs)
    return {
        "spdxVersion": SPDX_VERSION,
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{inputs.product}-{inputs.version}",
        "documentNamespace": f"{NAMESPACE_BASE}/{quote(inputs.product, safe='')}/"
                             f"{quote(inputs.version, safe='')}/{_uuid(inputs)}",
        "creationInfo": {"created": _spdx_created(inputs.created),
                         "creators": [f"Tool: rk3576-build-{inputs.tool_version or 'unknown'}",
                                      f"Organization: {author}"]},
        "documentDescribes": [ids["firmware"]],
        "packages": packages,
        "relationships": relationships,
    }


def package_versions(document: dict) -> dict[str, str]:
    """`name:arch` -> version of the Debian packages in a CycloneDX document made here (for
    release notes: what changed between two releases)."""
    result = {}
    for component in document.get("components", []):
        if not str(component.get("purl", "")).startswith("pkg:deb/"):
            continue
        arch = next((p["value"] for p in component.get("properties", [])
                     if p["name"] == f"{PROPERTY}:deb-architecture"), "")
        result[f"{component['name']}:{arch}" if arch else component["name"]] = component.get("version", "")
    return result
