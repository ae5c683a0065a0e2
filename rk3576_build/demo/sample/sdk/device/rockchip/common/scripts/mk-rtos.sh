#!/bin/bash
# The rtos hook (build-hooks/25-rtos.sh, build stage). Not modelled by the
# sample SDK: it answers its commands, so build.sh accepts them as Rockchip's
# framework does, and fails with a clear message when one is run.

usage_hook()
{
	usage_oneline "rtos" "build and pack the RTOS image"
}

clean_hook()
{
	rm -rf "$RK_OUTDIR/rtos"
}

BUILD_CMDS="rtos"
build_hook()
{
	unmodelled "$1"
}

source "${RK_BUILD_HELPER:-$(dirname "$(realpath "$0")")/build-helper}"

build_hook "$@"
