"""A release directory as ONE OCI artifact in a registry, and back (docs/release.md#publishing).

publish() pushes every file of a release as a layer of one OCI image manifest whose artifactType
is ARTIFACT_TYPE: the images with their media types, the SBOMs, the provenance, the signatures,
SHA256SUMS and the notes; each layer's `org.opencontainers.image.title` is its path in the
release, so `oras pull` also rebuilds the directory. The manifest carries the standard
`org.opencontainers.image.*` annotations (version, revision, source, created, title, vendor).
Blobs go through core/oci.py (chunked, streamed from disk).

pull() fetches into a fresh directory: the manifest's layers are checked against the signed
SHA256SUMS before any image is downloaded, every blob against its digest, then the whole
directory with verify_release(); it is renamed into place only then, and nothing is left on a
refusal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rk3576_build import __version__
from rk3576_build.core import oci, signing
from rk3576_build.core.errors import UserError
from rk3576_build.core.files import sha256_file
from rk3576_build.core.oci import DigestMismatch, Reference, Registry, RegistryError
from rk3576_build.core.signing import SignatureError
from rk3576_build.core.text import human_size, redact_url
from rk3576_build.release import bundle

_log = logging.getLogger(__name__)

ARTIFACT_TYPE = "application/vnd.rk3576-build.release.v1+json"
ANNOTATION = "org.opencontainers.image"
# The media type of a release file, by name (first match); anything else is octet-stream.
MEDIA_TYPES = (
    ("update.img", "application/vnd.rockchip.update-image"),
    ("images/parameter.txt", "application/vnd.rockchip.parameter+text"),
    ("images/*.img", "application/vnd.rockchip.partition-image"),
    ("images/*.bin", "application/vnd.rockchip.loader"),
    (bundle.CYCLONEDX, "application/vnd.cyclonedx+json"),
    (bundle.SPDX, "application/spdx+json"),
    (bundle.PROVENANCE, "application/vnd.dsse.envelope.v1+json"),
    ("*.sig", "application/vnd.rk3576-build.sshsig"),
    (bundle.SUMS, "text/plain; charset=utf-8"),
    (bundle.NOTES, "text/markdown; charset=utf-8"),
    (bundle.MANIFEST, "application/vnd.rk3576-build.build-manifest.v1+json"),
    (bundle.KERNEL_CONFIG, "text/plain; charset=utf-8"),
    ("patches/*", "text/x-diff"),
)
MAX_LAYERS = 10_000
MAX_BYTES = 256 << 30           # the most a pull writes (the declared sizes are summed first)
MAX_SMALL = 16 << 20            # SHA256SUMS and its signature, read before anything else
MAX_NAME = 1024


def media_type(name: str) -> str:
    """The media type a release file is published with."""
    path = PurePosixPath(name)
    for pattern, kind in MEDIA_TYPES:
        if path.match(pattern) and len(path.parts) == len(PurePosixPath(pattern).parts):
            return kind
    return "application/octet-stream"


@dataclass(frozen=True)
class Published:
    """Where a release went: the tagged reference, the manifest's digest, and what it holds."""

    reference: Reference
    digest: str
    files: int
    size: int

    @property
    def pinned(self) -> str:
        """`oci://HOST/REPO@sha256:...`: the reference that cannot move."""
        return self.reference.at(self.digest).url


@dataclass(frozen=True)
class Pulled:
    """A pulled and verified release: where it is, who signed it, the manifest's digest."""

    path: Path
    signer: str
    digest: str


# -- publishing ----------------------------------------------------------------------------

def _release_listing(release: Path) -> dict[str, str]:
    """name -> sha256 of every file of a complete release (SHA256SUMS lists all but itself and its
    signature, and nothing else is there); UserError otherwise."""
    sums = release / bundle.SUMS
    if not release.is_dir() or not sums.is_file():
        raise UserError(f"{release} is not a release (no {bundle.SUMS}): make one with `rk3576-build release`")
    listed, problems = bundle.read_sums(sums)
    present = set(bundle.release_files(release))
    extra = sorted(present - set(listed) - {bundle.SUMS, bundle.SUMS + ".sig"})
    missing = sorted(set(listed) - present)
    if bundle.SUMS + ".sig" not in present:
        problems.append(f"{bundle.SUMS}.sig is missing")
    problems += [f"{name}: not listed in {bundle.SUMS}" for name in extra]
    problems += [f"{name}: listed but missing" for name in missing]
    if problems:
        raise UserError(f"{release} is not a complete release ({'; '.join(problems[:5])}): "
                        "check it with `rk3576-build verify-release`")
    return listed


