#!/bin/bash
# The config hook (build-hooks/00-config.sh): choosing the chip and the SDK
# defconfig, in the init stage. `lunch` is accepted (it is one of this hook's
# commands) although the usage text does not list it, as in Rockchip's framework.
# The selection is output/defconfig (a link to the defconfig file) and
# output/.config (written by the kconfig helper, built from source at first use).

KCONF_DIR="$RK_OUTDIR/kconf"
KCONF_SRC="$RK_COMMON_DIR/kconfig/conf.c"
CONFIG_DEFAULTS="$RK_COMMON_DIR/configs/defaults.config"

# Like the real framework, kconfig is compiled with the build host's gcc.
build_kconf()
{
	if [ -x "$KCONF_DIR/conf" ] && [ "$KCONF_DIR/conf" -nt "$KCONF_SRC" ]; then
		return 0
	fi
	mkdir -p "$KCONF_DIR"
	run_command gcc -O2 -Wall -o "$KCONF_DIR/conf" "$KCONF_SRC"
}

# make_config <defconfig path>: write output/.config from it.
make_config()
{
	build_kconf
	RK_DEFCONFIG="$1" RK_CHIP_FAMILY="$(basename "$(realpath "$RK_CHIP_DIR")")" \
		RK_CHIP="$(basename "$(realpath "$RK_CHIP_DIR")")" \
		"$KCONF_DIR/conf" --defconfig="$1" --defaults="$CONFIG_DEFAULTS" "$RK_CONFIG"
}

switch_defconfig()
{
	local defconfig="$RK_CHIP_DIR/$1"

	if [ ! -f "$defconfig" ]; then
		error "No such defconfig: $1"
		exit 1
	fi

	defconfig="$(realpath "$defconfig")"
	notice "Switching to defconfig: $defconfig"
	mkdir -p "$RK_OUTDIR"
	rm -f "$RK_DEFCONFIG_LINK"
	ln -s "$defconfig" "$RK_DEFCONFIG_LINK"

	make_config "$defconfig"
}

# The selected chip's defconfigs: rockchip_defconfig first, then the others in ls
# order. Without a selected chip the cd fails and ls finds nothing (both say so).
rockchip_defconfigs()
{
	cd "$RK_CHIP_DIR"
	ls rockchip_defconfig 2>/dev/null || true
	ls -- *_defconfig | grep -vx rockchip_defconfig || true
}

# menu_choice <index> <count>: whether a typed answer names an entry.
menu_choice()
{
	[[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le "$2" ] && return 0
	error "Invalid choice: $1"
	return 1
}

# choose_defconfig [<part of a name>]: the only match, an exact first match, or a menu.
choose_defconfig()
{
	local list=() defconfig INDEX
	mapfile -t list < <(rockchip_defconfigs | grep -F -- "${1:-}" || true)

	case ${#list[@]} in
		0)
			error "No available defconfigs${1:+" for: $1"}"
			return 1
			;;
		1) defconfig="${list[0]}" ;;
		*)
			if [ "$1" = "${list[0]}" ]; then
				defconfig="$1"
			else
				message "Pick a defconfig:\n"
				printf "%s\n" "${list[@]}" | sed = | sed "N;s/\n/. /"
				read -p "Which would you like? [1]: " INDEX
				INDEX="${INDEX:-1}"
				menu_choice "$INDEX" ${#list[@]}
				defconfig="${list[$((INDEX - 1))]}"
			fi
			;;
	esac

	switch_defconfig "$defconfig"
}

# The chip's name under device/rockchip links to it too, as in the real SDK.
link_chip()
{
	local chip="$(basename "$(realpath "$RK_CHIP_DIR")")" name
	for name in $(ls "$RK_CHIPS_DIR"); do
		[ ! -L "$RK_DEVICE_DIR/$name" ] || rm -f "$RK_DEVICE_DIR/$name"
	done
	[ -e "$RK_DEVICE_DIR/$chip" ] || ln -s ".chips/$chip" "$RK_DEVICE_DIR/$chip"
}

