/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __LINUX_RKNPU_JOB_H
#define __LINUX_RKNPU_JOB_H

int rknpu_job_sample(void);

#endif
