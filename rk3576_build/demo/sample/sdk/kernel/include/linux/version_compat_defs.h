/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Sample stand-in for Rockchip's version compatibility header: like the 6.1
 * vendor trees it provides the vm_flags helpers that newer RKNPU drivers use.
 */
#ifndef _LINUX_VERSION_COMPAT_DEFS_H
#define _LINUX_VERSION_COMPAT_DEFS_H

#include <linux/version.h>
#include <linux/mm_types.h>

#if KERNEL_VERSION(6, 3, 0) > LINUX_VERSION_CODE
static inline void vm_flags_set(struct vm_area_struct *vma, vm_flags_t flags)
{
	vma->vm_flags |= flags;
}

static inline void vm_flags_clear(struct vm_area_struct *vma, vm_flags_t flags)
{
	vma->vm_flags &= ~flags;
}
#endif

#endif /* _LINUX_VERSION_COMPAT_DEFS_H */
