#!/bin/bash
# The extra-part hook (build-hooks/75-extra-part.sh, post-build stage). Not
# modelled by the sample SDK: it answers its commands, so build.sh accepts them as
# Rockchip's framework does, and fails with a clear message when one is run.

usage_hook()
{
	usage_oneline "extra-part" "pack the extra partitions' images"
}

clean_hook()
{
	rm -rf "$RK_OUTDIR/extra-part"
}

POST_BUILD_CMDS="extra-part"
post_build_hook()
{
	unmodelled "$1"
}

source "${RK_BUILD_HELPER:-$(dirname "$(realpath "$0")")/build-helper}"

post_build_hook "$@"
