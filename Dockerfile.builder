# The build container for Rockchip's build.sh (MYIR MYD-LR3576 SDK).
# MYIR's guide builds on Ubuntu 22.04; tests and the offline demo pass
# BASE=rk3576-build/debian-base:bookworm (made by scripts/setup-host.sh).
# The build context is only this file and builder/. No RK_* variable is set
# here: build.sh pauses when it finds one in its environment.
ARG BASE=ubuntu:22.04
FROM ${BASE}

ARG EXTRA_PACKAGES=""
ARG DEBIAN_FRONTEND=noninteractive

RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      git make gcc bc bison flex libssl-dev device-tree-compiler python3 \
      u-boot-tools cpio rsync qemu-user-static binfmt-support debootstrap \
      sudo kmod lz4 fakeroot expect file unzip time locales ccache \
      gcc-aarch64-linux-gnu ${EXTRA_PACKAGES} \
 && localedef -i en_US -c -f UTF-8 -A /usr/share/locale/locale.alias en_US.UTF-8 \
 && rm -rf /var/lib/apt/lists/*

ENV LANG=en_US.UTF-8 LC_ALL=en_US.UTF-8

COPY builder/entrypoint.sh /usr/local/bin/builder-entrypoint
RUN chmod 0755 /usr/local/bin/builder-entrypoint

ENTRYPOINT ["/usr/local/bin/builder-entrypoint"]
CMD ["bash"]
