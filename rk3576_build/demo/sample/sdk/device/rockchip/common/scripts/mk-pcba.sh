#!/bin/bash
# The pcba hook (build-hooks/50-pcba.sh, build stage). Not modelled by the
# sample SDK: it answers its commands, so build.sh accepts them as Rockchip's
# framework does, and fails with a clear message when one is run.

usage_hook()
{
	usage_oneline "pcba" "build the PCBA test image"
}

clean_hook()
{
	rm -rf "$RK_FIRMWARE_DIR/pcba.img"
}

BUILD_CMDS="pcba"
build_hook()
{
	unmodelled "$1"
}

source "${RK_BUILD_HELPER:-$(dirname "$(realpath "$0")")/build-helper}"

build_hook "$@"
