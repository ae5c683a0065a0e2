/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __LINUX_RKNPU_DEVFREQ_H
#define __LINUX_RKNPU_DEVFREQ_H

int rknpu_devfreq_sample(void);

#endif
