#!/bin/bash
# The update image hook (build-hooks/90-updateimg.sh, post-build stage):
# output/update/Image/update.img, linked from output/update/update.img and
# rockdev/update.img.
#
# Sample: this update.img is a plain POSIX tar of the partition images for the
# virtual board, NOT Rockchip's RKFW/RKAF format (which needs Rockchip's closed
# afptool/rkImageMaker).

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
		--mtime="@${SOURCE_DATE_EPOCH:-0}" --pax-option=delete=atime,delete=ctime \
		-cf "$RK_OUTDIR/update/Image/update.img" $IMAGES
	ln -sfn Image/update.img "$RK_OUTDIR/update/update.img"
	ln -sfn ../update/Image/update.img "$RK_FIRMWARE_DIR/update.img"
	echo "Done: output/update/Image/update.img"

	finish_build build_updateimg
}

usage_hook()
{
	usage_oneline "edit-package-file" "edit the list of images update.img packs"
	usage_oneline "edit-ota-package-file" "edit that list for A/B OTA"
	usage_oneline "updateimg" "build update image"
	usage_oneline "otapackage" "build an A/B OTA update image"
}

clean_hook()
{
	rm -rf "$RK_OUTDIR/update" "$RK_FIRMWARE_DIR/update.img"
}

PRE_BUILD_CMDS="edit-package-file edit-ota-package-file"
pre_build_hook()
{
	unmodelled "$1 (the sample packs a fixed list of images)"
}

POST_BUILD_CMDS="updateimg otapackage"
post_build_hook()
{
	case "$1" in
		updateimg) build_updateimg ;;
		otapackage) unmodelled "$1" ;;
	esac
}

source "${RK_BUILD_HELPER:-$(dirname "$(realpath "$0")")/build-helper}"

post_build_hook "$@"
