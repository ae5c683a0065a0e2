#!/bin/bash
# all (every image, then update.img) and save (copy the images and build info
# to output/save/<session>/).

case "$1" in
	cmds) echo "all save"; exit 0 ;;
esac

source "$(dirname "$(realpath "$0")")/build-helper"

build_all()
{
	start_build "building all images"

	"$RK_SCRIPTS_DIR/mk-loader.sh" uboot
	"$RK_SCRIPTS_DIR/mk-kernel.sh" kernel
	"$RK_SCRIPTS_DIR/mk-kernel.sh" modules
	"$RK_SCRIPTS_DIR/mk-rootfs.sh" rootfs
	"$RK_SCRIPTS_DIR/mk-recovery.sh" recovery
	"$RK_SCRIPTS_DIR/mk-firmware.sh" firmware
	"$RK_SCRIPTS_DIR/mk-updateimg.sh" updateimg

	finish_build build_all
}

build_save()
{
	local dir="$RK_OUTDIR/save/$RK_SESSION"
	rm -rf "$dir"
	mkdir -p "$dir/IMAGES"
	run_command cp -L "$RK_FIRMWARE_DIR"/* "$dir/IMAGES/"
	{
		echo "DEFCONFIG: $(basename "$RK_DEFCONFIG")"
		echo "CHIP: $RK_CHIP"
		echo "KERNEL: $(kernel_version) ($RK_KERNEL_CFG $RK_KERNEL_CFG_FRAGMENTS)"
		echo "DATE: $(date +"%F %T")"
	} > "$dir/build_info.txt"
	cp "$RK_CONFIG" "$dir/config"
	echo "Saved at $dir"

	finish_build build_save
}

case "$1" in
	usage)
		usage_oneline "all" "build all images"
		usage_oneline "save" "save images and build info"
		;;
	clean) rm -rf "$RK_OUTDIR/save" ;;
	all) build_all ;;
	save) build_save ;;
esac
