#!/bin/bash
# The firmware hook (build-hooks/80-firmware.sh, post-build stage): put the
# partition table in rockdev/ and check which partition images are there.

build_firmware()
{
	start_build "packing firmwares"

	local part image
	run_command cp "$RK_CHIP_DIR/${RK_PARAMETER:-parameter.txt}" "$RK_FIRMWARE_DIR/parameter.txt"
	for part in $(grep "^CMDLINE:" "$RK_FIRMWARE_DIR/parameter.txt" | \
		grep -o "([^)]*)" | tr -d "()" | cut -d: -f1); do
		image="$RK_FIRMWARE_DIR/$part.img"
		if [ -f "$image" ]; then
			echo "$part: rockdev/$part.img ($(stat -c %s "$image") bytes)"
		else
			warning "$part: no rockdev/$part.img"
		fi
	done

	finish_build build_firmware
}

usage_hook()
{
	usage_oneline "firmware" "pack and check firmwares"
}

clean_hook()
{
	rm -f "$RK_FIRMWARE_DIR/parameter.txt"
}

POST_BUILD_CMDS="firmware"
post_build_hook()
{
	build_firmware
}

source "${RK_BUILD_HELPER:-$(dirname "$(realpath "$0")")/build-helper}"

post_build_hook "$@"
