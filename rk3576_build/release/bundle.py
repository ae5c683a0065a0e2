"""A release directory a pipeline can ship, and its check (docs/release.md lists every file).

make_release() copies update.img and the partition images it is packed from, writes the SBOMs
(CycloneDX, SPDX), the signed provenance, RELEASE.md (with what changed against a previous
release), signs them and SHA256SUMS with the user's OpenSSH key. verify_release() checks the
signatures against trusted keys, every listed file's sha256, and that nothing unlisted sits
beside them. The release is made in `OUT.partial` and renamed when complete.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rk3576_build import __version__
from rk3576_build.core import signing
from rk3576_build.core.errors import UserError
from rk3576_build.core.files import sha256_file
from rk3576_build.core.signing import SignatureError
from rk3576_build.release import provenance, sbom
from rk3576_build.release.rootfs import rootfs_packages

_log = logging.getLogger(__name__)

NAMESPACE = "release@rk3576-build.invalid"  # the SSHSIG namespace of every release signature
SUMS = "SHA256SUMS"
CYCLONEDX = "sbom.cdx.json"
SPDX = "sbom.spdx.json"
PROVENANCE = "provenance.intoto.jsonl"
NOTES = "RELEASE.md"
MANIFEST = "manifest.json"
KERNEL_CONFIG = "kernel.config"
IMAGES = "images"
PATCHES = "patches"
SIGNED = (CYCLONEDX, SPDX, PROVENANCE)  # signed on their own, besides SHA256SUMS
BOOTLOADER_NAMES = ("MiniLoaderAll.bin", "uboot.img", "trust.img", "idblock.bin", "idbloader.img")
IMAGE_NAMES = ("parameter.txt", "package-file")
CHUNK = 4 << 20  # copy size: images are gigabytes
_SUMS_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")
_SDK_VERSION = re.compile(r"[Vv](\d+(?:\.\d+)+)")
_MAKE_VAR = r"^{}\s*=[ \t]*(\S*)[ \t]*$"


# -- files ---------------------------------------------------------------------------------

def _copy_hashed(src: Path, dst: Path) -> sbom.Artifact:
    """Copy in one pass that also hashes (images are gigabytes)."""
    digest = hashlib.sha256()
    size = 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    with Path(src).open("rb") as fin, dst.open("wb") as fout:
        while chunk := fin.read(CHUNK):
            digest.update(chunk)
            fout.write(chunk)
            size += len(chunk)
    return sbom.Artifact(name=dst.name, sha256=digest.hexdigest(), size=size)


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def release_files(root: Path) -> list[str]:
    """Every file under `root` as a relative POSIX path, sorted; symbolic links included."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            found.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(found)


def write_sums(root: Path, known: Mapping[str, str] | None = None) -> Path:
    """SHA256SUMS (sha256sum's format) of every file in the release but itself and its signature;
    `known` digests (of files just copied and hashed) are not computed again."""
    known = known or {}
    names = [n for n in release_files(root) if n not in (SUMS, SUMS + ".sig")]
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        digests = list(pool.map(lambda n: known.get(n) or sha256_file(root / n), names))
    path = root / SUMS
    path.write_text("".join(f"{digest}  {name}\n" for digest, name in zip(digests, names, strict=True)))
    return path


# -- what the build says -------------------------------------------------------------------

def _input(manifest: Mapping, name: str) -> dict:
    for item in manifest.get("inputs", []):
        if item.get("name") == name:
            return dict(item)
    raise UserError(f"the manifest has no `{name}` input: rerun the build's manifest step")


def _make_version(path: Path) -> str:
    """VERSION.PATCHLEVEL[.SUBLEVEL]EXTRAVERSION of a kernel or U-Boot Makefile, "" if unreadable."""
    try:
        head = Path(path).read_text(errors="replace")[:8192]
    except OSError:
        return ""
    values = {}
    for key in ("VERSION", "PATCHLEVEL", "SUBLEVEL", "EXTRAVERSION"):
        match = re.search(_MAKE_VAR.format(key), head, re.MULTILINE)
        values[key] = match.group(1) if match else ""
    numbers = [values[k] for k in ("VERSION", "PATCHLEVEL", "SUBLEVEL") if values[k]]
    return ".".join(numbers) + values["EXTRAVERSION"] if numbers else ""


