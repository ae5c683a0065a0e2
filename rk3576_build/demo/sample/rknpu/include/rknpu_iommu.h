/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __LINUX_RKNPU_IOMMU_H
#define __LINUX_RKNPU_IOMMU_H

int rknpu_iommu_sample(void);

#endif
