#!/bin/bash
# The shell hook (build-hooks/9999-shell.sh, pre-build stage): a shell in the SDK
# with the build environment (RK_* from output/.config).

usage_hook()
{
	usage_oneline "shell" "setup a shell for developing"
}

PRE_BUILD_CMDS="shell"
pre_build_hook()
{
	notice "Entering a shell with the SDK's build environment (exit to leave)"
	bash
}

source "${RK_BUILD_HELPER:-$(dirname "$(realpath "$0")")/build-helper}"

pre_build_hook "$@"
