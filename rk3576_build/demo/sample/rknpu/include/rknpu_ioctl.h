/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __LINUX_RKNPU_IOCTL_H
#define __LINUX_RKNPU_IOCTL_H

#define RKNPU_IOCTL_SAMPLE 0

#endif
