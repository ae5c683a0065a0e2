#!/bin/bash
# Sample SDK build framework for the rk3576-build offline demo. The SDK root's
# build.sh is a link to this file. It behaves like Rockchip's Linux SDK
# framework where a build tool can tell, and the steps really build: the RKNPU
# driver for arm64 against the board kit mounted at $BOARD_KIT, and a busybox
# rootfs for the QEMU board.
#
# As in the real framework, the commands live in hooks (common/build-hooks/*.sh,
# links to mk-*.sh, run in name order; a chip may add its own in
# .chip/build-hooks/). build.sh asks every hook for the commands it handles
# (`<hook> support-cmds all`: regular expressions matched against an option's
# part before its first `:`) and accepts exactly those; the usage text
# (`<hook> usage`) is separate and does not list every one (lunch). An option no
# hook handles prints `ERROR: Unhandled option`, the usage, and exits 0. A run
# goes through the stages init (chip and defconfig), pre-build, build and
# post-build, each hook handling the options it knows in each stage.

export LC_ALL=C

setup_environments()
{
	export RK_SCRIPTS_DIR="$(dirname "$(realpath "$BASH_SOURCE")")"
	export RK_COMMON_DIR="$(realpath "$RK_SCRIPTS_DIR/..")"
	export RK_SDK_DIR="$(realpath "$RK_COMMON_DIR/../../..")"
	export RK_DEVICE_DIR="$RK_SDK_DIR/device/rockchip"
	export RK_CHIPS_DIR="$RK_DEVICE_DIR/.chips"
	export RK_CHIP_DIR="$RK_DEVICE_DIR/.chip"
	export RK_BUILD_HOOK_DIR="$RK_COMMON_DIR/build-hooks"
	export RK_BUILD_HELPER="$RK_SCRIPTS_DIR/build-helper"
	export RK_OUTDIR="$RK_SDK_DIR/output"
	export RK_FIRMWARE_DIR="$RK_OUTDIR/firmware"
	export RK_ROCKDEV_DIR="$RK_SDK_DIR/rockdev"
	export RK_CONFIG="$RK_OUTDIR/.config"
	export RK_DEFCONFIG_LINK="$RK_OUTDIR/defconfig"
	export RK_SESSION_DIR="$RK_OUTDIR/sessions"
	export RK_SESSION="${RK_SESSION:-$(date +%F_%H-%M-%S)}"
	export RK_LOG_DIR="$RK_SESSION_DIR/$RK_SESSION"
	export RK_LOG_BASE_DIR="$RK_OUTDIR/log"
	export RK_OWNER_UID="$(stat --format %u "$RK_SDK_DIR")"
	export RK_DEFAULT_TARGET="all"
}

source "$(dirname "$(realpath "$BASH_SOURCE")")/build-helper"

# The hooks in the order they run: the selected chip's own, then the common ones.
list_hooks()
{
	local dir
	for dir in "$RK_CHIP_DIR/build-hooks" "$RK_BUILD_HOOK_DIR"; do
		[ ! -d "$dir" ] || find "$dir" -maxdepth 1 -name "*.sh" | sort
	done
}

# run_hooks <stage> <option>...: every hook, in turn; the first one that fails stops the run.
run_hooks()
{
	local hooks=() hook
	mapfile -t hooks < <(list_hooks)
	for hook in "${hooks[@]}"; do
		"$hook" "$@" && continue
		err_handler $? "${FUNCNAME[0]} $*" "$hook $*"
	done
}

run_build_hooks()
{
	case "$1" in
		support-cmds | usage) run_hooks "$@" || true ;;
		*) run_hooks "$@" ;;
	esac
}

# Every command the hooks handle in the given stages, one pattern a line.
stage_patterns()
{
	run_build_hooks support-cmds "$@" | tr -s " " "\n" | grep -v "^$" || true
}

# handled <patterns> <option>: whether a pattern matches the option's part before its first `:`.
handled()
{
	local pattern
	while read -r pattern; do
		[[ "${2%%:*}" =~ ^($pattern)$ ]] && return 0
	done <<< "$1"
	return 1
}

# The modules clean:<module> takes: the mk-*.sh scripts that have something to clean.
clean_modules()
{
	local script
	for script in "$RK_SCRIPTS_DIR"/mk-*.sh; do
		! grep -q "^clean_hook()" "$script" || basename "$script" .sh | sed "s/^mk-//"
	done
}

usage()
{
	echo "Usage: build.sh [OPTIONS]"
	echo "Available options:"
	run_build_hooks usage
	usage_oneline "cleanall" "cleanup"
	usage_oneline "clean[:module[:module]]..." "cleanup modules"
	echo "    available modules:"
	clean_modules | sed "s/^/\t/"
	usage_oneline "post-rootfs <rootfs dir>" "run the rootfs overlays on a rootfs dir"
	usage_oneline "help" "usage"
	echo ""
	echo "Default option is '$RK_DEFAULT_TARGET'."
	exit 0
}

log_colors()
{
	notice -n "Log colors: "
	message -n "message "
	notice -n "notice "
	warning -n "warning "
	error -n "error "
	fatal "fatal"
	echo
}

# The option as the hooks see it: `<chip>:<defconfig>` selects chip and defconfig
# (`chip:<chip>:<defconfig>`), `<name>_defconfig` is `defconfig:<name>_defconfig`.
rewrite_option()
{
	if [ -d "$RK_CHIPS_DIR/${1%%:*}" ]; then
		echo "chip:$1"
	elif [[ "$1" =~ ^[0-9a-z_]*_defconfig$ ]]; then
		echo "defconfig:$1"
	else
		echo "$1"
	fi
}

