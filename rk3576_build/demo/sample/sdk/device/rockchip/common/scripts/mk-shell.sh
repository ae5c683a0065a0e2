#!/bin/bash
# shell: a shell in the SDK with the build environment (RK_* from output/.config).

case "$1" in
	cmds) echo "shell"; exit 0 ;;
esac

source "$(dirname "$(realpath "$0")")/build-helper"

case "$1" in
	usage) usage_oneline "shell" "setup a shell for developing" ;;
	clean) ;;
	shell)
		notice "Entering a shell with the SDK's build environment (exit to leave)"
		bash
		;;
esac
