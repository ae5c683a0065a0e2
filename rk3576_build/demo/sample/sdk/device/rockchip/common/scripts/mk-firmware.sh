#!/bin/bash
# The firmware step: put the partition table in rockdev/ and check which
# partition images are there.

case "$1" in
	cmds) echo "firmware"; exit 0 ;;
esac

source "$(dirname "$(realpath "$0")")/build-helper"

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

case "$1" in
	usage) usage_oneline "firmware" "pack and check firmwares" ;;
	clean) rm -f "$RK_FIRMWARE_DIR/parameter.txt" ;;
	firmware) build_firmware ;;
esac
