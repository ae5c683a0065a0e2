#!/bin/bash
# The wifibt hook (build-hooks/20-wifibt.sh, build stage). Not modelled by the
# sample SDK: it answers its commands, so build.sh accepts them as Rockchip's
# framework does, and fails with a clear message when one is run.

usage_hook()
{
	usage_oneline "wifibt[:<dst dir>[:<chip>]]" "build the Wi-Fi/BT drivers and firmware"
}

BUILD_CMDS="wifibt"
build_hook()
{
	unmodelled "$1"
}

source "${RK_BUILD_HELPER:-$(dirname "$(realpath "$0")")/build-helper}"

build_hook "$@"