def _rk_config(sdk_dir: Path) -> dict[str, str]:
    """output/.config of the SDK (RK_* settings lunch chose)."""
    values = {}
    config = Path(sdk_dir) / "output" / ".config"
    if config.is_file():
        for line in config.read_text(errors="replace").splitlines():
            key, sep, value = line.partition("=")
            if sep and key.startswith("RK_"):
                values[key] = value.strip().strip('"')
    return values


def kernel_config_text(sdk_dir: Path, kernel_dir: Path) -> str | None:
    """The kernel configuration the image was built with: the kernel tree's .config, else (an SDK
    that builds out of tree, or the sample) the defconfig and fragments output/.config names."""
    built = Path(kernel_dir) / ".config"
    if built.is_file():
        return built.read_text(errors="replace")
    rk = _rk_config(sdk_dir)
    if not rk.get("RK_KERNEL_CFG"):
        return None
    configs = Path(kernel_dir) / "arch" / rk.get("RK_KERNEL_ARCH", "arm64") / "configs"
    names = [rk["RK_KERNEL_CFG"], *rk.get("RK_KERNEL_CFG_FRAGMENTS", "").split()]
    parts = [f"# rk3576-build: no built .config in the kernel tree; the defconfig and fragments "
             f"output/.config names: {' '.join(names)}\n"]
    for name in names:
        path = configs / name
        if not path.is_file():
            return None
        parts.append(f"# --- {name}\n{path.read_text(errors='replace')}")
    return "".join(parts)


def _filename(url: str, configured: str | None) -> str:
    return configured or url.rstrip("/").rsplit("/", 1)[-1] or "source"


def _image_files(images_dir: Path, update_name: str) -> list[Path]:
    if not images_dir.is_dir():
        raise UserError(f"image directory {images_dir} not found: build the image first")
    chosen = []
    for path in sorted(images_dir.iterdir()):
        if path.name.startswith(".") or path.name == update_name or not path.is_file():
            continue
        if path.suffix in (".img", ".bin") or path.name in IMAGE_NAMES:
            chosen.append(path)
    return chosen


# -- release notes -------------------------------------------------------------------------

def _order(char: str) -> int:
    if char == "~":
        return -1
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


_TEXT, _NUMBER = re.compile(r"\D*"), re.compile(r"\d*")


def _lead(pattern: re.Pattern, text: str) -> str:
    match = pattern.match(text)
    return match.group() if match else ""


def _compare_part(a: str, b: str) -> int:
    """deb-version(7) comparison of an upstream version or a revision."""
    while a or b:
        a_text, b_text = _lead(_TEXT, a), _lead(_TEXT, b)
        for i in range(max(len(a_text), len(b_text))):
            ca = _order(a_text[i]) if i < len(a_text) else 0
            cb = _order(b_text[i]) if i < len(b_text) else 0
            if ca != cb:
                return -1 if ca < cb else 1
        a, b = a[len(a_text):], b[len(b_text):]
        a_num, b_num = _lead(_NUMBER, a), _lead(_NUMBER, b)
        if int(a_num or 0) != int(b_num or 0):
            return -1 if int(a_num or 0) < int(b_num or 0) else 1
        a, b = a[len(a_num):], b[len(b_num):]
    return 0


