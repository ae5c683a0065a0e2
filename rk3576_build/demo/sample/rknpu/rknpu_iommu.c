// SPDX-License-Identifier: GPL-2.0
/* Sample stand-in for Rockchip's rknpu_iommu.c: the real logic is not needed by the demo. */
#include "rknpu_iommu.h"

int rknpu_iommu_sample(void)
{
	return 0;
}
