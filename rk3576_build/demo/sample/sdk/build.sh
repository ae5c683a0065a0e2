#!/bin/bash
# Sample Rockchip-style build.sh for the rk3576-build offline demo.
# It behaves like the vendor script where the tool cares (the lunch menu, the
# RK_* pause, step names, rockdev/ outputs, update.img location) and builds a
# real arm64 RKNPU module against the board kit mounted at $BOARD_KIT.
set -eu

SDK=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
OUT=$SDK/output
FIRMWARE=$OUT/firmware          # rockdev -> output/firmware
CHIP_DIR=$SDK/device/rockchip/rk3576
BOARD_DIR=$CHIP_DIR/board
DEFCONFIG_FILE=$OUT/.defconfig

# Like the real script: leftover RK_* variables in the environment override the
# defconfig, so it warns and waits (10 s) before going on.
if env | grep -q '^RK_'; then
    echo "WARN: found RK_* environment variables, they override the defconfig:"
    env | grep '^RK_' | sed 's/=.*//; s/^/  /'
    echo "Press enter to continue."
    read -r -t 10 _ || true
fi

usage() {
    echo "Usage: build.sh [OPTIONS]"
    echo "Available options:"
    echo "  lunch              choose a defconfig from the menu"
    echo "  <name>_defconfig   choose a defconfig directly"
    echo "  u-boot | uboot     build U-Boot and the loader"
    echo "  kernel             build the kernel"
    echo "  module             pack the kernel modules"
    echo "  ubuntu             build the Ubuntu root filesystem (needs privileges)"
    echo "  updateimg          pack update.img"
}

fail() { echo "ERROR: $*" >&2; exit 1; }

defconfigs() { (cd "$CHIP_DIR" && ls -1 -- *_defconfig | LC_ALL=C sort); }

select_defconfig() {
    [ -f "$CHIP_DIR/$1" ] || fail "no such defconfig: $1"
    mkdir -p "$OUT" "$FIRMWARE"
    echo "$1" > "$DEFCONFIG_FILE"
    echo "Switching to defconfig: device/rockchip/rk3576/$1"
}

do_lunch() {
    local list index
    mapfile -t list < <(defconfigs)
    echo "Pick a defconfig:"
    echo
    for index in "${!list[@]}"; do
        echo "$((index + 1)). ${list[$index]}"
    done
    echo
    index=
    read -r -p "Which would you like? [1]: " index || true
    index=${index:-1}
    case "$index" in
        ''|*[!0-9]*) fail "invalid choice: $index" ;;
    esac
    [ "$index" -ge 1 ] && [ "$index" -le "${#list[@]}" ] || fail "choice out of range: $index"
    select_defconfig "${list[$((index - 1))]}"
}

require_defconfig() {
    [ -f "$DEFCONFIG_FILE" ] || fail "no defconfig selected: run ./build.sh lunch first"
    mkdir -p "$FIRMWARE"
    echo "Using defconfig: $(cat "$DEFCONFIG_FILE")"
}

kernel_version() {
    awk -F' *= *' '$1=="VERSION"{v=$2} $1=="PATCHLEVEL"{p=$2} $1=="SUBLEVEL"{s=$2} END{print v"."p"."s}' \
        "$SDK/kernel/Makefile"
}

