#!/bin/bash
# The misc hook (build-hooks/08-misc.sh, build stage). Not modelled by the
# sample SDK: it answers its commands, so build.sh accepts them as Rockchip's
# framework does, and fails with a clear message when one is run.

usage_hook()
{
	usage_oneline "misc" "pack misc image"
}

clean_hook()
{
	rm -rf "$RK_FIRMWARE_DIR/misc.img"
}

BUILD_CMDS="misc"
build_hook()
{
	unmodelled "$1"
}

source "${RK_BUILD_HELPER:-$(dirname "$(realpath "$0")")/build-helper}"

build_hook "$@"
