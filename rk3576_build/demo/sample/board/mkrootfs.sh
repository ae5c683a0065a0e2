#!/bin/sh
# Build the virtual board's busybox initramfs: mkrootfs.sh <kit_root> <out.cpio.gz>
# Env: ROOT_PASSWORD_HASH (a crypt hash such as `openssl passwd -6` prints; empty
# means no password; never a plaintext password), MOUNT_DEBUGFS (1 default, 0 =
# not mounted at boot), BOARD_HOSTNAME (default myd-lr3576), ROOTFS_HOOK (a
# program run as `$ROOTFS_HOOK <staged rootfs dir>` before packing: the SDK's
# post-overlay.sh applies the rootfs overlays there).
# Plain POSIX sh + cpio + gzip: it also runs inside the build container.
set -eu
[ $# -eq 2 ] || { echo "usage: $0 <kit_root> <out.cpio.gz>" >&2; exit 2; }
kit_root=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
[ -f "$kit_root/bin/busybox" ] || { echo "mkrootfs: no busybox at $kit_root/bin/busybox" >&2; exit 2; }
if [ -z "${ROOT_PASSWORD_HASH+set}" ]; then
  echo "mkrootfs: set ROOT_PASSWORD_HASH (e.g. from 'openssl passwd -6'; empty for no password)" >&2
  exit 2
fi
case "$ROOT_PASSWORD_HASH" in
  ''|'$'*) ;;
  *) echo "mkrootfs: ROOT_PASSWORD_HASH is not a crypt hash (it must start with \$)" >&2; exit 2;;
esac
mount_debugfs=${MOUNT_DEBUGFS:-1}
hostname=${BOARD_HOSTNAME:-myd-lr3576}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT INT TERM
cd "$stage"
mkdir -p bin sbin usr/bin usr/sbin etc root proc sys dev tmp run var/log lib/modules
chmod 700 root
chmod 1777 tmp
cp "$kit_root/bin/busybox" bin/busybox
chmod 755 bin/busybox
cp "$here/init" init
chmod 755 init

echo "$hostname" >etc/hostname
echo "MOUNT_DEBUGFS=$mount_debugfs" >etc/board.conf
cat >etc/passwd <<PASSWD
root:x:0:0:root:/root:/bin/sh
PASSWD
cat >etc/group <<GROUP
root:x:0:
GROUP
printf 'root:%s:19800:0:99999:7:::\n' "$ROOT_PASSWORD_HASH" >etc/shadow
chmod 600 etc/shadow
echo /bin/sh >etc/shells
cat >etc/inittab <<INITTAB
ttyAMA0::respawn:/sbin/getty -L 115200 ttyAMA0 vt100
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/umount -a -r
INITTAB
cat >etc/issue <<ISSUE

Ubuntu 22.04 LTS (MYD-LR3576 virtual board) \\l

ISSUE
# The "Last login:" line is here on purpose: a naive match on "login:" fires on it.
cat >etc/motd <<MOTD
Welcome to MYD-LR3576 (RK3576), a QEMU virtual board.
/proc/device-tree/model reads "linux,dummy-virt" here, not the real board's model.

Last login: Thu Oct 10 09:15:02 2024 from 192.168.1.20
MOTD
cat >etc/profile <<'PROFILE'
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
export PS1='\u@\h:\w\$ '
cd "$HOME"
PROFILE

if [ -n "${ROOTFS_HOOK:-}" ]; then
  ( cd / && "$ROOTFS_HOOK" "$stage" )
fi

mkdir -p "$(dirname "$out")"
out_abs=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
# Same inputs, same bytes (a build cache and a rebuild must agree): fixed times (the builder's
# SOURCE_DATE_EPOCH, else 1970) and inode numbers, names in one order, no name or time in gzip.
find . -exec touch -h -d "@${SOURCE_DATE_EPOCH:-0}" {} +
find . | LC_ALL=C sort | cpio --quiet --reproducible -o -H newc -R 0:0 | gzip -n -6 >"$out_abs.tmp"
mv "$out_abs.tmp" "$out_abs"
