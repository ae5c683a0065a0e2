#!/usr/bin/env bash
# Prepare a fresh Debian/Ubuntu host for rk3576-build and its tests.
# Idempotent: each step runs only when what it provides is missing.
#   - Debian packages: Docker engine, QEMU, cross compiler, parallel decompressors
#   - dockerd started in the background when no daemon answers
#   - a local Debian base image (no registry is needed: debootstrap + docker import)
#   - the arm64 board kit (kernel, headers, busybox) for the virtual board
#   - the Python package with its test extras
#   - labgrid and Debian's ser2net (verify --place and its tests)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
BASE_IMAGE="${RK3576_BASE_IMAGE:-rk3576-build/debian-base:bookworm}"
log() { printf '[setup] %s\n' "$*"; }

APT_PACKAGES=(docker.io qemu-system-arm debootstrap gcc-aarch64-linux-gnu
  libc6-dev-arm64-cross  # static arm64 C library: the virtual board's llm_demo stand-in
  pigz isal lbzip2 xz-utils bzip2 cpio git curl openssl ca-certificates python3-venv make
  docker-registry)  # Docker Distribution on loopback: the build cache's registry tests
APT_PACKAGES+=(ser2net)  # serial ports on the network, as a labgrid exporter publishes them
APT_PACKAGES+=(chromium)  # headless, for the test of the matrix report's HTML page
APT_PACKAGES+=(e2fsprogs diffoscope-minimal)  # release: debugfs lists rootfs.img's packages; the rebuild check's diffs
APT_PACKAGES+=(openssh-client)  # ssh-keygen -Y: release and build-cache signatures (SSHSIG)

apt_updated=""
apt_update() {
  [ -n "$apt_updated" ] && return 0
  log "apt-get update"
  $SUDO apt-get update -qq || log "apt-get update reported errors (some sources unreachable); continuing"
  apt_updated=1
}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt_update
  log "installing ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  log "adding the arm64 architecture (for the virtual board's kernel and busybox)"
  $SUDO dpkg --add-architecture arm64
  apt_updated=""
  apt_update
elif ! apt-cache show linux-image-arm64:arm64 >/dev/null 2>&1; then
  apt_update
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd in the background (log: /var/log/rk3576-dockerd.log)"
  $SUDO sh -c 'nohup dockerd >/var/log/rk3576-dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { log "dockerd did not come up; see /var/log/rk3576-dockerd.log"; exit 1; }
fi

# The mirror this host's apt already uses (never a hard-coded host).
apt_mirror() {
  local uri
  uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v -- '-security' | grep -m1 debian || true)
  [ -n "$uri" ] || uri=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
                         | awk '{print $2}' | grep -v -- '-security' | grep -m1 debian || true)
  [ -n "$uri" ] || uri=$(grep -hsE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -1)
  printf '%s' "$uri"
}

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  mirror=$(apt_mirror)
  [ -n "$mirror" ] || { log "no apt mirror found in /etc/apt/sources*; cannot make the base image"; exit 1; }
  rootfs=$(mktemp -d /var/tmp/rk3576-base.XXXXXX)
  log "making $BASE_IMAGE with debootstrap from $mirror"
  $SUDO debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/var/tmp/rk3576-debootstrap.log 2>&1 \
    || { log "debootstrap failed; see /var/tmp/rk3576-debootstrap.log"; exit 1; }
  $SUDO tar -C "$rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
  $SUDO rm -rf "$rootfs"
fi

# (ruff, mypy and the type stubs in pyproject's test extra: scripts/test.sh lints before it tests)
# (wheel: building the tool's wheel offline, as tests/test_install.py does, with setuptools < 70.1)
# Installed from THIS checkout (editable): CI runs in a fresh clone, and the tests'
# subprocesses must import this tree, not another checkout installed earlier.
installed_from=$(cd / && python3 -c "import os, rk3576_build; print(os.path.dirname(os.path.dirname(rk3576_build.__file__)))" \
                 2>/dev/null || true)
if [ "$installed_from" != "$PWD" ] \
   || ! python3 -c "import rk3576_build, doit, git, docker, serial, pytest, pytest_timeout, oras, zstandard, wheel, cyclonedx, spdx_tools" >/dev/null 2>&1 \
   || ! python3 -c "import ruff, mypy" >/dev/null 2>&1 \
   || ! command -v rk3576-build >/dev/null; then
  log "installing the Python package with its test and cache extras"
  python3 -m pip install -q -e ".[test,cache]"
fi

if ! python3 -c "import labgrid" >/dev/null 2>&1 || ! command -v labgrid-coordinator >/dev/null \
   || ! command -v labgrid-exporter >/dev/null; then
  log "installing labgrid (the labgrid extra: verify --place, its coordinator and exporter for the tests)"
  python3 -m pip install -q -e ".[labgrid]"
fi

log "board kit: $(python3 -m rk3576_build.demo.board_kit)"
log "host ready"
