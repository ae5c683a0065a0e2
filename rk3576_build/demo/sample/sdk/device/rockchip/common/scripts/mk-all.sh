#!/bin/bash
# The all hook (build-hooks/99-all.sh): all (every image, then update.img) in the
# build stage; release/save (copy the images and build info to
# output/save/<session>/) in the post-build stage; all-release/allsave do both.

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

build_release()
{
	local dir="$RK_OUTDIR/save/$RK_SESSION"
	rm -rf "$dir"
	mkdir -p "$dir/IMAGES"
	run_command cp -L "$RK_FIRMWARE_DIR"/* "$dir/IMAGES/"
	{
		echo "DEFCONFIG: $(basename "$RK_DEFCONFIG")"
		echo "CHIP: $RK_CHIP"
		echo "KERNEL: $(kernel_version) ($RK_KERNEL_CFG $RK_KERNEL_CFG_FRAGMENTS)"
		echo "DATE: $(date -u ${SOURCE_DATE_EPOCH:+-d "@$SOURCE_DATE_EPOCH"} +"%F %T")"
	} > "$dir/build_info.txt"
	cp "$RK_CONFIG" "$dir/config"
	echo "Saved at $dir"

	finish_build build_release
}

usage_hook()
{
	usage_oneline "all" "build all images"
	usage_oneline "release" "save images and build info"
	usage_oneline "save" "alias of release"
	usage_oneline "all-release" "build all images, then release"
	usage_oneline "allsave" "alias of all-release"
}

clean_hook()
{
	rm -rf "$RK_OUTDIR/save"
}

BUILD_CMDS="all all-release allsave"
build_hook()
{
	build_all
	[ "$1" = all ] || build_release
}

POST_BUILD_CMDS="release save"
post_build_hook()
{
	build_release
}

source "${RK_BUILD_HELPER:-$(dirname "$(realpath "$0")")/build-helper}"

case "$1" in
	release | save) post_build_hook "$@" ;;
	*) build_hook "$@" ;;
esac
