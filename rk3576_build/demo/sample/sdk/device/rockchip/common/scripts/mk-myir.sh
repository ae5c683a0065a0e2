#!/bin/bash
# MYIR's additions (sample): the step names MYIR's MYD-LR3576 guide uses, which
# the upstream framework does not have: u-boot, module and ubuntu.

case "$1" in
	cmds) echo "u-boot module ubuntu"; exit 0 ;;
esac

source "$(dirname "$(realpath "$0")")/build-helper"

case "$1" in
	usage)
		usage_oneline "u-boot" "build u-boot (MYIR)"
		usage_oneline "module" "build kernel modules (MYIR)"
		usage_oneline "ubuntu" "build ubuntu rootfs (MYIR)"
		;;
	clean) ;;
	u-boot) exec "$RK_SCRIPTS_DIR/mk-loader.sh" uboot ;;
	module) exec "$RK_SCRIPTS_DIR/mk-kernel.sh" modules ;;
	ubuntu) exec "$RK_SCRIPTS_DIR/mk-rootfs.sh" debian ;;
esac
