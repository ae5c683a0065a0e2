/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __LINUX_RKNPU_RESET_H
#define __LINUX_RKNPU_RESET_H

int rknpu_reset_sample(void);

#endif
