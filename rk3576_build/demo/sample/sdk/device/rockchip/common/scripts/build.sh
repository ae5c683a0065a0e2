#!/bin/bash
# Sample SDK build framework for the rk3576-build offline demo. The SDK root's
# build.sh is a link to this file. It behaves like Rockchip's Linux SDK
# framework where a build tool can tell (usage lines, unknown options exiting 0,
# the lunch menu, output/.config, sessions, the RK_* pause, the error trap), and
# the steps really build: the RKNPU driver for arm64 against the board kit
# mounted at $BOARD_KIT, and a busybox rootfs for the QEMU board.

export LC_ALL=C

setup_environments()
{
	export RK_SCRIPTS_DIR="$(dirname "$(realpath "$BASH_SOURCE")")"
	export RK_COMMON_DIR="$(realpath "$RK_SCRIPTS_DIR/..")"
	export RK_SDK_DIR="$(realpath "$RK_COMMON_DIR/../../..")"
	export RK_DEVICE_DIR="$RK_SDK_DIR/device/rockchip"
	export RK_CHIPS_DIR="$RK_DEVICE_DIR/.chips"
	export RK_CHIP_DIR="$RK_DEVICE_DIR/.chip"
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

# The step scripts, in the order their usage is listed; any other mk-*.sh
# (a vendor's additions) comes after them.
step_scripts()
{
	local name
	for name in config shell kernel rootfs recovery loader firmware updateimg all; do
		[ ! -x "$RK_SCRIPTS_DIR/mk-$name.sh" ] || echo "$RK_SCRIPTS_DIR/mk-$name.sh"
	done
	for name in "$RK_SCRIPTS_DIR"/mk-*.sh; do
		case "$(basename "$name" .sh)" in
			mk-config | mk-shell | mk-kernel | mk-rootfs | mk-recovery | \
				mk-loader | mk-firmware | mk-updateimg | mk-all) ;;
			*) [ ! -x "$name" ] || echo "$name" ;;
		esac
	done
}

# The modules "clean:<module>" takes: the step scripts with something to clean.
clean_modules()
{
	local script
	for script in $(step_scripts); do
		grep -qE "^[[:space:]]*clean\) ;;$" "$script" || basename "$script" .sh | sed "s/^mk-//"
	done
}

usage()
{
	local script
	echo "Usage: build.sh [OPTIONS]"
	echo "Available options:"
	for script in $(step_scripts); do
		"$script" usage
	done
	usage_oneline "cleanall" "cleanup"
	usage_oneline "clean[:module[:module]]..." "cleanup modules"
	echo "    available modules:"
	clean_modules | sed "s/^/\t/"
	usage_oneline "help" "usage"
	echo ""
	echo "Default option is '$RK_DEFAULT_TARGET'."
	exit 0
}

# The step script that handles command $1 (each script lists its commands).
script_for()
{
	local script pattern
	for script in $(step_scripts); do
		for pattern in $("$script" cmds); do
			if [[ "$1" =~ ^($pattern)$ ]]; then
				echo "$script"
				return 0
			fi
		done
	done
	return 1
}

is_config_cmd()
{
	[ "$(script_for "$1")" = "$RK_SCRIPTS_DIR/mk-config.sh" ]
}

start_session()
{
	if [ ! -d "$RK_LOG_DIR" ]; then
		mkdir -p "$RK_LOG_DIR"
		ln -sfn "sessions" "$RK_LOG_BASE_DIR"
		ln -sfn "$RK_SESSION" "$RK_SESSION_DIR/latest"
		message "Log saved at $RK_LOG_DIR"
		echo
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

# Run one build-stage command, its output also in the session's log.
run_step()
{
	local opt="$1" cmd="${1%%:*}" args=() script log
	[ "$opt" = "$cmd" ] || IFS=: read -r -a args <<< "${opt#*:}"
	script="$(script_for "$cmd")"
	log="$RK_LOG_DIR/$cmd.log"
	echo "# $(date +"%F %T") run: $opt" >> "$log"
	"$script" "$cmd" "${args[@]}" 2>&1 | tee -a "$log"
	local ret=${PIPESTATUS[0]}
	if [ "$ret" -ne 0 ]; then
		err_handler "$ret" "run_step $opt" "$(basename "$script") $cmd ${args[*]}"
	fi
}

clean()
{
	local module modules="$*"
	[ -n "$modules" ] || modules="$(clean_modules)"
	for module in $modules; do
		if [ ! -x "$RK_SCRIPTS_DIR/mk-$module.sh" ]; then
			error "ERROR: No such module to clean: $module"
			exit 1
		fi
		"$RK_SCRIPTS_DIR/mk-$module.sh" clean
	done
	finish_build clean $modules
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
		notice "Running within sudo(root) environment!"
		echo
	fi

	mkdir -p "$RK_FIRMWARE_DIR"
	[ -e "$RK_ROCKDEV_DIR" ] || [ -L "$RK_ROCKDEV_DIR" ] || ln -s output/firmware "$RK_ROCKDEV_DIR"

	local options=() opt need_config= has_build=
	for opt in ${@:-$RK_DEFAULT_TARGET}; do
		opt="${opt%%:}"
		# ./build.sh rk3576:<name>_defconfig chooses chip and defconfig.
		if [ -d "$RK_CHIPS_DIR/${opt%%:*}" ]; then
			opt="chip:$opt"
		fi
		options+=("$opt")
	done

	for opt in "${options[@]}"; do
		case "$opt" in
			help | h | -h | --help | usage | \?) usage ;;
			cleanall | clean | clean:*) has_build=1 ;;
			*)
				if ! script_for "${opt%%:*}" >/dev/null; then
					error "ERROR: Unhandled option: $opt"
					usage
				fi
				is_config_cmd "${opt%%:*}" || { has_build=1; need_config=1; }
				;;
		esac
	done

	start_session

	# Init stage: choosing chip and defconfig (interactive, not logged).
	for opt in "${options[@]}"; do
		if is_config_cmd "${opt%%:*}"; then
			local args=()
			[ "$opt" = "${opt%%:*}" ] || IFS=: read -r -a args <<< "${opt#*:}"
			"$RK_SCRIPTS_DIR/mk-config.sh" "${opt%%:*}" "${args[@]}"
		fi
	done
	[ -n "$has_build" ] || return 0

	if [ -n "$need_config" ]; then
		"$RK_SCRIPTS_DIR/mk-config.sh" default
		set -a
		source "$RK_CONFIG"
		set +a
		cp "$RK_CONFIG" "$RK_LOG_DIR/config"
		check_custom_environments
		export RK_KERNEL_VERSION="$(kernel_version)"
	fi

	for opt in "${options[@]}"; do
		case "$opt" in
			cleanall)
				clean
				find "$RK_OUTDIR" -mindepth 1 -maxdepth 1 ! -name sessions ! -name log \
					-exec rm -rf {} +
				mkdir -p "$RK_FIRMWARE_DIR"
				finish_build cleanall
				;;
			clean) clean ;;
			clean:*) clean $(echo "${opt#clean:}" | tr : " ") ;;
			*) is_config_cmd "${opt%%:*}" || run_step "$opt" ;;
		esac
	done
}

main "$@"
