#!/bin/bash
# post-overlay.sh <target dir> [<os>]: the rootfs overlays, applied to a staged root
# filesystem before it is packed, in the order the real framework's post-rootfs hook
# uses: common/overlays/overlay-<os> first, then each directory RK_ROOTFS_OVERLAY_DIRS
# (from output/.config, paths relative to the SDK root) lists. A directory with an
# executable install.sh runs it as `install.sh <target dir> <os>`; any other is
# copied with rsync, group and others getting read access (u=rwX,go=rX).
set -e

TARGET_DIR="$(realpath "${1:?usage: post-overlay.sh <target dir> [<os>]}")"
POST_OS="${2:-${POST_OS:-debian}}"
SDK_DIR="${RK_SDK_DIR:-$(realpath "$(dirname "$(realpath "$0")")/../../../..")}"
COMMON_DIR="$SDK_DIR/device/rockchip/common"

cd "$SDK_DIR"
for overlay in "$COMMON_DIR/overlays/overlay-$POST_OS" $RK_ROOTFS_OVERLAY_DIRS; do
	if [ ! -d "$overlay" ]; then
		[ "$overlay" = "$COMMON_DIR/overlays/overlay-$POST_OS" ] || \
			echo "Ignoring overlay $overlay: no such directory in $SDK_DIR" >&2
		continue
	fi

	if [ -x "$overlay/install.sh" ]; then
		echo "Handling overlay: $overlay..."
		"$overlay/install.sh" "$TARGET_DIR" "$POST_OS"
		continue
	fi

	echo "Installing overlay: $overlay to $TARGET_DIR..."
	rsync -av --chmod=u=rwX,go=rX "$overlay/" "$TARGET_DIR/"
done
