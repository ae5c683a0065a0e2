#!/bin/bash
# MYIR's additions (sample, build-hooks/95-myir.sh in the "myir" flavor only): the
# step names MYIR's MYD-LR3576 guide uses, u-boot, module and ubuntu. Rockchip's
# upstream framework has none of them; whether MYIR's own fork adds them as a hook
# like this one is unconfirmed. The sample adds them so both spellings can be tried.

usage_hook()
{
	usage_oneline "u-boot" "build u-boot (MYIR)"
	usage_oneline "module" "build kernel modules (MYIR)"
	usage_oneline "ubuntu" "build ubuntu rootfs (MYIR)"
}

BUILD_CMDS="u-boot module ubuntu"
build_hook()
{
	case "$1" in
		u-boot) exec "$RK_SCRIPTS_DIR/mk-loader.sh" uboot ;;
		module) exec "$RK_SCRIPTS_DIR/mk-kernel.sh" modules ;;
		ubuntu) exec "$RK_SCRIPTS_DIR/mk-rootfs.sh" debian ;;
	esac
}

source "${RK_BUILD_HELPER:-$(dirname "$(realpath "$0")")/build-helper}"

build_hook "$@"
