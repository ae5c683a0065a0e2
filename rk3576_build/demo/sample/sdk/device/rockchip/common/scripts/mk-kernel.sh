#!/bin/bash
# The kernel hook (build-hooks/10-kernel.sh): kernel, modules (build stage);
# kernel-config/kconfig, kernel-make/kmake (pre-build); recovery-kernel and
# linux-headers are not modelled.
#
# Sample: the kernel tree here is not a full kernel. The kernel step reads the
# kernel config the SDK defconfig names (RK_KERNEL_CFG + RK_KERNEL_CFG_FRAGMENTS
# under kernel/arch/arm64/configs/), builds the RKNPU driver with kbuild against
# the board kit's kernel headers ($BOARD_KIT) and takes the kit's kernel as
# boot.img. The board kit's Debian kernel can only load modules, so a driver
# the config builds in (=y) is built as a module (=m) here.

KERNEL_BUILD_DIR="$RK_OUTDIR/kernel-build"
KERNEL_MODULES_DIR="$RK_OUTDIR/modules"
# The kernel config symbols the driver's Makefile and sources look at.
DRIVER_SYMBOLS="CONFIG_ROCKCHIP_RKNPU CONFIG_ROCKCHIP_RKNPU_DEBUG_FS CONFIG_ROCKCHIP_RKNPU_PROC_FS
	CONFIG_ROCKCHIP_RKNPU_FENCE CONFIG_ROCKCHIP_RKNPU_DRM_GEM CONFIG_ROCKCHIP_RKNPU_DMA_HEAP"

# kernel_config_value <symbol>: its value after the defconfig and its fragments
# (the last file that mentions it wins; "is not set" gives an empty value).
kernel_config_value()
{
	local configs="$RK_SDK_DIR/kernel/arch/${RK_KERNEL_ARCH:-arm64}/configs" cfg value=
	for cfg in $RK_KERNEL_CFG $RK_KERNEL_CFG_FRAGMENTS; do
		if [ ! -r "$configs/$cfg" ]; then
			error "No such kernel config: kernel/arch/${RK_KERNEL_ARCH:-arm64}/configs/$cfg"
			return 1
		fi
		if grep -q "^# $1 is not set" "$configs/$cfg"; then
			value=
		elif grep -q "^$1=" "$configs/$cfg"; then
			value="$(grep "^$1=" "$configs/$cfg" | tail -n 1 | cut -d= -f2-)"
		fi
	done
	echo "$value"
}

build_kernel()
{
	check_config RK_KERNEL_CFG || return 0

	start_build "building kernel"

	"$RK_SCRIPTS_DIR/check-kernel.sh"

	local toolchain sym value kbuild_args=() cc
	toolchain="$(get_toolchain kernel "${RK_KERNEL_ARCH:-arm64}")"
	require_board_kit

	echo "Kernel $(kernel_version) config: $RK_KERNEL_CFG $RK_KERNEL_CFG_FRAGMENTS"
	for sym in $DRIVER_SYMBOLS; do
		value="$(kernel_config_value "$sym")"
		# Built-in is not possible on the board kit's kernel: y becomes m.
		[ "$sym" != CONFIG_ROCKCHIP_RKNPU ] || [ "$value" != y ] || value=m
		echo "  $sym=${value:-(not set)}"
		kbuild_args+=("$sym=$value")
	done

	cc="${toolchain}gcc"
	if command -v ccache >/dev/null && [ -n "${CCACHE_DIR:-}" ]; then
		cc="ccache ${toolchain}gcc"
	fi

	# Out of tree, in a copy, so the kernel tree stays as the overlay left it.
	rm -rf "$KERNEL_BUILD_DIR" "$KERNEL_MODULES_DIR"
	mkdir -p "$KERNEL_BUILD_DIR" "$KERNEL_MODULES_DIR"
	cp -a "$RK_SDK_DIR/kernel/drivers/rknpu" "$KERNEL_BUILD_DIR/rknpu"
	# The module's debug info and __FILE__ name the SDK's path, which differs between work
	# directories: map it away so two builds of the same sources give the same rknpu.ko.
	run_command make -C "$HEADERS" M="$KERNEL_BUILD_DIR/rknpu" ARCH=arm64 \
		CROSS_COMPILE="$toolchain" CC="$cc" "${kbuild_args[@]}" \
		KCFLAGS="-ffile-prefix-map=$RK_SDK_DIR/=" -j"$(nproc)" modules

	find "$KERNEL_BUILD_DIR" -name "*.ko" | LC_ALL=C sort | xargs -r cp -t "$KERNEL_MODULES_DIR/"
	echo "$KERNEL_RELEASE" > "$KERNEL_MODULES_DIR/kernel-release"
	run_command cp "$BOARD_KIT/boot/vmlinuz-$KERNEL_RELEASE" "$RK_FIRMWARE_DIR/boot.img"

	finish_build build_kernel
}

