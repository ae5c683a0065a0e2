// SPDX-License-Identifier: GPL-2.0
/* Sample stand-in for Rockchip's rknpu_gem.c: the real logic is not needed by the demo. */
#include "rknpu_gem.h"

int rknpu_gem_sample(void)
{
	return 0;
}
