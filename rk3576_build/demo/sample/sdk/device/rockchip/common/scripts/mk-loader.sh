#!/bin/bash
# The loader hook (build-hooks/70-loader.sh): loader and uboot (uefi is not
# modelled). Sample: stand-in loader and U-Boot images (the virtual board boots
# its kernel directly); parameter.txt is the chip's real partition table, named
# by RK_PARAMETER.

build_uboot()
{
	check_config RK_UBOOT_CFG || return 0

	start_build "building uboot"

	local toolchain
	toolchain="$(get_toolchain uboot "${RK_UBOOT_ARCH:-arm64}")"
	echo "Toolchain for loader (u-boot):"
	echo "$toolchain"
	echo "U-Boot config: ${RK_UBOOT_CFG}_defconfig (u-boot/configs/)"
	if [ ! -r "u-boot/configs/${RK_UBOOT_CFG}_defconfig" ]; then
		error "No such u-boot config: u-boot/configs/${RK_UBOOT_CFG}_defconfig"
		exit 1
	fi

	printf 'LDR %s sample MiniLoaderAll\n' "$RK_CHIP" > "$RK_FIRMWARE_DIR/MiniLoaderAll.bin"
	printf 'sample U-Boot FIT image for %s (%s)\n' "$RK_CHIP" "$RK_UBOOT_CFG" > "$RK_FIRMWARE_DIR/uboot.img"
	run_command cp "$RK_CHIP_DIR/${RK_PARAMETER:-parameter.txt}" "$RK_FIRMWARE_DIR/parameter.txt"
	echo "Done: rockdev/MiniLoaderAll.bin rockdev/uboot.img rockdev/parameter.txt"

	finish_build build_uboot
}

usage_hook()
{
	usage_oneline "loader[:cmds]" "build loader (uboot)"
	usage_oneline "uboot[:cmds]" "build u-boot"
	usage_oneline "uefi[:cmds]" "build the UEFI loader"
}

clean_hook()
{
	rm -f "$RK_FIRMWARE_DIR/MiniLoaderAll.bin" "$RK_FIRMWARE_DIR/uboot.img" \
		"$RK_FIRMWARE_DIR/parameter.txt"
}

BUILD_CMDS="loader uboot uefi"
build_hook()
{
	case "$1" in
		loader | uboot) shift; build_uboot "$@" ;;
		uefi) unmodelled "$1" ;;
	esac
}

source "${RK_BUILD_HELPER:-$(dirname "$(realpath "$0")")/build-helper}"

build_hook "$@"
