// SPDX-License-Identifier: GPL-2.0
/* Sample stand-in for Rockchip's rknpu_mem.c: the real logic is not needed by the demo. */
#include "rknpu_mem.h"

int rknpu_mem_sample(void)
{
	return 0;
}
