#!/bin/bash
# The recovery hook (build-hooks/40-recovery.sh). The sample defconfigs configure
# no recovery (RK_RECOVERY_CFG empty), so, as in the real framework, the step is
# skipped with a notice.

build_recovery()
{
	check_config RK_RECOVERY_CFG || return 0
	error "No buildroot/ in the sample SDK to build the recovery ($RK_RECOVERY_CFG) with"
	exit 1
}

usage_hook()
{
	usage_oneline "recovery" "build recovery"
}

clean_hook()
{
	rm -f "$RK_FIRMWARE_DIR/recovery.img"
}

BUILD_CMDS="recovery"
build_hook()
{
	build_recovery
}

source "${RK_BUILD_HELPER:-$(dirname "$(realpath "$0")")/build-helper}"

build_hook "$@"
