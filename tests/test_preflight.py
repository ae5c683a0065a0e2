"""preflight: a fake Rockchip kernel and the sample driver, with each known mismatch planted."""

from __future__ import annotations

from pathlib import Path

import pytest

from rk3576_build.core.errors import UserError
from rk3576_build.demo.sample_driver import write_driver_tree
from rk3576_build.demo.sample_sdk import write_sample_sdk
from rk3576_build.kernel import preflight as pf

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
    assert ids(findings) == [c.id for c in pf.SOURCE_CHECKS]
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


def test_enforce_accepts_listed_ids(tmp_path, caplog):
    tree = make_tree(tmp_path, kernel={
        "include/soc/rockchip/rockchip_system_monitor.h": OLD_MONITOR,
        "include/soc/rockchip/rockchip_opp_select.h": "\n"})
    findings = pf.preflight(tree)
    assert ids(findings) == ["opp-set-low-length", "monitor-type-dev"]
    with pytest.raises(UserError) as error:
        pf.enforce(findings, accepted=["monitor-type-dev"])
    message = str(error.value)
    assert "opp-set-low-length" in message and "[monitor-type-dev]" not in message
    assert any(r.levelname == "WARNING" and "accepted by the recipe" in r.getMessage() for r in caplog.records)
    caplog.clear()
    pf.enforce(findings, accepted=["monitor-type-dev", "opp-set-low-length"])
    err = caplog.text
    assert "monitor-type-dev" in err and "opp-set-low-length" in err
    with pytest.raises(UserError, match="unknown check id.*opp-set-low"):
        pf.enforce(findings, accepted=["opp-set-low"])


def test_missing_driver_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no driver at .*overlay the driver first"):
        pf.preflight(tmp_path)


def test_vendor_headers_the_driver_includes(tmp_path):
    """The real driver includes Rockchip-only headers; a tree without them is the wrong kernel."""
    iommu = ("#include <linux/iommu.h>\n#include <soc/rockchip/rockchip_iommu.h>\n"
             "#include <../drivers/devfreq/governor.h>\n")
    tree = make_tree(tmp_path, driver={"rknpu_iommu.c": iommu})
    findings = pf.preflight(tree)
    assert ids(findings) == ["vendor-headers"]
    assert findings[0].evidence == (
        "drivers/rknpu/rknpu_iommu.c:2 includes soc/rockchip/rockchip_iommu.h; no such file: "
        "include/soc/rockchip/rockchip_iommu.h; drivers/rknpu/rknpu_iommu.c:3 includes "
        "../drivers/devfreq/governor.h; no such file: drivers/devfreq/governor.h")
    for rel in ("include/soc/rockchip/rockchip_iommu.h", "drivers/devfreq/governor.h"):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text("/* vendor */\n")
    assert pf.preflight(tree) == []


# --- the kernel config build.sh would use ------------------------------------------------

DRIVER_KCONFIG = """\
menuconfig ROCKCHIP_RKNPU
\ttristate "ROCKCHIP_RKNPU"
if ROCKCHIP_RKNPU
config ROCKCHIP_RKNPU_DEBUG_FS
\tbool "RKNPU debugfs"
\tdepends on DEBUG_FS
\tdefault y
config ROCKCHIP_RKNPU_PROC_FS
\tbool "RKNPU procfs"
endif
"""
BOARD = "rockchip_rk3576_myd_lr3576_defconfig"
SDK_DEFCONFIG = 'RK_KERNEL_CFG="rockchip_linux_defconfig"\nRK_KERNEL_CFG_FRAGMENTS="rk3576_myd.config"\n'
KERNEL_DEFCONFIG = ("CONFIG_ARCH_ROCKCHIP=y\nCONFIG_DEBUG_FS=y\nCONFIG_ROCKCHIP_IOMMU=y\n"
                    "CONFIG_ROCKCHIP_RKNPU=y\n")
FRAGMENT = 'CONFIG_LOCALVERSION="-myd"\n# CONFIG_ROCKCHIP_RKNPU_PROC_FS is not set\n'
CONFIGS = "kernel/arch/arm64/configs"


def make_sdk(root: Path, sdk_defconfig: str | None = SDK_DEFCONFIG, kernel_defconfig: str | None = KERNEL_DEFCONFIG,
             fragment: str | None = FRAGMENT) -> Path:
    """An SDK laid out like Rockchip's: .chips/rk3576 defconfigs, kernel configs, the driver's Kconfig."""
    make_tree(root / "kernel")
    (root / "kernel/drivers/rknpu/Kconfig").write_text(DRIVER_KCONFIG)
    chip = root / "device/rockchip/.chips/rk3576"
    chip.mkdir(parents=True)
    (root / "device/rockchip/.chip").symlink_to(".chips/rk3576")
    (chip / "rockchip_defconfig").write_text("rockchip_rk3576_evb1_v10_defconfig")  # a link stored as text
    (chip / "rockchip_rk3576_evb1_v10_defconfig").write_text('RK_KERNEL_DTS_NAME="rk3576-evb1-v10-linux"\n')
    for rel, text in {f"{chip.relative_to(root)}/{BOARD}": sdk_defconfig,
                      f"{CONFIGS}/rockchip_linux_defconfig": kernel_defconfig,
                      f"{CONFIGS}/rk3576_myd.config": fragment}.items():
        if text is not None:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
    return root


