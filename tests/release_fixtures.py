"""A finished build to release: SDK tree with rockdev images, update.img, kernel and U-Boot
Makefiles, a patch series and the manifest.json the build writes; and small ext4 root file
systems made with `mkfs.ext4 -d` (no mount, no root)."""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
from pathlib import Path

from rk3576_build.pipeline.manifest import build_manifest, write_manifest

STATUS_TEMPLATE = """Package: {name}
Status: install ok {state}
Priority: optional
Maintainer: {maintainer}
Architecture: {arch}
Version: {version}
Description: test package {name}
 with a continuation line

"""


def status_text(packages) -> str:
    """A dpkg status file: (name, version, arch[, state]) tuples."""
    parts = []
    for entry in packages:
        name, version, arch, *rest = entry
        parts.append(STATUS_TEMPLATE.format(name=name, version=version, arch=arch,
                                            state=rest[0] if rest else "installed",
                                            maintainer="Debian Test Team <team@lists.example.org>"))
    return "".join(parts)


def ext4_rootfs(path: Path, packages, *, os_release: str | None = None) -> Path:
    """A small ext4 image holding var/lib/dpkg/status and etc/os-release (a link, as on Debian)."""
    tree = path.with_suffix(".tree")
    (tree / "var/lib/dpkg").mkdir(parents=True)
    (tree / "usr/lib").mkdir(parents=True)
    (tree / "etc").mkdir()
    (tree / "var/lib/dpkg/status").write_text(status_text(packages))
    (tree / "usr/lib/os-release").write_text(os_release or 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'
                                             'ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n')
    (tree / "etc/os-release").symlink_to("../usr/lib/os-release")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(path), "8M"], check=True, capture_output=True)
    return path


def _tar(out: Path, root: Path, names) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            info = tar.gettarinfo(str(root / name), arcname=name)
            info.mtime = 0
            with (root / name).open("rb") as fh:
                tar.addfile(info, fh)


def make_build(root: Path, rootfs_img: Path, *, driver_version: str = "0.9.8", driver_date: str = "20240828",
               patches: dict[str, bytes] | None = None, kernel_sublevel: int = 75, boot: bytes = b"boot") -> dict:
    """Lay out a finished build under `root`; returns its paths and the values it recorded."""
    sdk = root / "sdk"
    rockdev = sdk / "rockdev"
    rockdev.mkdir(parents=True)
    (rockdev / "parameter.txt").write_text("FIRMWARE_VER: 1.0\nMACHINE_MODEL: RK3576\nTYPE: GPT\n")
    (rockdev / "MiniLoaderAll.bin").write_bytes(b"LDR loader blob\x00" * 64)
    (rockdev / "uboot.img").write_bytes(b"u-boot image\x00" * 128)
    (rockdev / "boot.img").write_bytes(b"ANDROID!" + boot * 256)
    (rockdev / "modules.img").write_bytes(b"modules\x00" * 64)
    (rockdev / "rootfs.img").symlink_to(rootfs_img)
    names = ["parameter.txt", "MiniLoaderAll.bin", "uboot.img", "boot.img", "rootfs.img", "modules.img"]
    _tar(sdk / "output/update/Image/update.img", rockdev, names)
    (rockdev / "update.img").symlink_to("../output/update/Image/update.img")
    kernel = sdk / "kernel"
    kernel.mkdir()
    (kernel / "Makefile").write_text(f"VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = {kernel_sublevel}\nEXTRAVERSION =\n")
    (kernel / ".config").write_text("CONFIG_ARM64=y\nCONFIG_ROCKCHIP_RKNPU=y\n# CONFIG_DEBUG_INFO is not set\n")
    (sdk / "u-boot").mkdir()
    (sdk / "u-boot/Makefile").write_text("VERSION = 2017\nPATCHLEVEL = 09\n")
    patch_dir = root / "patches"
    patch_dir.mkdir()
    patches = {"0001-rknpu-fix.patch": b"--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n"} if patches is None else patches
    for name, text in patches.items():
        (patch_dir / name).write_bytes(text)
    kernel_commit = hashlib.sha1(f"kernel {kernel_sublevel} {driver_version} {sorted(patches)}".encode()).hexdigest()
    overlay_commit = hashlib.sha1(f"overlay {driver_version}".encode()).hexdigest()
    driver_file = f"rknpu_driver_{driver_version}_20241009.tar.bz2"
    recipe = {"name": "myd-test", "sdk": {"url": "https://mirror.example/MYD-LR3576-Distribution-L6.1.75-V1.1.0.tar.gz",
                                          "kernel_dir": "kernel", "filename": None},
              "driver": {"name": "rknpu", "version": driver_version, "filename": None,
                         "url": f"https://github.com/airockchip/rknn-llm/raw/main/rknpu-driver/{driver_file}"},
              "patches": {"dir": str(patch_dir)}, "builder": {"base": "rk3576-build/debian-base:bookworm"}}
    inputs = [
        {"name": "sdk", "url": recipe["sdk"]["url"], "sha256": "a" * 64, "size": 123,
         "kernel_version": f"6.1.{kernel_sublevel}"},
        {"name": "driver", "url": recipe["driver"]["url"],
         "sha256": hashlib.sha256(driver_version.encode()).hexdigest(), "size": 36877, "version": driver_version,
         "date": driver_date, "commit": overlay_commit},
        *({"name": f"patch:{name}", "sha256": hashlib.sha256(text).hexdigest()} for name, text in patches.items()),
        {"name": "builder", "image": "rk3576-build/builder:abc", "image_id": "sha256:" + "b" * 64,
         "config_hash": "c" * 16},
    ]
    steps = [{"name": "kernel", "command": "./build.sh kernel", "target": "kernel", "duration": 12.5,
              "exit_status": 0},
             {"name": "updateimg", "command": "./build.sh updateimg", "target": "updateimg", "duration": 2.0,
              "exit_status": 0}]
    manifest = write_manifest(root / "manifest.json", build_manifest(
        recipe=recipe, inputs=inputs, steps=steps, artifacts_root=sdk,
        artifacts=["output/update/Image/update.img"]))
    return {"root": root, "sdk": sdk, "manifest": manifest, "kernel_commit": kernel_commit,
            "overlay_commit": overlay_commit, "rockdev": rockdev}
