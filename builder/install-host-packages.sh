#!/bin/sh
# Install the build host packages of Rockchip's Linux SDK framework into the
# builder image and satisfy its host checks (device/rockchip/common/scripts/check-*.sh),
# on a Debian bookworm or an Ubuntu 22.04 base. Run once by Dockerfile.builder.
#
# Build args (environment here): EXTRA_PACKAGES, and LZ4_SOURCE plus
# LZ4_SOURCE_SHA256 for a base whose lz4 is too old (see install-lz4.sh).
set -eu

# Rockchip's guide list, with names valid on both bases. Left out on purpose:
# gcc-multilib/g++-multilib conflict with gcc-aarch64-linux-gnu (which the SDK's
# prebuilt toolchain stand-in and host-side tools use); the SDK's own toolchain
# does not need them. g++-aarch64-linux-gnu builds the recipe's apps when the SDK has
# no prebuilt C++ cross compiler (rk3576_build/build/apps.py).
REQUIRED="
git ssh make gcc g++ libc6-dev libssl-dev lz4 expect patchelf chrpath gawk texinfo
diffstat binfmt-support qemu-user-static live-build debootstrap bison flex fakeroot
cmake unzip device-tree-compiler libncurses-dev bzip2 expat gpgv cpp-aarch64-linux-gnu
gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libgmp-dev libmpc-dev bc python3 python-is-python3 e2fsprogs
u-boot-tools cpio rsync sudo kmod file time locales ccache xz-utils curl ca-certificates
"
# Names that exist in one archive only (transitional or renamed packages):
# installed when this base's archive knows them.
OPTIONAL="liblz4-tool expect-dev tcl-expect-dev gpgv2"

apt-get update
optional=""
for name in $OPTIONAL; do
    if apt-cache show "$name" >/dev/null 2>&1; then
        optional="$optional $name"
    fi
done
# shellcheck disable=SC2086  # word splitting of the lists is intended
apt-get install -y --no-install-recommends $REQUIRED $optional ${EXTRA_PACKAGES:-}

# kconfig, host tools and the framework's scripts expect a UTF-8 locale.
localedef -i en_US -c -f UTF-8 -A /usr/share/locale/locale.alias en_US.UTF-8

# check-debian.sh refuses an mke2fs that enables metadata_csum_seed (e2fsprogs
# >= 1.47 may): the board's older e2fsck cannot handle it. Drop it from the defaults.
if [ -f /etc/mke2fs.conf ] && grep -qw metadata_csum_seed /etc/mke2fs.conf; then
    sed -i -e 's/,metadata_csum_seed\b//g' -e 's/\bmetadata_csum_seed,//g' \
        -e 's/\bmetadata_csum_seed\b//g' /etc/mke2fs.conf
fi

# check-kernel.sh needs lz4 >= 1.9.4: build it when the base's is older.
sh "$(dirname "$0")/install-lz4.sh"

rm -rf /var/lib/apt/lists/*