def config_findings(sdk: Path, defconfig: str | None = BOARD):
    return [f for f in pf.preflight(sdk / "kernel", sdk_dir=sdk, defconfig=defconfig)
            if f.check in pf.CONFIG_CHECKS]


def test_good_kernel_config_passes_in_every_spelling(tmp_path):
    sdk = make_sdk(tmp_path)
    assert pf.preflight(sdk / "kernel", sdk_dir=sdk, defconfig=BOARD) == []
    assert config_findings(sdk, f"rk3576:{BOARD}") == []
    assert config_findings(sdk, "lunch:rockchip_rk3576_myd_lr3576") == []
    (sdk / "output").mkdir()
    (sdk / "output/defconfig").symlink_to(f"../device/rockchip/.chips/rk3576/{BOARD}")
    assert config_findings(sdk, None) == []
    # Without the SDK, preflight is the source checks alone (the existing API).
    assert pf.preflight(sdk / "kernel") == []
    # The files read (for a task's file dependencies), in kbuild's order.
    source = pf.kernel_config_files(sdk / "kernel", sdk, BOARD)
    assert source.sdk_defconfig == (sdk / "device/rockchip/.chips/rk3576" / BOARD).resolve()
    assert source.files == (sdk / CONFIGS / "rockchip_linux_defconfig", sdk / CONFIGS / "rk3576_myd.config")
    assert source.problem == ""


def test_rknpu_unset_is_a_finding(tmp_path):
    """obj-$(CONFIG_ROCKCHIP_RKNPU) += rknpu.o: unset, kbuild builds nothing and succeeds."""
    sdk = make_sdk(tmp_path, kernel_defconfig=KERNEL_DEFCONFIG.replace("CONFIG_ROCKCHIP_RKNPU=y\n", ""))
    findings = config_findings(sdk)
    assert ids(findings) == ["rknpu-not-enabled"]  # the debugfs/iommu checks only matter with the driver on
    assert findings[0].evidence == (
        "CONFIG_ROCKCHIP_RKNPU is not set in arch/arm64/configs/rockchip_linux_defconfig + "
        "arch/arm64/configs/rk3576_myd.config (the kernel config of "
        f"device/rockchip/.chips/rk3576/{BOARD})")
    with pytest.raises(UserError) as error:
        pf.enforce(findings, accepted=[])
    message = str(error.value)
    assert "[rknpu-not-enabled]" in message and "compiles nothing" in message
    assert "CONFIG_ROCKCHIP_RKNPU=y" in message and "accept: [rknpu-not-enabled]" in message
    # A fragment that switches it off wins over the base defconfig.
    sdk = make_sdk(tmp_path / "frag", fragment=FRAGMENT + "# CONFIG_ROCKCHIP_RKNPU is not set\n")
    findings = config_findings(sdk)
    assert ids(findings) == ["rknpu-not-enabled"] and "CONFIG_ROCKCHIP_RKNPU=n in" in findings[0].evidence
    # A module is built too.
    sdk = make_sdk(tmp_path / "mod", fragment=FRAGMENT + "CONFIG_ROCKCHIP_RKNPU=m\n")
    assert config_findings(sdk) == []


def test_debugfs_off_is_a_finding(tmp_path):
    sdk = make_sdk(tmp_path, kernel_defconfig=KERNEL_DEFCONFIG.replace("CONFIG_DEBUG_FS=y\n", ""))
    findings = config_findings(sdk)
    assert ids(findings) == ["rknpu-debugfs-off"]
    assert findings[0].evidence.startswith("CONFIG_DEBUG_FS is not set; CONFIG_ROCKCHIP_RKNPU_PROC_FS=n in")
    assert "/sys/kernel/debug/rknpu/version" in findings[0].check.error
    # verify also reads /proc/rknpu/version: the procfs copies are enough.
    (sdk / CONFIGS / "rk3576_myd.config").write_text("CONFIG_ROCKCHIP_RKNPU_PROC_FS=y\n")
    assert config_findings(sdk) == []
    # CONFIG_ROCKCHIP_RKNPU_DEBUG_FS defaults to y (the driver's Kconfig); switched off it is reported.
    sdk = make_sdk(tmp_path / "off", fragment=FRAGMENT + "# CONFIG_ROCKCHIP_RKNPU_DEBUG_FS is not set\n")
    findings = config_findings(sdk)
    assert ids(findings) == ["rknpu-debugfs-off"]
    assert findings[0].evidence.startswith("CONFIG_ROCKCHIP_RKNPU_DEBUG_FS=n; CONFIG_ROCKCHIP_RKNPU_PROC_FS=n in")
    (sdk / "kernel/drivers/rknpu/Kconfig").write_text(DRIVER_KCONFIG.replace("\tdefault y\n", "\tdefault n\n"))
    (sdk / CONFIGS / "rk3576_myd.config").write_text(FRAGMENT)
    findings = config_findings(sdk)
    assert findings[0].evidence.startswith("CONFIG_ROCKCHIP_RKNPU_DEBUG_FS=n (its Kconfig default); ")


