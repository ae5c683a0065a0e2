#!/bin/bash -e
# Host requirements of the kernel step. Runs standalone too, from anywhere:
#   device/rockchip/common/scripts/check-kernel.sh
# (RK_SCRIPTS_DIR and RK_SDK_DIR default to this script's SDK.) Exits non-zero
# with the fix on the first requirement that is not met.

RK_SCRIPTS_DIR="${RK_SCRIPTS_DIR:-$(dirname "$(realpath "$0")")}"
RK_SDK_DIR="${RK_SDK_DIR:-$(realpath "$RK_SCRIPTS_DIR/../../../..")}"

cd "$RK_SDK_DIR"

if ! command -v python3 >/dev/null 2>&1 || \
	! python3 -c "import sys; sys.exit(sys.version_info < (3, 6))" 2>/dev/null; then
	echo -e "\e[35m"
	echo "Your python3 is missing or too old for kernel"
	echo "Please install it:"
	echo "sudo apt-get install python3"
	echo -e "\e[0m"
	exit 1
fi

# The kernel packs its images with lz4's --favor-decSpeed (lz4 >= 1.9.4).
if ! lz4 -h 2>&1 | grep -q favor-decSpeed; then
	echo -e "\e[35m"
	echo "Your lz4 is too old for kernel: $(lz4 --version 2>&1 | head -n 1)"
	echo "Please update it (lz4 >= 1.9.4):"
	echo "git clone https://github.com/lz4/lz4.git --depth 1 -b v1.9.4"
	echo "cd lz4"
	echo "sudo make install -j8"
	echo -e "\e[0m"
	exit 1
fi