def compare_deb_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as Debian orders two package versions (epoch, upstream, revision)."""
    def split(version: str) -> tuple[int, str, str]:
        epoch, _, rest = version.rpartition(":") if ":" in version else ("0", "", version)
        upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
        return int(epoch or 0) if epoch.isdigit() else 0, upstream, revision
    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


def _summary(document: Mapping) -> dict:
    """What RELEASE.md compares, from a CycloneDX document made by sbom.cyclonedx()."""
    components = {c.get("bom-ref"): c for c in document.get("components", []) if isinstance(c, dict)}
    kernel = components.get("kernel", {})
    driver = components.get("driver", {})
    props = {p.get("name"): p.get("value") for p in driver.get("properties", [])}
    kernel_props = {p.get("name"): p.get("value") for p in kernel.get("properties", [])}
    patches = {c.get("name"): (c.get("hashes") or [{}])[0].get("content") for ref, c in components.items()
               if str(ref).startswith("patch:")}
    root = document.get("metadata", {}).get("component", {})
    return {"product": root.get("name", ""), "version": root.get("version", ""),
            "driver": f"{driver.get('version', '')} ({props.get(f'{sbom.PROPERTY}:driver-date', '')})",
            "kernel": kernel.get("version", ""),
            "kernel_commit": kernel_props.get(f"{sbom.PROPERTY}:kernel-commit", ""),
            "patches": patches, "packages": sbom.package_versions(dict(document))}


def changes(previous: Mapping, current: Mapping) -> list[str]:
    """Markdown list items: what changed from one release's CycloneDX SBOM to another's."""
    old, new = _summary(previous), _summary(current)
    lines = []
    for key, label in (("driver", "RKNPU driver"), ("kernel", "Kernel"), ("kernel_commit", "Kernel commit")):
        if old[key] != new[key]:
            lines.append(f"- {label}: {old[key] or 'none'} -> {new[key] or 'none'}")
    added = sorted(set(new["patches"]) - set(old["patches"]))
    removed = sorted(set(old["patches"]) - set(new["patches"]))
    changed = sorted(n for n in set(old["patches"]) & set(new["patches"]) if old["patches"][n] != new["patches"][n])
    for what, names in (("added", added), ("removed", removed), ("changed", changed)):
        if names:
            lines.append(f"- Patches {what}: {', '.join(names)}")
    before, after = old["packages"], new["packages"]
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    upgraded: list[str] = []
    downgraded: list[str] = []
    for name in sorted(set(before) & set(after)):
        if before[name] != after[name]:
            target = upgraded if compare_deb_versions(after[name], before[name]) > 0 else downgraded
            target.append(f"{name} {before[name]} -> {after[name]}")
    for what, items in (("added", [f"{n} {after[n]}" for n in added]),
                        ("removed", [f"{n} {before[n]}" for n in removed]),
                        ("upgraded", upgraded), ("downgraded", downgraded)):
        if items:
            lines.append(f"- Debian packages {what} ({len(items)}):")
            lines.extend(f"  - {item}" for item in items)
    return lines or ["- Nothing the SBOM records changed."]


def _notes(inputs: sbom.SbomInputs, files: Sequence[str], recipe_digest: str, signer: str,
           since: tuple[Path, Mapping] | None, document: Mapping) -> str:
    i = inputs
    packages = ("not listed (not an ext file system with a dpkg database)" if i.packages is None
                else f"{len(i.packages)}" + (f" ({i.distro.pretty_name})" if i.distro and i.distro.pretty_name else ""))
    lines = [f"# {i.product} {i.version}", "",
             f"Built {i.created} with rk3576-build {i.tool_version} from recipe `{i.product}` "
             f"(sha256 {recipe_digest}); signed by `{signer}`.", "",
             "| | |", "|---|---|",
             f"| update.img | sha256 `{i.firmware.sha256}` |",
             f"| Kernel | Linux {i.kernel_version}, commit `{i.kernel_commit}` |",
             f"| {i.driver_name} driver | {i.driver.version} ({i.driver_date}), tarball `{Path(i.driver.name).name}` "
             f"sha256 `{i.driver.sha256}`, overlay commit `{i.driver_commit}` |",
             f"| Patches | {', '.join(Path(p.name).name for p in i.patches) or 'none'} |",
             f"| SDK | `{Path(i.sdk.name).name}` sha256 `{i.sdk.sha256}` |",
             f"| Debian packages | {packages} |", ""]
    if since:
        path, previous = since
        old = _summary(previous)
        lines += [f"## Changes since {old['product']} {old['version']} ({path.name})", "",
                  *changes(previous, document), ""]
    lines += ["## Files", "", *[f"- `{name}`" for name in files], "",
              "## Verify", "",
              "    rk3576-build verify-release DIR --trusted KEY.pub", "",
              "or without the tool (see docs/release.md):", "",
              "    sha256sum -c SHA256SUMS",
              f"    ssh-keygen -Y verify -f allowed_signers -I release -n {NAMESPACE} -s SHA256SUMS.sig < SHA256SUMS",
              ""]
    return "\n".join(lines)


def load_sbom(release: Path) -> dict:
    path = Path(release) / CYCLONEDX
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{release} is not a release made by rk3576-build ({CYCLONEDX}: {exc})") from None
    if not isinstance(document, dict) or document.get("bomFormat") != "CycloneDX":
        raise UserError(f"{path} is not a CycloneDX document")
    return document


# -- making a release ----------------------------------------------------------------------

def collect_inputs(manifest: Mapping, release: Path, *, sdk_dir: Path, supplier: str, kernel_commit: str,
                   version: str | None, sdk_supplier: str, tool_version: str,
                   update_img: sbom.Artifact, images: Sequence[sbom.Artifact],
                   patches: Sequence[sbom.Artifact], kernel_config: sbom.Artifact | None) -> sbom.SbomInputs:
    """The SBOM's inputs from a build's manifest and the files copied into `release`."""
    recipe = manifest.get("recipe", {})
    sdk_in, driver_in = _input(manifest, "sdk"), _input(manifest, "driver")
    sdk_name = _filename(sdk_in.get("url", ""), (recipe.get("sdk") or {}).get("filename"))
    match = _SDK_VERSION.search(sdk_name)
    sdk_version = match.group(1) if match else sdk_in["sha256"][:12]
    driver_spec = recipe.get("driver") or {}
    created = str(manifest.get("created") or datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
    if not version:
        version = f"{created[:10].replace('-', '')}-{update_img.sha256[:8]}"
    uboot_version = _make_version(Path(sdk_dir) / "u-boot" / "Makefile")
    bootloader, others, rootfs = [], [], None
    for image in images:
        if image.name in BOOTLOADER_NAMES:
            bootloader.append(sbom.Artifact(image.name, image.sha256, image.size,
                                            uboot_version if image.name == "uboot.img" else ""))
        elif image.name == "rootfs.img":
            rootfs = image
        else:
            others.append(image)
    distro, packages = None, None
    if rootfs:
        listed = rootfs_packages(release / IMAGES / rootfs.name)
        if listed:
            distro, packages = listed
    return sbom.SbomInputs(
        product=str(recipe.get("name", "firmware")), version=version, created=created, supplier=supplier,
        firmware=update_img,
        sdk=sbom.Artifact(sdk_name, sdk_in["sha256"], sdk_in.get("size"), sdk_version, sdk_in.get("url", "")),
        kernel_version=str(sdk_in.get("kernel_version", "")), kernel_commit=kernel_commit,
        driver=sbom.Artifact(_filename(driver_in.get("url", ""), driver_spec.get("filename")), driver_in["sha256"],
                             driver_in.get("size"), str(driver_in.get("version", "")), driver_in.get("url", "")),
        driver_name=str(driver_spec.get("name") or "rknpu"), driver_date=str(driver_in.get("date", "")),
        driver_commit=str(driver_in.get("commit", "")),
        images=[sbom.Artifact(f"{IMAGES}/{a.name}", a.sha256, a.size, a.version) for a in others],
        bootloader=[sbom.Artifact(f"{IMAGES}/{a.name}", a.sha256, a.size, a.version) for a in bootloader],
        patches=list(patches), kernel_config=kernel_config,
        rootfs=sbom.Artifact(f"{IMAGES}/{rootfs.name}", rootfs.sha256, rootfs.size) if rootfs else None,
        distro=distro, packages=packages, sdk_supplier=sdk_supplier, tool_version=tool_version)


def make_release(out: Path, *, manifest_path: Path, sdk_dir: Path, key: Path, supplier: str,
                 kernel_commit: str | None = None, images_dir: Path | None = None, since: Path | None = None,
                 trusted=None, version: str | None = None, sdk_supplier: str = sbom.DEFAULT_SDK_SUPPLIER,
                 base_image_id: str | None = None, started=None, finished=None,
                 tool_version: str = __version__, namespace: str = NAMESPACE,
                 echo: Callable[[str], None] = _log.info) -> Path:
    """Make the release directory `out` from a finished build; return its path.

    `manifest_path`: the build's manifest.json; `sdk_dir`: the SDK tree the manifest's artifacts
    are relative to; `images_dir`: where the partition images are (default SDK/rockdev);
    `kernel_commit`: the kernel tree's HEAD (default: the manifest's sdk input `kernel_commit`);
    `key`: the signing key (core.signing.sign); `since`: a previous release to compare with;
    `trusted`: keys the previous release (and this one, after signing) must verify against.
    """
    out, sdk_dir = Path(out), Path(sdk_dir)
    images_dir = Path(images_dir) if images_dir else sdk_dir / "rockdev"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"release directory {out} already exists: choose another --out or remove it")
    try:
        manifest = json.loads(Path(manifest_path).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the build manifest {manifest_path}: {exc}; run the build first") from None
    previous = None
    if since:
        if trusted:
            verify_release(since, trusted, namespace=namespace)
        previous = (Path(since), load_sbom(since))
    kernel_commit = kernel_commit or _input(manifest, "sdk").get("kernel_commit")
    if not kernel_commit:
        raise UserError("the kernel tree's commit is unknown (the manifest has no sdk.kernel_commit): "
                        "rerun the build's kernel and manifest steps")
    update_entry = next((a for a in manifest.get("artifacts", []) if Path(a.get("path", "")).name == "update.img"),
                        None)
    if not update_entry:
        raise UserError("the manifest lists no update.img artifact: add it to the recipe's artifacts")

    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        echo(f"release: copying images into {out}")
        update_img = _copy_hashed(sdk_dir / update_entry["path"], work / "update.img")
        if update_img.sha256 != update_entry.get("sha256"):
            raise UserError(f"{update_entry['path']} changed since the manifest was written "
                            "(its sha256 differs): rerun the build's manifest step")
        images = [_copy_hashed(path, work / IMAGES / path.name)
                  for path in _image_files(images_dir, Path(update_entry["path"]).name)]
        patches = _copy_patches(manifest, work)
        config_text = kernel_config_text(sdk_dir, sdk_dir / ((manifest.get("recipe", {}).get("sdk") or {})
                                                             .get("kernel_dir") or "kernel"))
        kernel_config = None
        if config_text is not None:
            (work / KERNEL_CONFIG).write_text(config_text)
            kernel_config = sbom.Artifact(KERNEL_CONFIG, sha256_file(work / KERNEL_CONFIG))
        shutil.copyfile(manifest_path, work / MANIFEST)
        inputs = collect_inputs(manifest, work, sdk_dir=sdk_dir, supplier=supplier, kernel_commit=kernel_commit,
                                version=version, sdk_supplier=sdk_supplier, tool_version=tool_version,
                                update_img=update_img, images=images, patches=patches,
                                kernel_config=kernel_config)
        echo(f"release: SBOMs ({'no' if inputs.packages is None else len(inputs.packages)} Debian packages)")
        document = sbom.cyclonedx(inputs)
        _write_json(work / CYCLONEDX, document)
        _write_json(work / SPDX, sbom.spdx(inputs))

        subjects = [("update.img", update_img.sha256)] + [(f"{IMAGES}/{a.name}", a.sha256) for a in images]
        statement = provenance.statement(manifest, subjects, manifest_sha256=sha256_file(work / MANIFEST),
                                         tool_version=tool_version, started=started, finished=finished,
                                         kernel_commit=kernel_commit, base_image_id=base_image_id)
        echo(f"release: signing with {key}")
        envelope = provenance.envelope(statement, key, namespace)
        provenance.write_envelope(work / PROVENANCE, envelope)
        signer = envelope["signatures"][0]["keyid"]
        for name in SIGNED:
            signing.sign_file(work / name, key, namespace)
        recipe_digest = statement["predicate"]["buildDefinition"]["externalParameters"]["recipe"]["digest"]["sha256"]
        files = [n for n in release_files(work)] + [NOTES, SUMS, SUMS + ".sig"]
        (work / NOTES).write_text(_notes(inputs, sorted(files), recipe_digest, signer, previous, document))
        known = {"update.img": update_img.sha256, **{f"{IMAGES}/{a.name}": a.sha256 for a in images}}
        signing.sign_file(write_sums(work, known), key, namespace)
        if trusted:
            verify_release(work, trusted, namespace=namespace)
        if out.exists():
            out.rmdir()
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    echo(f"release: {out}")
    return out


def _copy_patches(manifest: Mapping, work: Path) -> list[sbom.Artifact]:
    """The patch series into the release (patches/), each checked against the manifest's sha256."""
    wanted = [(item["name"].split(":", 1)[1], item.get("sha256", "")) for item in manifest.get("inputs", [])
              if str(item.get("name", "")).startswith("patch:")]
    if not wanted:
        return []
    directory = (manifest.get("recipe", {}).get("patches") or {}).get("dir")
    if not directory:
        raise UserError("the manifest lists patches but the recipe has no patches.dir")
    copied = []
    for name, digest in wanted:
        source = Path(directory) / name
        if not source.is_file():
            raise UserError(f"patch {source} is gone: restore it or rebuild")
        artifact = _copy_hashed(source, work / PATCHES / name)
        if artifact.sha256 != digest:
            raise UserError(f"patch {source} changed since the build (its sha256 differs from the manifest's): "
                            "rebuild before releasing")
        copied.append(sbom.Artifact(f"{PATCHES}/{name}", artifact.sha256, artifact.size))
    return copied


