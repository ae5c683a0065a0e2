/* SPDX-License-Identifier: GPL-2.0 */
/* Sample stand-in for Rockchip's IOMMU helper header. */
#ifndef __SOC_ROCKCHIP_IOMMU_H
#define __SOC_ROCKCHIP_IOMMU_H

struct device;

int rockchip_iommu_enable(struct device *dev);
int rockchip_iommu_disable(struct device *dev);
bool rockchip_iommu_is_enabled(struct device *dev);

#endif /* __SOC_ROCKCHIP_IOMMU_H */
