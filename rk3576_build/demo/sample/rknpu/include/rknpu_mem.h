/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __LINUX_RKNPU_MEM_H
#define __LINUX_RKNPU_MEM_H

int rknpu_mem_sample(void);

#endif