def test_iommu_not_builtin_is_a_finding(tmp_path):
    sdk = make_sdk(tmp_path, fragment=FRAGMENT + "CONFIG_ROCKCHIP_IOMMU=m\nCONFIG_ROCKCHIP_RKNPU=m\n")
    findings = config_findings(sdk)
    assert ids(findings) == ["rockchip-iommu-not-builtin"]
    assert findings[0].evidence.startswith("CONFIG_ROCKCHIP_IOMMU=m in")
    assert 'iommu_get_dma_cookie' in findings[0].check.error
    pf.enforce(findings, accepted=["rockchip-iommu-not-builtin"])


def test_missing_configs_are_a_clear_finding(tmp_path):
    sdk = make_sdk(tmp_path)
    [finding] = config_findings(sdk, "rockchip_rk3576_nosuch_defconfig")
    assert finding.check.id == "kernel-config-not-found"
    assert ("no SDK defconfig for 'rockchip_rk3576_nosuch_defconfig'; searched "
            "device/rockchip/.chip/rockchip_rk3576_nosuch_defconfig, "
            "device/rockchip/.chips/rk3576/rockchip_rk3576_nosuch_defconfig") in finding.evidence
    [finding] = config_findings(sdk, None)  # fresh tree: nothing selected yet
    assert "the selected defconfig (output/defconfig); searched output/defconfig" in finding.evidence
    # RK_KERNEL_CFG unset: the framework's default, which this kernel lacks.
    sdk = make_sdk(tmp_path / "default", sdk_defconfig='RK_KERNEL_DTS_NAME="x"\n', kernel_defconfig=None)
    [finding] = config_findings(sdk)
    assert finding.evidence == (
        f"device/rockchip/.chips/rk3576/{BOARD} names kernel config(s) not in {sdk / 'kernel'}: "
        "arch/arm64/configs/rockchip_linux_defconfig (RK_KERNEL_CFG unset: the default "
        "rockchip_linux_defconfig)")
    sdk = make_sdk(tmp_path / "fragment", fragment=None)
    [finding] = config_findings(sdk)
    assert "arch/arm64/configs/rk3576_myd.config or kernel/configs/rk3576_myd.config" in finding.evidence
    with pytest.raises(UserError, match="kernel-config-not-found"):
        pf.enforce([finding], accepted=[])


def test_defconfig_stored_as_a_name_is_followed(tmp_path):
    """rockchip_defconfig is a link to a board defconfig; in some trees a file holding its name."""
    sdk = make_sdk(tmp_path)
    path, _ = pf.find_sdk_defconfig(sdk, "rockchip_defconfig")
    assert path == sdk / "device/rockchip/.chips/rk3576/rockchip_rk3576_evb1_v10_defconfig"
    assert ids(config_findings(sdk, "rockchip_defconfig")) == []  # RK_KERNEL_CFG defaults; configs exist
    assert pf.read_kconfig(sdk / CONFIGS / "rk3576_myd.config") == {
        "CONFIG_LOCALVERSION": "-myd", "CONFIG_ROCKCHIP_RKNPU_PROC_FS": "n"}


def test_config_ids_are_known_to_enforce():
    assert {"rknpu-not-enabled", "rknpu-debugfs-off", "rockchip-iommu-not-builtin",
            "kernel-config-not-found", "vendor-headers"} <= {c.id for c in pf.CHECKS}
    assert len({c.id for c in pf.CHECKS}) == len(pf.CHECKS)


def test_sample_sdk_kernel_config(tmp_path):
    """The sample SDK enables the driver as Rockchip's defconfig does; without it, preflight says so."""
    for flavor in ("myir", "upstream"):
        sdk = write_sample_sdk(tmp_path / flavor, driver_version="0.9.8", flavor=flavor)
        assert pf.preflight(sdk / "kernel", sdk_dir=sdk, defconfig=BOARD) == []
        assert pf.preflight(sdk / "kernel", sdk_dir=sdk, defconfig=f"rk3576:{BOARD}") == []
    sdk = write_sample_sdk(tmp_path / "off", driver_version="0.9.8", rknpu_config=False, fresh=True)
    findings = pf.preflight(sdk / "kernel", sdk_dir=sdk, defconfig=f"rk3576:{BOARD}")
    assert ids(findings) == ["rknpu-not-enabled"]
    assert findings[0].evidence.startswith("CONFIG_ROCKCHIP_RKNPU=n in arch/arm64/configs/rockchip_linux_defconfig")
