// SPDX-License-Identifier: GPL-2.0
/*
 * Sample RKNPU driver for the rk3576-build demo. Like Rockchip's driver it
 * reports its version in debugfs rknpu/version as "%s: v%d.%d.%d\n" (only with
 * CONFIG_ROCKCHIP_RKNPU_DEBUG_FS) and logs
 * the DRM core's "Initialized" line; there is no NPU behind it.
 */
#include <linux/module.h>
#include <linux/debugfs.h>
#include <linux/seq_file.h>

#include "rknpu_drv.h"
#include "rknpu_debugger.h"

#ifdef CONFIG_ROCKCHIP_RKNPU_DEBUG_FS
static struct dentry *rknpu_debugfs_root;

static int rknpu_version_show(struct seq_file *m, void *data)
{
	seq_printf(m, "%s: v%d.%d.%d\n", DRIVER_DESC, DRIVER_MAJOR, DRIVER_MINOR,
		   DRIVER_PATCHLEVEL);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(rknpu_version);

static int rknpu_load_show(struct seq_file *m, void *data)
{
	seq_puts(m, "NPU load:  Core0:  0%, Core1:  0%,\n");
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(rknpu_load);

static int rknpu_power_show(struct seq_file *m, void *data)
{
	seq_puts(m, rknpu_power_state());
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(rknpu_power);

static void rknpu_debugfs_init(void)
{
	rknpu_debugfs_root = debugfs_create_dir(DRIVER_NAME, NULL);
	debugfs_create_file("version", 0444, rknpu_debugfs_root, NULL, &rknpu_version_fops);
	debugfs_create_file("load", 0444, rknpu_debugfs_root, NULL, &rknpu_load_fops);
	debugfs_create_file("power", 0444, rknpu_debugfs_root, NULL, &rknpu_power_fops);
}

static void rknpu_debugfs_remove(void)
{
	debugfs_remove_recursive(rknpu_debugfs_root);
}
#else
static void rknpu_debugfs_init(void) {}
static void rknpu_debugfs_remove(void) {}
#endif

static int __init rknpu_init(void)
{
	rknpu_debugfs_init();
	pr_info("[drm] Initialized %s %d.%d.%d %s for 27700000.npu on minor 1\n", DRIVER_NAME,
		DRIVER_MAJOR, DRIVER_MINOR, DRIVER_PATCHLEVEL, DRIVER_DATE);
	return 0;
}

static void __exit rknpu_exit(void)
{
	rknpu_debugfs_remove();
}

module_init(rknpu_init);
module_exit(rknpu_exit);
MODULE_DESCRIPTION(DRIVER_DESC);
MODULE_LICENSE("GPL v2");
