#!/bin/sh
# Build lz4 >= 1.9.4 into /usr/local when the base's lz4 lacks --favor-decSpeed.
# Run by install-host-packages.sh (curl installed); environment: LZ4_SOURCE,
# LZ4_SOURCE_SHA256 (Dockerfile.builder's build args).
set -eu

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
