// SPDX-License-Identifier: GPL-2.0
/* Sample stand-in for Rockchip's rknpu_devfreq.c: the real logic is not needed by the demo. */
#include "rknpu_devfreq.h"

int rknpu_devfreq_sample(void)
{
	return 0;
}
