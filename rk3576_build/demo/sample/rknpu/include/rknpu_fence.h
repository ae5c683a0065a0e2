/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __LINUX_RKNPU_FENCE_H
#define __LINUX_RKNPU_FENCE_H

int rknpu_fence_sample(void);

#endif
