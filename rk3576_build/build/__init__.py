"""Building: the Docker edge, build.sh, host checks, rootfs overlays and the shared build cache."""
