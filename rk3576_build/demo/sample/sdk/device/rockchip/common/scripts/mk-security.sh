#!/bin/bash
# The security hook (build-hooks/60-security.sh, build stage). Not modelled by the
# sample SDK: it answers its commands, so build.sh accepts them as Rockchip's
# framework does, and fails with a clear message when one is run.

usage_hook()
{
	usage_oneline "security_check" "check the secure boot settings"
	usage_oneline "security_keys" "make the secure boot keys"
	usage_oneline "createkeys" "alias of security_keys"
	usage_oneline "security_ramboot" "build the secure ramboot image"
	usage_oneline "security_uboot" "build u-boot for secure boot"
	usage_oneline "security_boot" "build boot.img for secure boot"
	usage_oneline "security_recovery" "build recovery for secure boot"
	usage_oneline "security_rootfs" "build the rootfs for secure boot"
}

clean_hook()
{
	rm -rf "$RK_OUTDIR/security-firmware"
}

BUILD_CMDS="security_check createkeys security_keys security_ramboot security_uboot security_boot security_recovery security_rootfs"
build_hook()
{
	unmodelled "$1"
}

source "${RK_BUILD_HELPER:-$(dirname "$(realpath "$0")")/build-helper}"

build_hook "$@"
