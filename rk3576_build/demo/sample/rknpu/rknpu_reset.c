// SPDX-License-Identifier: GPL-2.0
/* Sample stand-in for Rockchip's rknpu_reset.c: the real logic is not needed by the demo. */
#include "rknpu_reset.h"

int rknpu_reset_sample(void)
{
	return 0;
}
