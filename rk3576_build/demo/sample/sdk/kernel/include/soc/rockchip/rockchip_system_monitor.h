/* SPDX-License-Identifier: GPL-2.0 */
/* Sample stand-in for Rockchip's system monitor header (newer spelling of MONITOR_TYPE_DEV). */
#ifndef __SOC_ROCKCHIP_SYSTEM_MONITOR_H
#define __SOC_ROCKCHIP_SYSTEM_MONITOR_H

enum monitor_dev_type {
	MONITOR_TYPE_CPU = 0,
	MONITOR_TYPE_DEV,
};

struct monitor_dev_profile {
	enum monitor_dev_type type;
};

#endif /* __SOC_ROCKCHIP_SYSTEM_MONITOR_H */
