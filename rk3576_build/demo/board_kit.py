"""The arm64 kit behind the virtual board: Debian's arm64 kernel, its headers and busybox.

Everything comes from Debian's package registry through apt (`apt-get download`,
then `dpkg -x`, never installed), so it works on a host with no other network.
The kit is cached per kernel release under the user's cache directory.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from rk3576_build.config.workspace import board_kit_dir
from rk3576_build.core.errors import UserError

KBUILD_PACKAGE = "linux-kbuild-6.1"
READY_MARKER = ".kit-complete"


@dataclasses.dataclass(frozen=True)
class Kit:
    """An unpacked kit: `root` holds the dpkg -x trees of all packages."""

    root: Path
    kernel_release: str  # e.g. "6.1.0-56-arm64"

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.kernel_release}"

    @property
    def headers_dir(self) -> Path:
        return self.root / "usr" / "src" / f"linux-headers-{self.kernel_release}"

    @property
    def busybox(self) -> Path:
        return self.root / "bin" / "busybox"


def default_cache_dir() -> Path:
    """Where kits live: $RK3576_KIT_DIR, else ~/.cache/rk3576-build/board-kit."""
    return board_kit_dir()


def _run(cmd: list[str], **kwargs) -> str:
    try:
        result = subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)
    except FileNotFoundError as exc:
        raise UserError(f"board kit: {cmd[0]} not found; the kit needs Debian's apt and dpkg") from exc
    except subprocess.CalledProcessError as exc:
        raise UserError(
            f"board kit: `{' '.join(cmd)}` failed: {exc.stderr.strip()[-800:]}\n"
            "The kit needs `dpkg --add-architecture arm64 && apt-get update` "
            "(scripts/setup-host.sh does both)."
        ) from exc
    return result.stdout


def latest_kernel_release() -> str:
    """The release that Debian's linux-image-arm64 metapackage points at."""
    out = _run(["apt-cache", "depends", "linux-image-arm64:arm64"])
    match = re.search(r"Depends: linux-image-(\S+?-arm64)(?::arm64)?$", out, re.M)
    if not match:
        raise UserError(
            "board kit: apt knows no arm64 kernel; run `dpkg --add-architecture arm64 && apt-get update`"
        )
    return match.group(1)


def find_kit(cache_dir: Path | None = None) -> Kit | None:
    """A complete kit already in the cache, or None (no apt call: cheap)."""
    cache_dir = cache_dir or default_cache_dir()
    if not cache_dir.is_dir():
        return None
    for entry in sorted(cache_dir.iterdir(), reverse=True):
        if (entry / READY_MARKER).exists():
            return Kit(root=entry / "root", kernel_release=entry.name)
    return None


def cached_kit_root() -> str | None:
    """$BOARD_KIT for a recipe that names it and an environment that does not set it: the cached
    kit's root, found when the recipe is loaded (so no file meant to be committed holds its path)."""
    kit = find_kit()
    return str(kit.root) if kit else None


def ensure_kit(cache_dir: Path | None = None, kernel_release: str | None = None) -> Kit:
    """Return a complete kit, downloading and unpacking it on first use."""
    cache_dir = cache_dir or default_cache_dir()
    if kernel_release is None:
        existing = find_kit(cache_dir)
        if existing:
            return existing
        kernel_release = latest_kernel_release()
    kit_dir = cache_dir / kernel_release
    if (kit_dir / READY_MARKER).exists():
        return Kit(root=kit_dir / "root", kernel_release=kernel_release)

    packages = [
        f"linux-image-{kernel_release}:arm64",
        f"linux-headers-{kernel_release}:arm64",
        f"linux-headers-{kernel_release.removesuffix('-arm64')}-common",
        KBUILD_PACKAGE,
        "busybox-static:arm64",
    ]
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".partial-") as tmp:
        debs = Path(tmp) / "debs"
        root = Path(tmp) / "root"
        debs.mkdir()
        _run(["apt-get", "download", *packages], cwd=debs)
        for deb in sorted(debs.glob("*.deb")):
            _run(["dpkg", "-x", str(deb), str(root)])
        _relocate_headers(root, kernel_release)
        if kit_dir.exists():
            shutil.rmtree(kit_dir)
        kit_dir.mkdir()
        root.rename(kit_dir / "root")
    (kit_dir / READY_MARKER).write_text(" ".join(packages) + "\n")
    return Kit(root=kit_dir / "root", kernel_release=kernel_release)


def _relocate_headers(root: Path, kernel_release: str) -> None:
    """Point the arm64 headers' Makefile at the common headers beside it.

    Debian's says `include /usr/src/linux-headers-<rel>-common/Makefile`, an
    absolute path; a relative one lets the kit build modules wherever it lies
    (in the cache on the host, or mounted into the builder container).
    """
    common = f"linux-headers-{kernel_release.removesuffix('-arm64')}-common"
    makefile = root / "usr" / "src" / f"linux-headers-{kernel_release}" / "Makefile"
    makefile.write_text(f"include $(dir $(lastword $(MAKEFILE_LIST)))../{common}/Makefile\n")


if __name__ == "__main__":
    kit = ensure_kit()
    print(f"board kit {kit.kernel_release} at {kit.root}")
