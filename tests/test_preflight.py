"""preflight: a fake Rockchip kernel and the sample driver, with each known mismatch planted."""

from __future__ import annotations

from pathlib import Path

import pytest

from rk3576_build import preflight as pf
from rk3576_build.errors import UserError
from rk3576_build.demo.sample_driver import write_driver_tree

# What the real 0.9.8 driver needs from the kernel, in the shape Rockchip writes it.
DEVFREQ = """\
// SPDX-License-Identifier: GPL-2.0
#include <soc/rockchip/rockchip_opp_select.h>
#include <soc/rockchip/rockchip_system_monitor.h>

static struct monitor_dev_profile npu_mdevp = {
	.type = MONITOR_TYPE_DEV,
};

static const struct rockchip_opp_data rk3576_npu_opp_data = {
	.set_soc_info = rockchip_opp_set_low_length,
};
"""
GEM = """\
// SPDX-License-Identifier: GPL-2.0
#include <linux/version_compat_defs.h>

static void rknpu_gem_set_vm_flags(struct vm_area_struct *vma)
{
	vm_flags_clear(vma, VM_PFNMAP);
	vm_flags_set(vma, VM_IO | VM_DONTCOPY);
}
"""
# A Rockchip 6.1 kernel that has everything the driver needs.
GOOD_KERNEL = {
    "Makefile": "VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 75\nEXTRAVERSION =\n",
    "include/soc/rockchip/rockchip_opp_select.h":
        "int rockchip_opp_set_low_length(struct device *dev, struct device_node *np,\n"
        "\t\t\t\tstruct rockchip_opp_info *opp_info);\n",
    "include/soc/rockchip/rockchip_system_monitor.h":
        "enum monitor_dev_type {\n\tMONITOR_TYPE_CPU = 0,\n\tMONITOR_TYPE_DEV,\n};\n",
    "include/linux/mm.h": "#ifndef _LINUX_MM_H\n#define _LINUX_MM_H\nstruct vm_area_struct;\n#endif\n",
    "include/linux/version_compat_defs.h":
        "#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 3, 0)\n"
        "static inline void vm_flags_set(struct vm_area_struct *vma, vm_flags_t flags)\n"
        "{\n\tvma->vm_flags |= flags;\n}\n\n"
        "static inline void vm_flags_clear(struct vm_area_struct *vma, vm_flags_t flags)\n"
        "{\n\tvma->vm_flags &= ~flags;\n}\n#endif\n",
}


def make_tree(root: Path, kernel: dict[str, str | None] | None = None,
              driver: dict[str, str] | None = None) -> Path:
    """GOOD_KERNEL with `kernel` changes (None deletes a file), and the 0.9.8 sample driver."""
    for rel, text in {**GOOD_KERNEL, **(kernel or {})}.items():
        if text is not None:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
    extra = {"rknpu_devfreq.c": DEVFREQ, "rknpu_gem.c": GEM, **(driver or {})}
    write_driver_tree(root / "drivers/rknpu", "0.9.8",
                      extra={rel: text.encode() for rel, text in extra.items()})
    return root


def ids(findings) -> list[str]:
    return [f.check.id for f in findings]


def test_clean_tree_passes(tmp_path):
    assert pf.preflight(make_tree(tmp_path)) == []
    pf.enforce([], accepted=[])
    assert "no known incompatibility" in pf.format_findings([])


def test_sample_driver_on_bare_kernel_passes(tmp_path):
    """The sample driver uses none of the vendor-only features: nothing to report."""
    write_driver_tree(tmp_path / "drivers/rknpu", "0.9.8")
    assert pf.preflight(tmp_path) == []


OLD_MONITOR = "enum monitor_dev_type {\n\tMONITOR_TPYE_CPU = 0,\n\tMONITOR_TPYE_DEV,\n};\n"
PLANTED = {
    "opp-set-low-length": (
        {"include/soc/rockchip/rockchip_opp_select.h": "/* rockchip_opp_set_low_length: later */\n"},
        "drivers/rknpu/rknpu_devfreq.c:10 uses rockchip_opp_set_low_length; no declaration in "
        "include/soc/rockchip/*.h, drivers/soc/rockchip/*.h"),
    "vm-flags-helpers": (
        {"include/linux/version_compat_defs.h": "#define RK_COMPAT 1\n"},
        "drivers/rknpu/rknpu_gem.c:6 uses vm_flags_clear; no definition in include/linux/mm.h, "
        "include/linux/version_compat_defs.h; drivers/rknpu/rknpu_gem.c:7 uses vm_flags_set"),
    "monitor-type-dev": (
        {"include/soc/rockchip/rockchip_system_monitor.h": OLD_MONITOR},
        "drivers/rknpu/rknpu_devfreq.c:6 uses MONITOR_TYPE_DEV; not defined in "
        "include/soc/rockchip/*.h (found instead: "
        "include/soc/rockchip/rockchip_system_monitor.h:3 MONITOR_TPYE_DEV)"),
    "version-compat-defs": (
        {"include/linux/version_compat_defs.h": None,
         "include/linux/mm.h": GOOD_KERNEL["include/linux/version_compat_defs.h"]},
        "drivers/rknpu/rknpu_gem.c:2 includes linux/version_compat_defs.h; no such file: "
        "include/linux/version_compat_defs.h"),
}


