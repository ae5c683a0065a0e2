#!/bin/bash -e
# Host requirements of the Debian (and MYIR's Ubuntu) rootfs step. Runs
# standalone too, from anywhere:
#   device/rockchip/common/scripts/check-debian.sh
# Environment: RK_SCRIPTS_DIR, RK_SDK_DIR (default: this script's SDK),
# RK_DEBIAN_ARCH (arm64), RK_DEBIAN_VERSION (bookworm), MKE2FS_CONFIG. Exits non-zero with the
# fix on the first requirement that is not met.

RK_SCRIPTS_DIR="${RK_SCRIPTS_DIR:-$(dirname "$(realpath "$0")")}"
RK_SDK_DIR="${RK_SDK_DIR:-$(realpath "$RK_SCRIPTS_DIR/../../../..")}"
RK_DEBIAN_ARCH="${RK_DEBIAN_ARCH:-arm64}"
RK_DEBIAN_VERSION="${RK_DEBIAN_VERSION:-bookworm}"

# The rootfs's own e2fsprogs cannot mount what a newer mke2fs makes by default
# (MKE2FS_CONFIG is where mke2fs itself reads its configuration from).
if grep -wq metadata_csum_seed "${MKE2FS_CONFIG:-/etc/mke2fs.conf}" 2>/dev/null; then
	echo -e "\e[35m"
	echo "Your mke2fs is too new: $(mke2fs -V 2>&1 | head -n 1)"
	echo "Its ${MKE2FS_CONFIG:-/etc/mke2fs.conf} enables metadata_csum_seed, which the rootfs's e2fsprogs lacks."
	echo "Please use e2fsprogs 1.46.x, or remove metadata_csum_seed (and orphan_file) from ${MKE2FS_CONFIG:-/etc/mke2fs.conf}"
	echo -e "\e[0m"
	exit 1
fi

case "$RK_DEBIAN_ARCH" in
	arm64) QEMU_ARCH=aarch64 ;;
	armhf) QEMU_ARCH=arm ;;
	*)
		echo -e "\e[35m"
		echo "Unknown arch(RK_DEBIAN_ARCH): $RK_DEBIAN_ARCH!"
		echo -e "\e[0m"
		exit 1
		;;
esac

QEMU="qemu-$QEMU_ARCH-static"
if ! command -v "$QEMU" >/dev/null 2>&1; then
	echo -e "\e[35m"
	echo "Your $QEMU is missing"
	echo "Please install it:"
	echo "sudo apt-get install qemu-user-static binfmt-support"
	echo -e "\e[0m"
	exit 1
fi

QEMU_VERSION="$("$QEMU" --version 2>/dev/null | grep -o "version [0-9]*" | head -n 1 | cut -d' ' -f2)"
if [ "${QEMU_VERSION:-0}" -lt 5 ]; then
	echo -e "\e[35m"
	echo "Your $QEMU is too old for Debian($RK_DEBIAN_VERSION): $("$QEMU" --version 2>&1 | head -n 1)"
	echo "Please update it (>= 5):"
	echo "sudo apt-get install qemu-user-static binfmt-support"
	echo -e "\e[0m"
	exit 1
fi

"$RK_SCRIPTS_DIR/check-header.sh" openssl/ssl.h libssl-dev
"$RK_SCRIPTS_DIR/check-header.sh" gmp.h libgmp-dev
"$RK_SCRIPTS_DIR/check-header.sh" mpc.h libmpc-dev
