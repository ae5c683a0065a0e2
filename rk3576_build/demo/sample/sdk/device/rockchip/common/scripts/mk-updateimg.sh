#!/bin/bash
# The updateimg step: output/update/Image/update.img, linked from
# output/update/update.img and rockdev/update.img.
#
# Sample: this update.img is a plain POSIX tar of the partition images for the
# virtual board, NOT Rockchip's RKFW/RKAF format (which needs Rockchip's closed
# afptool/rkImageMaker).

case "$1" in
	cmds) echo "updateimg"; exit 0 ;;
esac

source "$(dirname "$(realpath "$0")")/build-helper"

IMAGES="parameter.txt MiniLoaderAll.bin uboot.img boot.img rootfs.img modules.img"

build_updateimg()
{
	start_build "packing update image"

	local image
	for image in $IMAGES; do
		if [ ! -f "$RK_FIRMWARE_DIR/$image" ]; then
			error "rockdev/$image is missing: build it first"
			exit 1
		fi
	done

	mkdir -p "$RK_OUTDIR/update/Image"
	# shellcheck disable=SC2086
	run_command tar -C "$RK_FIRMWARE_DIR" --format=posix --owner=0 --group=0 --numeric-owner \
		--mtime=@0 --pax-option=delete=atime,delete=ctime \
		-cf "$RK_OUTDIR/update/Image/update.img" $IMAGES
	ln -sfn Image/update.img "$RK_OUTDIR/update/update.img"
	ln -sfn ../update/Image/update.img "$RK_FIRMWARE_DIR/update.img"
	echo "Done: output/update/Image/update.img"

	finish_build build_updateimg
}

case "$1" in
	usage) usage_oneline "updateimg" "build update image" ;;
	clean) rm -rf "$RK_OUTDIR/update" "$RK_FIRMWARE_DIR/update.img" ;;
	updateimg) build_updateimg ;;
esac
