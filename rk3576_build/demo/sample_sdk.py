"""The sample SDK: a small source tree laid out like a Rockchip Linux SDK, standing in for MYIR's.

Used by the tests and the offline demo. Its `build.sh` (a link to
`device/rockchip/common/scripts/build.sh`) behaves like Rockchip's SDK build
framework (usage lines, unknown options exiting 0, lunch, output/.config,
sessions, host checks) and really cross-builds the overlaid RKNPU driver.

As in the real framework, the commands are handled by hooks: `common/build-hooks/NN-<name>.sh`
links to `common/scripts/mk-<name>.sh`, and build.sh accepts what the hooks answer to
`support-cmds`. Flavors: "upstream" has exactly the upstream framework's commands; "myir"
adds the names MYIR's guide uses (`u-boot`, `module`, `ubuntu`, the hook `95-myir.sh`).
`fresh=True` leaves out the `device/rockchip/.chip` link, as a fresh checkout.
`rknpu_config=False` ships a kernel defconfig without `CONFIG_ROCKCHIP_RKNPU`.
The tarball is byte-for-byte reproducible, so a recipe can pin its sha256.
"""

from __future__ import annotations

import calendar
import gzip
import hashlib
import io
import tarfile
from importlib import resources
from pathlib import Path

from rk3576_build.demo.sample_driver import driver_files

SDK_SOURCE = resources.files("rk3576_build.demo") / "sample" / "sdk"
BOARD_SOURCE = resources.files("rk3576_build.demo") / "sample" / "board"
FLAVORS = ("upstream", "myir")
CHIP = "rk3576"
SCRIPTS = "device/rockchip/common/scripts"
MYIR_SCRIPT = f"{SCRIPTS}/mk-myir.sh"
HOOKS = "device/rockchip/common/build-hooks"
# Hook name -> the mk-*.sh it links to, in the real framework's order (help lists them so).
HOOK_LINKS = {
    "00-config.sh": "mk-config.sh", "05-partitions.sh": "mk-partitions.sh", "08-misc.sh": "mk-misc.sh",
    "10-kernel.sh": "mk-kernel.sh", "20-wifibt.sh": "mk-wifibt.sh", "25-rtos.sh": "mk-rtos.sh",
    "30-rootfs.sh": "mk-rootfs.sh", "40-recovery.sh": "mk-recovery.sh", "50-pcba.sh": "mk-pcba.sh",
    "60-security.sh": "mk-security.sh", "70-loader.sh": "mk-loader.sh", "75-extra-part.sh": "mk-extra-part.sh",
    "80-firmware.sh": "mk-firmware.sh", "90-updateimg.sh": "mk-updateimg.sh", "99-all.sh": "mk-all.sh",
    "9999-shell.sh": "mk-shell.sh",
}
MYIR_HOOK = "95-myir.sh"
BOARD_DEST = f"device/rockchip/.chips/{CHIP}/board"
PASSWORD_HASH_FILE = f"{BOARD_DEST}/root-password-hash"
KERNEL_DEFCONFIG = "kernel/arch/arm64/configs/rockchip_linux_defconfig"
TOOLCHAIN_BIN = "prebuilts/gcc/linux-x86/aarch64/gcc-arm-10.3-2021.07-x86_64-aarch64-none-linux-gnu/bin"
TOOLCHAIN_PREFIX = "aarch64-none-linux-gnu-"
# The prebuilt toolchain's other tools are links to its gcc (a wrapper script).
TOOLS = ("addr2line", "ar", "as", "cpp", "ld", "ld.bfd", "nm", "objcopy", "objdump", "readelf", "size", "strip")
MTIME = calendar.timegm((2024, 10, 9, 0, 0, 0))
# Package data skips hidden directories, so the sources keep `.chips` as `chips`.
CHIPS_SOURCE, CHIPS_DEST = "device/rockchip/chips/", "device/rockchip/.chips/"


def _walk(node, prefix: str, files: dict[str, bytes]) -> None:
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.name == "__pycache__":
            continue
        rel = f"{prefix}{child.name}"
        if child.is_dir():
            _walk(child, rel + "/", files)
        else:
            files[rel] = child.read_bytes()


def _check_flavor(flavor: str) -> None:
    if flavor not in FLAVORS:
        raise ValueError(f"unknown sample SDK flavor {flavor!r}; one of {', '.join(FLAVORS)}")


