#!/bin/bash
# The recovery step. The sample defconfigs configure no recovery (RK_RECOVERY_CFG
# empty), so, as in the real framework, the step is skipped with a notice.

case "$1" in
	cmds) echo "recovery"; exit 0 ;;
esac

source "$(dirname "$(realpath "$0")")/build-helper"

build_recovery()
{
	check_config RK_RECOVERY_CFG || return 0
	error "No buildroot/ in the sample SDK to build the recovery ($RK_RECOVERY_CFG) with"
	exit 1
}

case "$1" in
	usage) usage_oneline "recovery" "build recovery" ;;
	clean) rm -f "$RK_FIRMWARE_DIR/recovery.img" ;;
	recovery) build_recovery ;;
esac