# choose_chip [<part of a chip name> [<part of a defconfig name>]]
choose_chip()
{
	local list=() chip INDEX
	mapfile -t list < <(ls "$RK_CHIPS_DIR" | grep -F -- "${1:-}" || true)

	case ${#list[@]} in
		0)
			error "No available chips${1:+" for: $1"}"
			return 1
			;;
		1) chip="${list[0]}" ;;
		*)
			if [ "$1" = "${list[0]}" ]; then
				chip="$1"
			else
				message "Pick a chip:\n"
				printf "%s\n" "${list[@]}" | sed = | sed "N;s/\n/. /"
				read -p "Which would you like? [1]: " INDEX
				INDEX="${INDEX:-1}"
				menu_choice "$INDEX" ${#list[@]}
				chip="${list[$((INDEX - 1))]}"
			fi
			;;
	esac

	notice "Switching to chip: $chip"
	rm -rf "$RK_CHIP_DIR"
	ln -s ".chips/$chip" "$RK_CHIP_DIR"
	link_chip

	# The defconfig part is matched like lunch's: a menu unless it is the only or first match.
	choose_defconfig "$2"
}

# Before any build step: a chip, a defconfig and an up-to-date .config.
prepare_config()
{
	local recorded name

	[ -e "$RK_CHIP_DIR" ] || choose_chip
	link_chip

	recorded="$(grep "^RK_DEFCONFIG=" "$RK_CONFIG" 2>/dev/null | cut -d= -f2- | tr -d '"' || true)"
	if [ -n "$recorded" ] && [ ! -f "$recorded" ]; then
		# The SDK moved (or was mounted elsewhere): the absolute path is stale.
		warning "WARN: $RK_CONFIG is invalid: RK_DEFCONFIG $recorded does not exist"
		name="$(basename "$recorded")"
		if [ -f "$RK_CHIP_DIR/$name" ]; then
			switch_defconfig "$name"
		else
			choose_defconfig
		fi
		return 0
	fi

	if [ ! -r "$RK_DEFCONFIG_LINK" ]; then
		warning "WARN: $RK_DEFCONFIG_LINK not exists"
		choose_defconfig
		return 0
	fi

	name="$(basename "$(realpath "$RK_DEFCONFIG_LINK")")"
	if [ ! "$RK_DEFCONFIG_LINK" -ef "$RK_CHIP_DIR/$name" ]; then
		warning "WARN: $RK_DEFCONFIG_LINK is invalid"
		choose_defconfig
		return 0
	fi

	if [ ! -r "$RK_CONFIG" ] || [ "$RK_CONFIG" -ot "$(realpath "$RK_DEFCONFIG_LINK")" ] || \
		[ ! "$recorded" -ef "$RK_DEFCONFIG_LINK" ]; then
		warning "WARN: $RK_CONFIG is out-dated"
		make_config "$(realpath "$RK_DEFCONFIG_LINK")"
	fi
}

usage_hook()
{
	usage_oneline "chip[:<chip>[:<config>]]" "choose chip"
	usage_oneline "defconfig[:<config>]" "choose defconfig"
	usage_oneline " *_defconfig" "switch to specified defconfig"
	echo "    available defconfigs:"
	# On a fresh tree (no .chip) ls says it cannot access the directory.
	ls "$RK_CHIP_DIR/" | grep -e "defconfig$" | sed "s/^/\t/" || true
	usage_oneline " olddefconfig" "update .config for new symbols"
	usage_oneline " savedefconfig" "write .config back as a defconfig"
	usage_oneline " menuconfig" "edit .config in a menu"
	usage_oneline "config" "edit the SDK defconfig"
}

clean_hook()
{
	rm -rf "$RK_CONFIG" "$RK_CONFIG".* "$RK_DEFCONFIG_LINK" "$KCONF_DIR"
}

INIT_CMDS="chip defconfig lunch [^:]*_defconfig olddefconfig savedefconfig menuconfig config default"
init_hook()
{
	case "${1:-default}" in
		chip) shift; choose_chip "$@" ;;
		defconfig | lunch) shift; choose_defconfig "$@" ;;
		*_defconfig) switch_defconfig "$1" ;;
		olddefconfig | savedefconfig | menuconfig | config)
			unmodelled "$1 (the sample's kconfig only writes .config from a defconfig)"
			;;
		default) prepare_config ;;
	esac
}

source "${RK_BUILD_HELPER:-$(dirname "$(realpath "$0")")/build-helper}"

init_hook "$@"