start_session()
{
	if [ ! -d "$RK_LOG_DIR" ]; then
		mkdir -p "$RK_LOG_DIR"
		ln -sfn "sessions" "$RK_LOG_BASE_DIR"
		ln -sfn "$RK_SESSION" "$RK_SESSION_DIR/latest"
		message "Log saved at $RK_LOG_DIR"
	fi
	# Keep the last 10 sessions.
	ls -1 "$RK_SESSION_DIR" | grep -v "^latest$" | sort | head -n -10 | \
		while read -r old; do rm -rf "${RK_SESSION_DIR:?}/$old"; done
}

# RK_* variables from the caller's environment override the defconfig: warn
# and wait, as the real framework does (without a terminal the read fails).
check_custom_environments()
{
	local line name value custom=
	while read -r line; do
		[ -n "$line" ] || continue
		name="${line%%=*}"
		[ "$name" != RK_SESSION ] || continue
		# Not custom when it only repeats what .config says.
		value="$(grep "^$name=" "$RK_CONFIG" 2>/dev/null | head -n 1 | cut -d= -f2- | tr -d '"')"
		[ "$value" != "${line#*=}" ] || continue
		custom="$custom$line"$'\n'
	done <<< "$INITIAL_RK_ENV"

	[ -n "$custom" ] || return 0
	echo -n "$custom" > "$RK_LOG_DIR/custom.env"
	warning "WARN: Found custom environments:"
	echo -n "$custom"
	warning "Assuming that is expected, please clear them if otherwise."
	read -t 10 -p "Press enter to continue."
	set -a
	source "$RK_LOG_DIR/custom.env"
	set +a
}

clean()
{
	local module
	for module in "$@"; do
		"$RK_SCRIPTS_DIR/mk-$module.sh" clean
	done
	finish_build clean "$@"
}

# check_options <option>...: usage (and exit 0) for help, a misplaced single
# option or one no hook handles.
check_options()
{
	local patterns opt module
	patterns="$(stage_patterns all)"
	for opt in "$@"; do
		case "$opt" in
			help | h | -h | --help | usage | \?) usage ;;
			clean:* | shell | cleanall)
				if [ "${opt%%:*}" = clean ]; then
					for module in $(echo "${opt#clean:}" | tr : " "); do
						grep -qs "^clean_hook()" "$RK_SCRIPTS_DIR/mk-$module.sh" || usage
					done
				fi
				[ "$#" -ne 1 ] || continue
				error "ERROR: $opt cannot combine with other options!"
				;;
			post-rootfs)
				[ "$opt" != "$1" ] || [ ! -d "$2" ] || return 0
				error "ERROR: $opt should be the first option followed by rootfs dir!"
				;;
			*)
				! handled "$patterns" "$opt" || continue
				error "ERROR: Unhandled option: $opt"
				;;
		esac
		usage
	done
}

# wanted <stage>... -- <option>...: whether an option is for one of those stages.
wanted()
{
	local stages=() patterns opt
	while [ "$1" != -- ]; do
		stages+=("$1")
		shift
	done
	shift
	patterns="$(stage_patterns "${stages[@]}")"
	for opt in "$@"; do
		handled "$patterns" "$opt" && return 0
	done
	return 1
}

main()
{
	trap 'err_handler' ERR
	set -eE

	INITIAL_RK_ENV="$(env | grep "^RK_" || true)"
	setup_environments
	cd "$RK_SDK_DIR"

	unset RK_SUDO_ROOT
	if [ "$RK_OWNER_UID" -ne 0 ] && [ "$(id -u)" -eq 0 ]; then
		export RK_SUDO_ROOT=1
	fi

	log_colors

	mkdir -p "$RK_FIRMWARE_DIR"
	[ -e "$RK_ROCKDEV_DIR" ] || [ -L "$RK_ROCKDEV_DIR" ] || ln -s output/firmware "$RK_ROCKDEV_DIR"

	local args=("${@:-$RK_DEFAULT_TARGET}") options=() opt
	for opt in "${args[@]}"; do
		options+=("$(rewrite_option "$opt")")
	done

	check_options "${options[@]}"
	# The rootfs dir after post-rootfs is not an option for the hooks.
	[ "${options[0]}" != post-rootfs ] || options=(post-rootfs)
	start_session

	# Init stage: choosing chip and defconfig (and making .config), interactive.
	run_build_hooks init "${options[@]}"

	case "${options[0]}" in
		cleanall | clean:* | post-rootfs) ;;
		*) wanted pre-build build post-build -- "${options[@]}" || return 0 ;;
	esac

	set -a
	source "$RK_CONFIG"
	set +a
	cp "$RK_CONFIG" "$RK_LOG_DIR/config"
	check_custom_environments
	export RK_KERNEL_VERSION="$(kernel_version)"

	case "${options[0]}" in
		cleanall)
			clean $(clean_modules)
			find "$RK_OUTDIR" -mindepth 1 -maxdepth 1 ! -name sessions ! -name log \
				-exec rm -rf {} +
			mkdir -p "$RK_FIRMWARE_DIR"
			finish_build cleanall
			return 0
			;;
		clean:*)
			clean $(echo "${options[0]#clean:}" | tr : " ")
			return 0
			;;
		post-rootfs)
			"$RK_SCRIPTS_DIR/post-overlay.sh" "${args[1]}" "${RK_ROOTFS_SYSTEM:-debian}"
			finish_build post-rootfs
			return 0
			;;
	esac

	run_build_hooks pre-build "${options[@]}"
	wanted build post-build -- "${options[@]}" || return 0
	run_build_hooks build "${options[@]}"
	wanted post-build -- "${options[@]}" || return 0
	run_build_hooks post-build "${options[@]}"
}

main "$@"
