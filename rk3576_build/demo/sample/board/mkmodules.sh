#!/bin/sh
# Pack kernel modules for the virtual board's initramfs:
#   mkmodules.sh <kernel_release> <out.cpio.gz> [module.ko]...
# gives lib/modules/<kernel_release>/extra/<name>.ko; /init insmods them all.
# Append it to the rootfs archive (the kernel takes concatenated cpio archives).
set -eu
[ $# -ge 2 ] || { echo "usage: $0 <kernel_release> <out.cpio.gz> [module.ko]..." >&2; exit 2; }
release=$1
out=$2
shift 2
mkdir -p "$(dirname "$out")"
out_abs=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT INT TERM
mkdir -p "$stage/lib/modules/$release/extra"
for ko in "$@"; do
  [ -f "$ko" ] || { echo "mkmodules: no such module: $ko" >&2; exit 2; }
  cp "$ko" "$stage/lib/modules/$release/extra/"
  chmod 644 "$stage/lib/modules/$release/extra/$(basename "$ko")"
done
cd "$stage"
# Same inputs, same bytes (a build cache and a rebuild must agree): fixed times (the builder's
# SOURCE_DATE_EPOCH, else 1970) and inode numbers, names in one order, no name or time in gzip.
find . -exec touch -h -d "@${SOURCE_DATE_EPOCH:-0}" {} +
find . | LC_ALL=C sort | cpio --quiet --reproducible -o -H newc -R 0:0 | gzip -n -6 >"$out_abs.tmp"
mv "$out_abs.tmp" "$out_abs"
