/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __LINUX_RKNPU_DEBUGGER_H
#define __LINUX_RKNPU_DEBUGGER_H

const char *rknpu_power_state(void);

#endif
