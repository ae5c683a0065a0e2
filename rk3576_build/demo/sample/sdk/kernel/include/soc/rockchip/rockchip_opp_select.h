/* SPDX-License-Identifier: GPL-2.0 */
/* Sample stand-in for Rockchip's OPP selection header (rkr4 SDK kernel level). */
#ifndef __SOC_ROCKCHIP_OPP_SELECT_H
#define __SOC_ROCKCHIP_OPP_SELECT_H

struct device;
struct device_node;
struct rockchip_opp_info;

int rockchip_opp_set_low_length(struct device *dev, struct device_node *np,
				struct rockchip_opp_info *opp_info);
int rockchip_init_opp_table(struct device *dev, struct rockchip_opp_info *info,
			    char *clk_name, char *reg_name);

#endif /* __SOC_ROCKCHIP_OPP_SELECT_H */