def sdk_files(driver_version: str = "0.9.7", root_password_hash: str | None = None, *,
              flavor: str = "myir", rknpu_config: bool = True) -> dict[str, bytes]:
    """Relative path -> content of every regular file in the sample SDK."""
    _check_flavor(flavor)
    source: dict[str, bytes] = {}
    _walk(SDK_SOURCE, "", source)
    files = {CHIPS_DEST + rel.removeprefix(CHIPS_SOURCE) if rel.startswith(CHIPS_SOURCE) else rel: content
             for rel, content in source.items()}
    if flavor != "myir":
        del files[MYIR_SCRIPT]
    _walk(BOARD_SOURCE, f"{BOARD_DEST}/", files)
    for rel, content in driver_files(driver_version).items():
        files[f"kernel/drivers/rknpu/{rel}"] = content
    if not rknpu_config:
        files[KERNEL_DEFCONFIG] = files[KERNEL_DEFCONFIG].replace(
            b"CONFIG_ROCKCHIP_RKNPU=y\n", b"# CONFIG_ROCKCHIP_RKNPU is not set\n")
    if root_password_hash is not None:
        if root_password_hash and not root_password_hash.startswith("$"):
            raise ValueError("root_password_hash must be a crypt hash (starting with $), never a password")
        files[PASSWORD_HASH_FILE] = f"{root_password_hash}\n".encode()
    return files


def sdk_symlinks(*, fresh: bool = False, flavor: str = "myir") -> dict[str, str]:
    """Relative link path -> target of the sample SDK's symbolic links."""
    _check_flavor(flavor)
    links = {
        "build.sh": f"{SCRIPTS}/build.sh",
        # rockdev is a link into output/, as in Rockchip's SDKs.
        "rockdev": "output/firmware",
        f"{HOOKS}/build-helper": "../scripts/build-helper",
    }
    hooks = {**HOOK_LINKS, MYIR_HOOK: MYIR_SCRIPT.rsplit("/", 1)[1]} if flavor == "myir" else HOOK_LINKS
    links.update({f"{HOOKS}/{hook}": f"../scripts/{script}" for hook, script in hooks.items()})
    if not fresh:
        links["device/rockchip/.chip"] = f".chips/{CHIP}"
    for tool in TOOLS:
        links[f"{TOOLCHAIN_BIN}/{TOOLCHAIN_PREFIX}{tool}"] = f"{TOOLCHAIN_PREFIX}gcc"
    return links


def sample_key(*, driver_version: str = "0.9.7", flavor: str = "myir", fresh: bool = False,
               rknpu_config: bool = True) -> str:
    """A digest of what the sample SDK is made of (files, modes, links; not the root password hash):
    a tarball written from an older version of the sample has another key."""
    digest = hashlib.sha256()
    for rel, content in sorted(sdk_files(driver_version, flavor=flavor, rknpu_config=rknpu_config).items()):
        digest.update(f"{rel}\0{_mode(rel):o}\0".encode() + hashlib.sha256(content).digest())
    for link, target in sorted(sdk_symlinks(fresh=fresh, flavor=flavor).items()):
        digest.update(f"{link}\0{target}\0".encode())
    return digest.hexdigest()


def _mode(rel: str) -> int:
    """Scripts are executable; package data may have lost the bit, so decide by name."""
    name = rel.rsplit("/", 1)[-1]
    if name.endswith(".sh") or name in ("init", "build-helper") or rel.startswith(f"{TOOLCHAIN_BIN}/"):
        return 0o755
    if rel == PASSWORD_HASH_FILE:
        return 0o600
    return 0o644


def write_sample_sdk(dest: Path, *, driver_version: str = "0.9.7", flavor: str = "myir", fresh: bool = False,
                     rknpu_config: bool = True, root_password_hash: str | None = None) -> Path:
    """Write the sample SDK tree into `dest` (created); return `dest`."""
    dest = Path(dest)
    files = sdk_files(driver_version, root_password_hash, flavor=flavor, rknpu_config=rknpu_config)
    for rel, content in files.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(_mode(rel))
    for link, target in sdk_symlinks(fresh=fresh, flavor=flavor).items():
        path = dest / link
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        path.symlink_to(target)
    return dest


def make_sample_sdk_tarball(out: Path, *, driver_version: str = "0.9.7", flavor: str = "myir", fresh: bool = False,
                            rknpu_config: bool = True, root_password_hash: str | None = None,
                            top: str = "MYD-LR3576-Sample-SDK") -> Path:
    """Write a reproducible `.tar.gz` of the sample SDK under one top-level directory."""
    files = sdk_files(driver_version, root_password_hash, flavor=flavor, rknpu_config=rknpu_config)
    links = sdk_symlinks(fresh=fresh, flavor=flavor)
    dirs = {top}
    for rel in [*files, *links]:
        parts = rel.split("/")[:-1]
        dirs.update(f"{top}/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(dirs):
            tar.addfile(_info(name + "/", tarfile.DIRTYPE, 0o755))
        for rel in sorted(files):
            info = _info(f"{top}/{rel}", tarfile.REGTYPE, _mode(rel))
            info.size = len(files[rel])
            tar.addfile(info, io.BytesIO(files[rel]))
        for link, target in sorted(links.items()):
            info = _info(f"{top}/{link}", tarfile.SYMTYPE, 0o777)
            info.linkname = target
            tar.addfile(info)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gz:
        gz.write(raw.getvalue())
    return out


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info
