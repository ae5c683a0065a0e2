/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __LINUX_RKNPU_MM_H
#define __LINUX_RKNPU_MM_H

int rknpu_mm_sample(void);

#endif
