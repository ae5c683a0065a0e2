#!/bin/bash
# The partitions hook (build-hooks/05-partitions.sh, pre-build stage). Sample:
# print-parts/list-parts print the chip's partition table (parameter.txt); the
# commands that edit it are not modelled.

print_parts()
{
	local parameter="$RK_CHIP_DIR/${RK_PARAMETER:-parameter.txt}"
	echo "Partitions in $(realpath "$parameter"):"
	grep "^CMDLINE:" "$parameter" | grep -o "[^,:]*@[^,]*" | \
		sed "s/^\([^@]*\)@\([^(]*\)(\([^)]*\))$/\3\toffset \2\tsize \1/" | cat -n
}

usage_hook()
{
	usage_oneline "print-parts" "print partitions"
	usage_oneline "list-parts" "alias of print-parts"
	usage_oneline "mod-parts" "change partitions interactively"
	usage_oneline "edit-parts" "edit parameter.txt in an editor"
	usage_oneline "new-parts:<offset>:<name>:<size>..." "write a new partition table"
	usage_oneline "insert-part:<idx>:<name>[:<size>]" "add a partition"
	usage_oneline "del-part:(<idx>|<name>)" "remove a partition"
	usage_oneline "move-part:(<idx>|<name>):<idx>" "move a partition"
	usage_oneline "rename-part:(<idx>|<name>):<name>" "rename a partition"
	usage_oneline "resize-part:(<idx>|<name>):<size>" "resize a partition"
}

PRE_BUILD_CMDS="print-parts list-parts mod-parts edit-parts new-parts insert-part del-part move-part rename-part resize-part"
pre_build_hook()
{
	case "$1" in
		print-parts | list-parts) print_parts ;;
		*) unmodelled "$1 (the sample's partition table is read-only)" ;;
	esac
}

source "${RK_BUILD_HELPER:-$(dirname "$(realpath "$0")")/build-helper}"

pre_build_hook "$@"