def _facts(release: Path) -> dict[str, str]:
    """The annotations' values a release records: version, created, title, vendor, kernel commit,
    SDK URL (from its CycloneDX SBOM)."""
    document = bundle.load_sbom(release)
    metadata = document.get("metadata") or {}
    root = metadata.get("component") or {}
    facts = {"version": str(root.get("version", "")), "created": str(metadata.get("timestamp", "")),
             "title": str(root.get("name", "")), "vendor": str((metadata.get("supplier") or {}).get("name", ""))}
    for component in document.get("components", []):
        if not isinstance(component, dict):
            continue
        properties = {p.get("name"): p.get("value") for p in component.get("properties", []) if isinstance(p, dict)}
        if component.get("bom-ref") == "kernel":
            facts["kernel_commit"] = str(properties.get(f"{bundle.sbom.PROPERTY}:kernel-commit") or "")
        if component.get("bom-ref") == "sdk":
            urls = [r.get("url", "") for r in component.get("externalReferences", []) if isinstance(r, dict)]
            facts["sdk_url"] = redact_url(urls[0]) if urls else ""
    return facts


def oci_annotations(release: Path, *, revision: str | None = None, source: str | None = None) -> dict[str, str]:
    """The manifest's `org.opencontainers.image.*` annotations. `revision` defaults to the kernel
    tree's commit the release was built from, `source` to the SDK's URL (credentials removed)."""
    facts = _facts(release)
    values = {"version": facts["version"], "created": facts["created"], "title": facts["title"],
              "vendor": facts["vendor"], "revision": revision or facts.get("kernel_commit", ""),
              "source": source or facts.get("sdk_url", ""),
              "description": f"{facts['title']} {facts['version']} firmware release made by rk3576-build "
                             f"{__version__} (verify: rk3576-build pull REF DIR --trusted KEY.pub)"}
    return {f"{ANNOTATION}.{key}": value for key, value in values.items() if value}


def publish(release: Path, url: str, *, trusted=None, revision: str | None = None, source: str | None = None,
            registry: Registry | None = None, echo: Callable[[str], None] = _log.info) -> Published:
    """Push the release directory `release` to `url` (`oci://HOST[:PORT]/REPO:TAG`) as one artifact.

    With `trusted` keys the release is verified first (verify_release); without, it must at least
    be complete (every file listed in SHA256SUMS). Credentials: `docker login HOST`, or
    RK3576_REGISTRY_USER/RK3576_REGISTRY_PASSWORD.
    """
    release = Path(release)
    ref = oci.parse_reference(url, tag=True, what="publish target")
    if ref.digest:
        raise UserError(f"publish target {url}: name a tag, not a digest (the digest is known once pushed)")
    listed = _release_listing(release)
    if trusted:
        signer = bundle.verify_release(release, trusted)
        echo(f"publish: {release} verifies (signed by {signer})")
    registry = registry or Registry.for_reference(ref)
    names = sorted([*listed, bundle.SUMS, bundle.SUMS + ".sig"])
    total = sum((release / name).stat().st_size for name in names)
    echo(f"publish: {len(names)} files, {human_size(total)} to {ref}")
    layers = []
    for name in names:
        path = release / name
        digest = f"sha256:{listed[name]}" if name in listed else f"sha256:{sha256_file(path)}"
        try:
            digest, size = registry.push_blob(ref.repository, path, digest)
        except DigestMismatch:
            raise UserError(f"{name} does not match its sha256 in {bundle.SUMS}: check the release with "
                            "`rk3576-build verify-release`") from None
        layers.append({"mediaType": media_type(name), "digest": digest, "size": size,
                       "annotations": {oci.TITLE: name}})
    config_digest, config_size = registry.push_bytes(ref.repository, oci.EMPTY_JSON_DATA)
    manifest = {"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
                "config": {"mediaType": oci.EMPTY_JSON, "digest": config_digest, "size": config_size},
                "layers": layers, "annotations": oci_annotations(release, revision=revision, source=source)}
    digest = registry.push_manifest(ref.repository, str(ref.tag), manifest)
    published = Published(ref, digest, len(names), total)
    echo(f"publish: {ref} is {published.pinned}")
    return published


# -- pulling -------------------------------------------------------------------------------