require_kit() {
    [ -n "${BOARD_KIT:-}" ] && [ -d "$BOARD_KIT" ] \
        || fail "no board kit: set BOARD_KIT to the arm64 kernel/headers kit (mounted at /opt/board-kit)"
    HEADERS=$(ls -d "$BOARD_KIT"/usr/src/linux-headers-*-arm64 2>/dev/null | head -n 1)
    [ -n "$HEADERS" ] || fail "no arm64 kernel headers under $BOARD_KIT/usr/src"
    KERNEL_RELEASE=${HEADERS##*/linux-headers-}
}

do_uboot() {
    require_defconfig
    echo "Building U-Boot (rk3576_defconfig)"
    # Stand-ins for the loader and U-Boot images; parameter.txt is the real format.
    printf 'LDR RK3576 sample MiniLoaderAll\n' > "$FIRMWARE/MiniLoaderAll.bin"
    printf 'sample U-Boot FIT image for RK3576\n' > "$FIRMWARE/uboot.img"
    cat > "$FIRMWARE/parameter.txt" <<'PARAM'
FIRMWARE_VER: 1.0
MACHINE_MODEL: RK3576
MACHINE_ID: 007
MANUFACTURER: RK3576
MAGIC: 0x5041524B
ATAG: 0x00200800
MACHINE: 0xffffffff
CHECK_MASK: 0x80
PWR_HLD: 0,0,A,0,1
TYPE: GPT
GROW_ALIGN: 0
CMDLINE: mtdparts=:0x00002000@0x00004000(uboot),0x00002000@0x00006000(misc),0x00020000@0x00008000(boot),0x00040000@0x00028000(recovery),0x00010000@0x00068000(backup),-@0x00078000(rootfs:grow)
uuid:rootfs=614e0000-0000-4b53-8000-1d28000054a9
PARAM
    echo "Done: rockdev/MiniLoaderAll.bin rockdev/uboot.img rockdev/parameter.txt"
}

do_kernel() {
    require_defconfig
    require_kit
    echo "Building kernel $(kernel_version) (sample: the RKNPU driver against $KERNEL_RELEASE headers)"
    # Out of tree, in a copy, so the kernel tree stays as the overlay left it.
    local build=$OUT/kernel-build
    rm -rf "$build"
    mkdir -p "$build" "$OUT/modules"
    cp -a "$SDK/kernel/drivers/rknpu" "$build/rknpu"
    local cc=aarch64-linux-gnu-gcc
    if command -v ccache >/dev/null && [ -n "${CCACHE_DIR:-}" ]; then
        cc="ccache aarch64-linux-gnu-gcc"
    fi
    make -C "$HEADERS" M="$build/rknpu" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- CC="$cc" \
        -j"$(nproc)" modules
    cp "$build/rknpu/rknpu.ko" "$OUT/modules/rknpu.ko"
    echo "$KERNEL_RELEASE" > "$OUT/modules/kernel-release"
    cp "$BOARD_KIT/boot/vmlinuz-$KERNEL_RELEASE" "$FIRMWARE/boot.img"
    echo "Done: rockdev/boot.img output/modules/rknpu.ko"
}

do_module() {
    require_defconfig
    [ -f "$OUT/modules/rknpu.ko" ] || fail "no modules built: run ./build.sh kernel first"
    [ -x "$BOARD_DIR/mkmodules.sh" ] || fail "missing $BOARD_DIR/mkmodules.sh"
    "$BOARD_DIR/mkmodules.sh" "$(cat "$OUT/modules/kernel-release")" "$FIRMWARE/modules.img" "$OUT"/modules/*.ko
    echo "Done: rockdev/modules.img"
}

do_ubuntu() {
    require_defconfig
    # The real rootfs step needs loop devices, mounts and binfmt: fail early
    # and clearly in an unprivileged container instead of half-way through.
    local probe=$OUT/.mount-probe
    mkdir -p "$probe"
    if ! sudo -n mount -t tmpfs none "$probe" 2>/dev/null; then
        rmdir "$probe"
        fail "the ubuntu step needs a privileged container (mount, loop devices, binfmt): run it with --privileged"
    fi
    sudo -n umount "$probe"
    rmdir "$probe"
    require_kit
    [ -x "$BOARD_DIR/mkrootfs.sh" ] || fail "missing $BOARD_DIR/mkrootfs.sh"
    local hash=
    [ -f "$BOARD_DIR/root-password-hash" ] && hash=$(cat "$BOARD_DIR/root-password-hash")
    echo "Building the root filesystem (sample: busybox initramfs)"
    ROOT_PASSWORD_HASH=$hash "$BOARD_DIR/mkrootfs.sh" "$BOARD_KIT" "$FIRMWARE/rootfs.img"
    echo "Done: rockdev/rootfs.img"
}

do_updateimg() {
    require_defconfig
    local parts="parameter.txt MiniLoaderAll.bin uboot.img boot.img rootfs.img modules.img" part
    for part in $parts; do
        [ -f "$FIRMWARE/$part" ] || fail "rockdev/$part is missing: build it first"
    done
    mkdir -p "$OUT/update/Image"
    # The demo's update.img is a plain POSIX tar of the partition images, NOT
    # Rockchip's RKFW/RKAF format (which needs Rockchip's closed afptool/rkImageMaker).
    # shellcheck disable=SC2086
    tar -C "$FIRMWARE" --format=posix --owner=0 --group=0 --numeric-owner --mtime=@0 \
        --pax-option=delete=atime,delete=ctime -cf "$OUT/update/Image/update.img" $parts
    ln -sfn Image/update.img "$OUT/update/update.img"
    ln -sfn ../update/Image/update.img "$FIRMWARE/update.img"
    echo "Done: output/update/Image/update.img"
}

[ $# -ge 1 ] || { usage; exit 2; }
case "$1" in
    lunch) do_lunch ;;
    *_defconfig) select_defconfig "$1" ;;
    u-boot|uboot) do_uboot ;;
    kernel) do_kernel ;;
    module|modules) do_module ;;
    ubuntu) do_ubuntu ;;
    updateimg) do_updateimg ;;
    -h|--help|help) usage ;;
    *) echo "ERROR: unknown option: $1" >&2; usage; exit 2 ;;
esac
