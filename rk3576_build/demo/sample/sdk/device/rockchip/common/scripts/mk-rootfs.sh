#!/bin/bash
# The rootfs hook (build-hooks/30-rootfs.sh): rootfs[:<type>], buildroot, debian,
# yocto (build stage); buildroot-config/bconfig, buildroot-make/bmake (pre-build,
# not modelled). Sample: the Debian rootfs is the virtual board's busybox initramfs, made by the
# chip's board/mkrootfs.sh from the board kit; there is no buildroot/ or yocto/.

build_debian()
{
	start_build "building ${1:-debian} rootfs"

	RK_DEBIAN_ARCH="${RK_DEBIAN_ARCH:-arm64}" RK_DEBIAN_VERSION="${RK_DEBIAN_VERSION:-bookworm}" \
		"$RK_SCRIPTS_DIR/check-debian.sh"

	# Like the real one, this step needs loop devices, mounts and binfmt: fail
	# early and clearly in an unprivileged container instead of half-way through.
	local probe="$RK_OUTDIR/.mount-probe" hash=
	mkdir -p "$probe"
	if ! sudo -n mount -t tmpfs none "$probe" 2>/dev/null; then
		rmdir "$probe"
		error "The ${1:-debian} rootfs needs a privileged container (mount, loop devices, binfmt): run it with --privileged"
		exit 1
	fi
	sudo -n umount "$probe"
	rmdir "$probe"

	require_board_kit
	[ ! -f "$RK_CHIP_DIR/board/root-password-hash" ] || hash="$(cat "$RK_CHIP_DIR/board/root-password-hash")"
	echo "Building the root filesystem (sample: busybox initramfs)"
	export ROOT_PASSWORD_HASH="$hash"
	# The overlays (RK_ROOTFS_OVERLAY_DIRS) go into the staged tree before it is packed.
	export POST_OS=debian ROOTFS_HOOK="$RK_SCRIPTS_DIR/post-overlay.sh"
	run_command "$RK_CHIP_DIR/board/mkrootfs.sh" "$BOARD_KIT" \
		"$RK_FIRMWARE_DIR/rootfs.img"
	echo "Done: rockdev/rootfs.img"

	finish_build build_debian
}

build_rootfs()
{
	local type="${1:-$RK_ROOTFS_SYSTEM}"
	case "$type" in
		debian) build_debian debian ;;
		buildroot | yocto)
			error "No $type/ in the sample SDK: only the debian rootfs can be built"
			exit 1
			;;
		*)
			error "Unknown rootfs system: $type"
			exit 1
			;;
	esac
}

usage_hook()
{
	usage_oneline "buildroot-config[:<config>]" "modify buildroot defconfig"
	usage_oneline "bconfig[:<config>]" "alias of buildroot-config"
	usage_oneline "buildroot-make[:<arg1>:<arg2>]" "run buildroot make"
	usage_oneline "bmake[:<arg1>:<arg2>]" "alias of buildroot-make"
	usage_oneline "rootfs[:<rootfs type>]" "build default rootfs"
	usage_oneline "buildroot" "build buildroot rootfs"
	usage_oneline "yocto" "build yocto rootfs"
	usage_oneline "debian" "build debian rootfs"
}

clean_hook()
{
	rm -f "$RK_FIRMWARE_DIR/rootfs.img"
}

PRE_BUILD_CMDS="buildroot-config bconfig buildroot-make bmake"
pre_build_hook()
{
	unmodelled "$1 (no buildroot/ in the sample SDK)"
}

BUILD_CMDS="rootfs buildroot debian yocto"
build_hook()
{
	case "$1" in
		rootfs) shift; build_rootfs "$@" ;;
		buildroot | debian | yocto) build_rootfs "$1" ;;
	esac
}

source "${RK_BUILD_HELPER:-$(dirname "$(realpath "$0")")/build-helper}"

build_hook "$@"
