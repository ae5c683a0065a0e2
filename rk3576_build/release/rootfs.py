"""The Debian packages inside a root file system image, read without mounting it and without root.

`debugfs` (e2fsprogs, on every host that can make an ext4 image) opens the image read-only and
prints `var/lib/dpkg/status` and `etc/os-release`; only the blocks of those files are read, so a
multi-GiB rootfs.img takes milliseconds. An image that is not ext2/3/4 (a cpio initramfs, a
squashfs) or has no dpkg database gives None: the SBOM then says it could not list packages.
"""

from __future__ import annotations

import posixpath
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from rk3576_build.core.errors import UserError

EXT_MAGIC_OFFSET = 1024 + 56
EXT_MAGIC = b"\x53\xef"
# dpkg states in which the package's files are on disk ("not-installed" and "config-files" are not).
PRESENT_STATES = ("installed", "half-configured", "unpacked", "half-installed", "triggers-awaited",
                  "triggers-pending")
_BANNER = re.compile(r"^debugfs \d")
_LINK = re.compile(r'Fast link dest: "(.*)"')


@dataclass(frozen=True)
class Distro:
    """What /etc/os-release says about the root file system."""

    id: str
    version_id: str = ""
    codename: str = ""
    pretty_name: str = ""


@dataclass(frozen=True)
class DebPackage:
    """One package from dpkg's status database."""

    name: str
    version: str
    architecture: str
    maintainer: str = ""
    source: str = ""
    homepage: str = ""
    status: str = "installed"

    def purl(self, distro: Distro | None) -> str:
        """`pkg:deb/<distro id>/<name>@<version>?arch=<arch>&distro=<codename>` (purl spec encoding)."""
        namespace = (distro.id if distro and distro.id else "debian").lower()
        purl = f"pkg:deb/{quote(namespace, safe='')}/{quote(self.name, safe=':')}@{quote(self.version, safe=':')}"
        qualifiers = {"arch": self.architecture}
        if distro and (distro.codename or distro.version_id):
            qualifiers["distro"] = distro.codename or f"{distro.id}-{distro.version_id}"
        return purl + "?" + "&".join(f"{k}={quote(v, safe=':/')}" for k, v in sorted(qualifiers.items()) if v)


def is_ext_image(image: Path) -> bool:
    """Does the file hold an ext2/3/4 file system (superblock magic 0xEF53)?"""
    with Path(image).open("rb") as fh:
        fh.seek(EXT_MAGIC_OFFSET)
        return fh.read(2) == EXT_MAGIC


def _debugfs(image: Path, request: str) -> tuple[bytes, list[str]]:
    tool = shutil.which("debugfs") or ("/usr/sbin/debugfs" if Path("/usr/sbin/debugfs").exists() else None)
    if not tool:
        raise UserError("debugfs not found: install e2fsprogs (Debian: apt-get install e2fsprogs)")
    # debugfs opens the image read-only unless given -w; it exits 0 even on errors, which go to stderr.
    result = subprocess.run([tool, "-R", request, str(image)], capture_output=True)
    errors = [line for line in result.stderr.decode(errors="replace").splitlines()
              if line.strip() and not _BANNER.match(line)]
    return result.stdout, errors


def read_image_file(image: Path, path: str, _depth: int = 0) -> bytes | None:
    """The content of `path` inside an ext image (symbolic links followed), None when absent."""
    if _depth > 8:
        return None
    meta, errors = _debugfs(image, f"stat {path}")
    if errors:
        return None
    text = meta.decode(errors="replace")
    if "Type: symlink" in text:
        match = _LINK.search(text)
        if not match:
            return None
        target = match.group(1)
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target) if not target.startswith("/")
                                      else target)
        return read_image_file(image, resolved, _depth + 1)
    if "Type: regular" not in text:
        return None
    data, errors = _debugfs(image, f"cat {path}")
    if errors:
        raise UserError(f"cannot read {path} from {image}: {errors[-1]}")
    return data


def parse_os_release(text: str) -> Distro:
    """ID, VERSION_ID, VERSION_CODENAME and PRETTY_NAME of an os-release file."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            values[key] = value.strip().strip("\"'")
    return Distro(id=values.get("ID", "linux"), version_id=values.get("VERSION_ID", ""),
                  codename=values.get("VERSION_CODENAME", ""), pretty_name=values.get("PRETTY_NAME", ""))


def _stanzas(text: str):
    fields: dict[str, str] = {}
    last = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields, last = {}, None
        elif line[0] in " \t":
            if last:
                fields[last] += "\n" + line.strip()
        else:
            key, _, value = line.partition(":")
            last = key.strip().lower()
            fields[last] = value.strip()
    if fields:
        yield fields


def parse_dpkg_status(text: str) -> list[DebPackage]:
    """Packages whose files are installed, sorted by name and architecture."""
    packages = []
    for fields in _stanzas(text):
        state = fields.get("status", "").split()
        if not fields.get("package") or len(state) < 3 or state[2] not in PRESENT_STATES:
            continue
        source = fields.get("source", "").split(" ")[0]
        packages.append(DebPackage(name=fields["package"], version=fields.get("version", ""),
                                   architecture=fields.get("architecture", ""),
                                   maintainer=fields.get("maintainer", ""), source=source,
                                   homepage=fields.get("homepage", ""), status=state[2]))
    return sorted(packages, key=lambda p: (p.name, p.architecture))


def rootfs_packages(image: Path) -> tuple[Distro | None, list[DebPackage]] | None:
    """The distribution and the installed Debian packages of a rootfs image; None when it is not
    an ext image with a dpkg database (not a Debian-family root file system)."""
    image = Path(image)
    if not image.is_file():
        raise UserError(f"root file system image {image} not found")
    if not is_ext_image(image):
        return None
    status = read_image_file(image, "/var/lib/dpkg/status")
    if status is None:
        return None
    os_release = read_image_file(image, "/etc/os-release") or read_image_file(image, "/usr/lib/os-release")
    distro = parse_os_release(os_release.decode(errors="replace")) if os_release else None
    return distro, parse_dpkg_status(status.decode(errors="replace"))
