#!/bin/sh
# Install the build host packages of Rockchip's Linux SDK framework into the
# builder image and satisfy its host checks (device/rockchip/common/scripts/check-*.sh),
# on a Debian bookworm or an Ubuntu 22.04 base. Run once by Dockerfile.builder.
#
# Build args (environment here): EXTRA_PACKAGES, and LZ4_SOURCE plus
# LZ4_SOURCE_SHA256 for a base whose lz4 is too old (see the lz4 part below).
set -eu

# Rockchip's guide list, with names valid on both bases. Left out on purpose:
# gcc-multilib/g++-multilib conflict with gcc-aarch64-linux-gnu (which the SDK's
# prebuilt toolchain stand-in and host-side tools use); the SDK's own toolchain
# does not need them.
REQUIRED="
git ssh make gcc g++ libc6-dev libssl-dev lz4 expect patchelf chrpath gawk texinfo
diffstat binfmt-support qemu-user-static live-build debootstrap bison flex fakeroot
cmake unzip device-tree-compiler libncurses-dev bzip2 expat gpgv cpp-aarch64-linux-gnu
gcc-aarch64-linux-gnu libgmp-dev libmpc-dev bc python3 python-is-python3 e2fsprogs
u-boot-tools cpio rsync sudo kmod file time locales ccache xz-utils
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

# The first archive URL in the base's apt sources (one-line or deb822 format).
apt_archive() {
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        url=$(sed -n -e 's|^deb \(\[[^]]*\] \)\{0,1\}\([a-z+]*://[^ ]*\).*|\2|p' \
                     -e 's|^URIs: *\([a-z+]*://[^ ]*\).*|\1|p' "$f" | head -n 1)
        if [ -n "$url" ]; then
            echo "${url%/}"
            return 0
        fi
    done
    echo "no archive URL in /etc/apt/sources.list*: set LZ4_SOURCE to a full URL" >&2
    return 1
}

# check-kernel.sh needs an lz4 that knows --favor-decSpeed (lz4 >= 1.9.4; bookworm
# has it, Ubuntu 22.04's 1.9.3 does not). When the base's lz4 is too old and
# LZ4_SOURCE is given, build that release (pinned by LZ4_SOURCE_SHA256) into
# /usr/local, which comes first in PATH. LZ4_SOURCE is a URL, or a path in the
# base's own archive (Debian's and Ubuntu's pools both hold lz4's 1.9.4 release
# tarball). With LZ4_SOURCE empty the image still builds and `builder:check`
# reports the problem with its fix.
if ! lz4 -h 2>&1 | grep -q favor-decSpeed && [ -n "${LZ4_SOURCE:-}" ]; then
    if [ -z "${LZ4_SOURCE_SHA256:-}" ]; then
        echo "LZ4_SOURCE is set but LZ4_SOURCE_SHA256 is not: pin the tarball's sha256" >&2
        exit 1
    fi
    case "$LZ4_SOURCE" in
        *://*) url="$LZ4_SOURCE" ;;
        *) url="$(apt_archive)/$LZ4_SOURCE" ;;
    esac
    apt-get install -y --no-install-recommends curl ca-certificates  # http(s); the sha256 pins the content
    work=$(mktemp -d)
    echo "lz4 is older than 1.9.4: building it from $url"
    curl -fsSL -o "$work/lz4.tar.gz" "$url"
    echo "$LZ4_SOURCE_SHA256  $work/lz4.tar.gz" | sha256sum -c -
    tar -xzf "$work/lz4.tar.gz" -C "$work" --strip-components=1
    make -C "$work" -j"$(nproc)" PREFIX=/usr/local install
    rm -rf "$work"
    ldconfig
    hash -r  # the shell remembered the old lz4's path
    lz4 -h 2>&1 | grep -q favor-decSpeed
fi

rm -rf /var/lib/apt/lists/*