# -- checking a release --------------------------------------------------------------------

def read_sums(path: Path) -> tuple[dict[str, str], list[str]]:
    listed, problems = {}, []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        match = _SUMS_LINE.match(line)
        if not match:
            problems.append(f"{SUMS} line {number}: not `SHA256  FILE`")
            continue
        digest, name = match.groups()
        parts = Path(name).parts
        if name.startswith("/") or ".." in parts or not parts or "\\" in name:
            problems.append(f"{SUMS} line {number}: {name!r} is not a path inside the release")
        elif name in listed:
            problems.append(f"{SUMS} lists {name} twice")
        else:
            listed[name] = digest
    return listed, problems


def release_problems(release: Path, trusted, namespace: str = NAMESPACE) -> tuple[list[str], str | None]:
    """Everything wrong with a release directory (empty when it verifies) and the signer's
    fingerprint when SHA256SUMS.sig verifies."""
    release = Path(release)
    if not release.is_dir():
        return [f"{release}: no such release directory"], None
    sums = release / SUMS
    if not sums.is_file():
        return [f"{SUMS} is missing: not a signed release"], None
    problems, signer = [], None
    try:
        signer = signing.verify_file(sums, trusted, namespace)
    except SignatureError as exc:
        problems.append(str(exc))
    listed, sum_problems = read_sums(sums)
    problems += sum_problems
    present = set(release_files(release))
    for name in sorted(present - set(listed) - {SUMS, SUMS + ".sig"}):
        problems.append(f"{name}: not listed in {SUMS}")
    to_hash = []
    for name in sorted(listed):
        path = release / name
        if name not in present:
            problems.append(f"{name}: listed in {SUMS} but missing")
        elif path.is_symlink() or not path.is_file():
            problems.append(f"{name}: not a regular file")
        else:
            to_hash.append(name)
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        for name, digest in zip(to_hash, pool.map(lambda n: sha256_file(release / n), to_hash), strict=True):
            if digest != listed[name]:
                problems.append(f"{name}: changed (its sha256 differs from {SUMS})")
    for name in SIGNED:
        if not (release / name).is_file():
            problems.append(f"{name}: missing")
            continue
        try:
            signing.verify_file(release / name, trusted, namespace)
        except SignatureError as exc:
            problems.append(str(exc))
    if (release / PROVENANCE).is_file():
        problems += _provenance_problems(release, listed, trusted, namespace)
    return list(dict.fromkeys(problems)), signer


def _provenance_problems(release: Path, listed: Mapping[str, str], trusted, namespace: str) -> list[str]:
    try:
        statement, _ = provenance.verify_envelope((release / PROVENANCE).read_bytes(), trusted, namespace,
                                                  label=PROVENANCE)
    except SignatureError as exc:
        return [str(exc)]
    problems = []
    for subject in statement.get("subject", []):
        name, digest = subject.get("name"), (subject.get("digest") or {}).get("sha256")
        if listed.get(name) != digest:
            problems.append(f"{PROVENANCE}: subject {name} does not match {SUMS}")
    return problems


def verify_release(release: Path, trusted, namespace: str = NAMESPACE) -> str:
    """Check a release (see release_problems); the signer's fingerprint, or SignatureError (exit
    status 1) naming every problem."""
    keys = signing.load_trusted(trusted)
    if not keys:
        raise UserError("no trusted keys: give the release signer's .pub with --trusted")
    problems, signer = release_problems(release, keys, namespace)
    if problems or not signer:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise SignatureError(f"release {release} does not verify: {shown}")
    return signer
