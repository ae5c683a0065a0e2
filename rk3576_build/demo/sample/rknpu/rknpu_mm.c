// SPDX-License-Identifier: GPL-2.0
/* Sample stand-in for Rockchip's rknpu_mm.c: the real logic is not needed by the demo. */
#include "rknpu_mm.h"

int rknpu_mm_sample(void)
{
	return 0;
}
