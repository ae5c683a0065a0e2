/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __LINUX_RKNPU_GEM_H
#define __LINUX_RKNPU_GEM_H

int rknpu_gem_sample(void);

#endif