def _safe_name(name) -> str | None:
    """A layer title that is a plain relative path inside the release, or None."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME or "\\" in name or name.startswith("/"):
        return None
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        return None
    parts = name.split("/")
    if any(part in ("", ".", "..") or len(part) > 255 for part in parts) or len(parts) > 8:
        return None
    return name


def _layers(manifest: dict, label: str) -> dict[str, tuple[str, int]]:
    """name -> (digest, size) of an artifact's layers, every name and number checked."""
    if manifest.get("artifactType") != ARTIFACT_TYPE:
        kind = manifest.get("artifactType") or (manifest.get("config") or {}).get("mediaType") or "no artifactType"
        raise UserError(f"{label} is not an rk3576-build release ({kind})", exit_code=1)
    raw = manifest.get("layers")
    if not isinstance(raw, list) or not raw or len(raw) > MAX_LAYERS:
        raise RegistryError(f"{label}: the manifest's layers are missing or too many")
    layers: dict[str, tuple[str, int]] = {}
    folders: set[str] = set()
    for layer in raw:
        if not isinstance(layer, dict):
            raise RegistryError(f"{label}: a layer is not an object")
        title = (layer.get("annotations") or {}).get(oci.TITLE)
        name = _safe_name(title)
        if name is None:
            raise DigestMismatch(f"{label}: a layer's name {str(title)[:80]!r} is not a path inside a release")
        digest, size = layer.get("digest"), layer.get("size")
        if not isinstance(digest, str) or not oci.DIGEST_RE.fullmatch(digest) or isinstance(size, bool) \
                or not isinstance(size, int) or size < 0:
            raise RegistryError(f"{label}: layer {name} has no sha256 digest and size")
        parents = {"/".join(name.split("/")[:i]) for i in range(1, name.count("/") + 1)}
        if name in layers or name in folders or parents & set(layers):
            raise DigestMismatch(f"{label}: layer {name} collides with another layer's path")
        layers[name] = (digest, size)
        folders |= parents
    return layers


def _fresh_target(dest: Path) -> None:
    if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
        raise UserError(f"{dest} already exists: pull into a new directory")


def pull(url: str, dest: Path, trusted, *, max_bytes: int = MAX_BYTES, registry: Registry | None = None,
         echo: Callable[[str], None] = _log.info) -> Pulled:
    """Fetch the release `url` (`oci://HOST/REPO:TAG` or `@sha256:...`) into the new directory `dest`
    and verify it against `trusted` keys; the directory appears only when everything checked out.

    SignatureError/DigestMismatch (exit 1) for a release that does not verify or a blob that is not
    what the manifest says; nothing is left behind then.
    """
    dest = Path(dest)
    ref = oci.parse_reference(url, tag=True, what="pull source")
    keys = signing.load_trusted(trusted)
    if not keys:
        raise UserError("no trusted keys: give the release signer's .pub with --trusted")
    _fresh_target(dest)
    registry = registry or Registry.for_reference(ref)
    found = registry.pull_manifest(ref.repository, str(ref.ref))
    if found is None:
        raise UserError(f"no release at {ref}: check the tag (and that it was published)")
    manifest, digest = found
    layers = _layers(manifest, str(ref))
    total = sum(size for _, size in layers.values())
    if total > max_bytes:
        raise UserError(f"{ref} is {human_size(total)}, more than a pull takes ({human_size(max_bytes)})")
    for name in (bundle.SUMS, bundle.SUMS + ".sig"):
        if name not in layers:
            raise SignatureError(f"{ref}: {name} is missing: not a signed release")
        if layers[name][1] > MAX_SMALL:
            raise RegistryError(f"{ref}: {name} is larger than {human_size(MAX_SMALL)}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.pull-", dir=dest.parent))
    try:
        echo(f"pull: {ref} ({len(layers)} files, {human_size(total)}) into {dest}")
        # The signed list first: an untrusted or altered release is refused before any image comes.
        for name in (bundle.SUMS, bundle.SUMS + ".sig"):
            registry.pull_blob(ref.repository, *layers[name], work / name, label=f"{ref} {name}")
        signer = signing.verify_file(work / bundle.SUMS, keys, bundle.NAMESPACE)
        listed, problems = bundle.read_sums(work / bundle.SUMS)
        for name, (layer_digest, _size) in sorted(layers.items()):
            if name in (bundle.SUMS, bundle.SUMS + ".sig"):
                continue
            if name not in listed:
                problems.append(f"{name}: not listed in {bundle.SUMS}")
            elif layer_digest != f"sha256:{listed[name]}":
                problems.append(f"{name}: the artifact's layer is not the file {bundle.SUMS} lists")
        problems += [f"{name}: listed in {bundle.SUMS} but not in the artifact"
                     for name in sorted(set(listed) - set(layers))]
        if problems:
            raise SignatureError(f"{ref} does not verify: {'; '.join(problems[:10])}")
        for name, (layer_digest, size) in sorted(layers.items()):
            target = work / name
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            registry.pull_blob(ref.repository, layer_digest, size, target, label=f"{ref} {name}")
        signer = bundle.verify_release(work, keys)
        with contextlib.suppress(FileNotFoundError):
            dest.rmdir()  # an empty directory the caller made
        os.rename(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    echo(f"pull: {dest} verifies (signed by {signer})")
    return Pulled(dest, signer, digest)