@pytest.mark.parametrize("check_id", sorted(PLANTED))
def test_each_planted_incompatibility_is_reported(tmp_path, check_id):
    kernel_change, evidence = PLANTED[check_id]
    findings = pf.preflight(make_tree(tmp_path, kernel=kernel_change))
    assert ids(findings) == [check_id]
    assert findings[0].evidence.startswith(evidence)
    check = next(c for c in pf.CHECKS if c.id == check_id)
    text = pf.format_findings(findings)
    assert check.error in text and check.fix in text and evidence in text
    with pytest.raises(UserError) as error:
        pf.enforce(findings, accepted=[])
    message = str(error.value)
    assert check_id in message and check.error in message and check.fix in message
    assert f"accept: [{check_id}]" in message


def test_errors_and_fixes_match_domain_facts():
    by_id = {c.id: c for c in pf.CHECKS}
    assert by_id["opp-set-low-length"].error == \
        "rknpu_devfreq.c:237: error: 'rockchip_opp_set_low_length' undeclared"
    assert "vm_flags_set" in by_id["vm-flags-helpers"].error
    assert "include/linux/mm.h" in by_id["vm-flags-helpers"].fix
    assert "MONITOR_TPYE_DEV" in by_id["monitor-type-dev"].fix
    assert by_id["version-compat-defs"].error == \
        "fatal error: linux/version_compat_defs.h: No such file"
    assert len(by_id) == len(pf.CHECKS)


def test_everything_missing_on_a_non_vendor_kernel(tmp_path):
    tree = make_tree(tmp_path, kernel={rel: None for rel in GOOD_KERNEL if rel != "Makefile"})
    findings = pf.preflight(tree)
    assert ids(findings) == [c.id for c in pf.CHECKS]
    assert "(none of these exist)" in findings[0].evidence


def test_commented_out_or_disabled_use_is_not_reported(tmp_path):
    """The known fix comments the line out; a patch may also use #if 0."""
    devfreq = DEVFREQ.replace("\t.set_soc_info = rockchip_opp_set_low_length,",
                              "\t// .set_soc_info = rockchip_opp_set_low_length,")
    devfreq = devfreq.replace("\t.type = MONITOR_TYPE_DEV,",
                              "#if 0\n\t.type = MONITOR_TYPE_DEV,\n#else\n\t.type = 1,\n#endif")
    tree = make_tree(tmp_path, kernel={
        "include/soc/rockchip/rockchip_opp_select.h": "\n",
        "include/soc/rockchip/rockchip_system_monitor.h": OLD_MONITOR},
        driver={"rknpu_devfreq.c": devfreq})
    assert pf.preflight(tree) == []
    # ... but code after the #else branch still counts.
    (tree / "drivers/rknpu/rknpu_devfreq.c").write_text(devfreq.replace(
        "\t.type = 1,", "\t.type = MONITOR_TYPE_DEV,"))
    assert ids(pf.preflight(tree)) == ["monitor-type-dev"]


def test_enforce_accepts_listed_ids(tmp_path, capsys):
    tree = make_tree(tmp_path, kernel={
        "include/soc/rockchip/rockchip_system_monitor.h": OLD_MONITOR,
        "include/soc/rockchip/rockchip_opp_select.h": "\n"})
    findings = pf.preflight(tree)
    assert ids(findings) == ["opp-set-low-length", "monitor-type-dev"]
    with pytest.raises(UserError) as error:
        pf.enforce(findings, accepted=["monitor-type-dev"])
    message = str(error.value)
    assert "opp-set-low-length" in message and "[monitor-type-dev]" not in message
    assert "accepted by the recipe" in capsys.readouterr().err
    pf.enforce(findings, accepted=["monitor-type-dev", "opp-set-low-length"])
    err = capsys.readouterr().err
    assert "monitor-type-dev" in err and "opp-set-low-length" in err
    with pytest.raises(UserError, match="unknown check id.*opp-set-low"):
        pf.enforce(findings, accepted=["opp-set-low"])


def test_missing_driver_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no driver at .*overlay the driver first"):
        pf.preflight(tmp_path)
