# The build container for Rockchip's build.sh (MYIR MYD-LR3576 SDK).
# MYIR's guide builds on Ubuntu 22.04; tests and the offline demo pass
# BASE=rk3576-build/debian-base:bookworm (made by scripts/setup-host.sh).
# It carries the Rockchip Linux SDK's documented host packages and satisfies the
# framework's host checks (builder/install-host-packages.sh says how). Ubuntu
# 22.04's lz4 (1.9.3) is too old for the kernel step: on such a base lz4 1.9.4 is
# built from LZ4_SOURCE, by default the release tarball in the base's own apt
# archive (its pool/), pinned by LZ4_SOURCE_SHA256. Set LZ4_SOURCE="" to skip it
# (`builder:check` then reports the old lz4).
# The build context is only this file and builder/. No RK_* variable is set
# here: build.sh pauses when it finds one in its environment.
ARG BASE=ubuntu:22.04
FROM ${BASE}

ARG EXTRA_PACKAGES=""
ARG LZ4_SOURCE="pool/main/l/lz4/lz4_1.9.4.orig.tar.gz"
ARG LZ4_SOURCE_SHA256="0b0e3aa07c8c063ddf40b082bdf7e37a1562bda40a0ff5272957f3e987e0e54b"
ARG DEBIAN_FRONTEND=noninteractive

COPY builder/install-host-packages.sh builder/install-lz4.sh /usr/local/lib/builder/
RUN sh /usr/local/lib/builder/install-host-packages.sh

ENV LANG=en_US.UTF-8 LC_ALL=en_US.UTF-8

COPY builder/entrypoint.sh /usr/local/bin/builder-entrypoint
RUN chmod 0755 /usr/local/bin/builder-entrypoint

ENTRYPOINT ["/usr/local/bin/builder-entrypoint"]
CMD ["bash"]