# modules[:<dst dir>]: install the kernel's modules and pack them for the board.
build_modules()
{
	check_config RK_KERNEL_CFG || return 0

	start_build "building kernel modules"

	if [ ! -r "$KERNEL_MODULES_DIR/kernel-release" ]; then
		error "No kernel built: run ./build.sh kernel first"
		exit 1
	fi

	local release mod_dir="${1:-$RK_OUTDIR/kernel-modules}" modules=()
	release="$(cat "$KERNEL_MODULES_DIR/kernel-release")"
	mapfile -t modules < <(find "$KERNEL_MODULES_DIR" -name "*.ko" | sort)
	rm -rf "$mod_dir/lib/modules/$release"
	mkdir -p "$mod_dir/lib/modules/$release/extra"
	[ ${#modules[@]} -eq 0 ] || cp "${modules[@]}" "$mod_dir/lib/modules/$release/extra/"
	echo "Modules installed: ${#modules[@]} in $mod_dir/lib/modules/$release"

	# The virtual board loads them from an initramfs part: rockdev/modules.img.
	run_command "$RK_CHIP_DIR/board/mkmodules.sh" "$release" "$RK_FIRMWARE_DIR/modules.img" \
		"${modules[@]}"

	finish_build build_modules
}

usage_hook()
{
	usage_oneline "kernel[:cmds]" "build kernel"
	usage_oneline "recovery-kernel[:cmds]" "build the recovery's kernel"
	usage_oneline "modules[:cmds]" "build kernel modules"
	usage_oneline "linux-headers[:cmds]" "pack the kernel headers"
	usage_oneline "kernel-config[:cmds]" "modify kernel defconfig"
	usage_oneline "kconfig[:cmds]" "alias of kernel-config"
	usage_oneline "kernel-make[:<arg1>:<arg2>]" "run kernel make"
	usage_oneline "kmake[:<arg1>:<arg2>]" "alias of kernel-make"
}

clean_hook()
{
	rm -rf "$KERNEL_BUILD_DIR" "$KERNEL_MODULES_DIR" "$RK_OUTDIR/kernel-modules" \
		"$RK_FIRMWARE_DIR/boot.img" "$RK_FIRMWARE_DIR/modules.img"
}

PRE_BUILD_CMDS="kernel-config kconfig kernel-make kmake"
pre_build_hook()
{
	error "$1: the sample SDK's kernel/ is not a full kernel tree (no menuconfig, no kernel make)"
	exit 1
}

BUILD_CMDS="kernel recovery-kernel modules"
build_hook()
{
	case "$1" in
		kernel) shift; build_kernel "$@" ;;
		modules) shift; build_modules "$@" ;;
		recovery-kernel) unmodelled "$1" ;;
	esac
}

POST_BUILD_CMDS="linux-headers"
post_build_hook()
{
	unmodelled "$1"
}

source "${RK_BUILD_HELPER:-$(dirname "$(realpath "$0")")/build-helper}"

build_hook "$@"
