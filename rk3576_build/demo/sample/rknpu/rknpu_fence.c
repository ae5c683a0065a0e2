// SPDX-License-Identifier: GPL-2.0
/* Sample stand-in for Rockchip's rknpu_fence.c: the real logic is not needed by the demo. */
#include "rknpu_fence.h"

int rknpu_fence_sample(void)
{
	return 0;
}
