// SPDX-License-Identifier: GPL-2.0
/* Sample stand-in for Rockchip's rknpu_job.c: the real logic is not needed by the demo. */
#include "rknpu_job.h"

int rknpu_job_sample(void)
{
	return 0;
}
