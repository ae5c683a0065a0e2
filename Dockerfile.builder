# The build container for Rockchip's build.sh (MYIR MYD-LR3576 SDK).
# MYIR's guide builds on Ubuntu 22.04; tests and the offline demo pass
# BASE=rk3576-build/debian-base:bookworm (made by scripts/setup-host.sh).
# It carries the Rockchip Linux SDK's documented host packages and satisfies the
# framework's host checks (builder/install-host-packages.sh says how); on Ubuntu
# 22.04, lz4 is too old for the kernel step unless LZ4_SOURCE_URL/LZ4_SOURCE_SHA256
# name an lz4 >= 1.9.4 release tarball to build (`builder:check` reports it).
# The build context is only this file and builder/. No RK_* variable is set
# here: build.sh pauses when it finds one in its environment.
ARG BASE=ubuntu:22.04
FROM ${BASE}

ARG EXTRA_PACKAGES=""
ARG LZ4_SOURCE_URL=""
ARG LZ4_SOURCE_SHA256=""
ARG DEBIAN_FRONTEND=noninteractive

COPY builder/install-host-packages.sh /usr/local/lib/builder/install-host-packages.sh
RUN sh /usr/local/lib/builder/install-host-packages.sh

ENV LANG=en_US.UTF-8 LC_ALL=en_US.UTF-8

COPY builder/entrypoint.sh /usr/local/bin/builder-entrypoint
RUN chmod 0755 /usr/local/bin/builder-entrypoint

ENTRYPOINT ["/usr/local/bin/builder-entrypoint"]
CMD ["bash"]
