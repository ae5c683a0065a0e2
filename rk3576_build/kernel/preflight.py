"""Preflight: spot known driver/kernel mismatches before a long build fails on them.

Each source check is data (what the driver uses, where the kernel would provide
it); it reads the driver's few files and a handful of named kernel headers, never
the tree. Given the SDK and its lunch defconfig, the config checks read the kernel
defconfig that build.sh would use (`RK_KERNEL_CFG` plus `RK_KERNEL_CFG_FRAGMENTS`)
and report options that would build nothing, or a driver verify cannot read.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from rk3576_build.config.rules import refuse_unknown_ids
from rk3576_build.core.errors import UserError

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    """A known build failure and how to see it coming.

    `uses` is a regex over the driver's *.c/*.h (comments and `#if 0` blocks
    ignored); its group "name" (or the whole match) is what the driver needs.
    `provided_in` are kernel-relative glob patterns (one directory each, `{name}`
    substituted) where the kernel would provide it: some file there must match
    `provides` (a regex with `{name}`), or merely exist if `provides` is None.
    A hit of `near_miss` there is shown as evidence (e.g. an old misspelling).
    """

    id: str
    title: str
    error: str
    fix: str
    uses: str
    provided_in: tuple[str, ...]
    provides: str | None = r"\b{name}\b"
    near_miss: str | None = None
    verb: str = "uses"
    absent: str = "no declaration in"


# From domain.md, "Known build failures after overlaying 0.9.8" and "The real
# RKNPU driver's build switches". The modpost failure (CONFIG_ROCKCHIP_IOMMU not
# y) is a config check below: it needs the kernel defconfig, not the sources.
SOURCE_CHECKS: tuple[Check, ...] = (
    Check(
        id="opp-set-low-length",
        title="the driver uses rockchip_opp_set_low_length, which this kernel does not declare",
        error="rknpu_devfreq.c:237: error: 'rockchip_opp_set_low_length' undeclared",
        fix="use a newer Rockchip vendor kernel (the rkr4 SDK's or later), or patch the driver "
            "to comment out `.set_soc_info = rockchip_opp_set_low_length,` (reported to work "
            "on RK3588, doubtful on RK3576)",
        uses=r"\brockchip_opp_set_low_length\b",
        provided_in=("include/soc/rockchip/*.h", "drivers/soc/rockchip/*.h"),
    ),
    Check(
        id="vm-flags-helpers",
        title="the driver calls vm_flags_set/vm_flags_clear, which this kernel does not define",
        error="implicit declaration of function 'vm_flags_set' / 'vm_flags_clear'",
        fix="add to include/linux/mm.h (Rockchip's manual), as a patch in the recipe's series: "
            "static inline void vm_flags_set(struct vm_area_struct *vma, vm_flags_t flags) "
            "{ vma->vm_flags |= flags; } and static inline void vm_flags_clear(struct "
            "vm_area_struct *vma, vm_flags_t flags) { vma->vm_flags &= ~flags; }",
        uses=r"\b(?P<name>vm_flags_(?:set|clear))\s*\(",
        provided_in=("include/linux/mm.h", "include/linux/version_compat_defs.h"),
        provides=r"(\bvoid\s+{name}\s*\(|#\s*define\s+{name}\b)",
        absent="no definition in",
    ),
    Check(
        id="monitor-type-dev",
        title="the driver uses MONITOR_TYPE_DEV, which this kernel's headers do not define",
        error="'MONITOR_TYPE_DEV' undeclared",
        fix="use a newer Rockchip vendor kernel, or patch the driver to the old spelling "
            "MONITOR_TPYE_DEV (a one-line rename)",
        uses=r"\bMONITOR_TYPE_DEV\b",
        provided_in=("include/soc/rockchip/*.h",),
        near_miss=r"\bMONITOR_TPYE_DEV\b",
        absent="not defined in",
    ),
    Check(
        id="version-compat-defs",
        title="the driver includes linux/version_compat_defs.h, which this kernel lacks",
        error="fatal error: linux/version_compat_defs.h: No such file",
        fix="this is not a Rockchip vendor kernel: point the recipe's sdk.kernel_dir at the "
            "vendor SDK's kernel tree",
        uses=r'^[ \t]*#[ \t]*include[ \t]*[<"](?P<name>linux/version_compat_defs\.h)[>"]',
        provided_in=("include/{name}",),
        provides=None,
        verb="includes",
        absent="no such file:",
    ),
    Check(
        id="vendor-headers",
        title="the driver includes Rockchip vendor headers this kernel tree lacks",
        error="fatal error: soc/rockchip/rockchip_iommu.h: No such file (or another vendor header)",
        fix="this is not Rockchip's vendor kernel (or not the SDK generation the driver needs): point "
            "the recipe's sdk.kernel_dir at the vendor SDK's kernel tree",
        uses=r'^[ \t]*#[ \t]*include[ \t]*[<"](?P<name>soc/rockchip/[\w.-]+\.h|\.\./drivers/devfreq/governor\.h)[>"]',
        provided_in=("include/{name}",),
        provides=None,
        verb="includes",
        absent="no such file:",
    ),
)


@dataclass(frozen=True)
class ConfigCheck:
    """A kernel config that builds without the driver, or without what verify reads.

    Fires when every `when` condition holds, some `requires` does not, and no
    `unless` holds (another way to the same end); each is (CONFIG_ symbol,
    acceptable values), a symbol absent from the defconfig and its fragments taking
    its `default` from the driver's Kconfig, else "n".
    """

    id: str
    title: str
    error: str
    fix: str
    requires: tuple[tuple[str, tuple[str, ...]], ...] = ()
    when: tuple[tuple[str, tuple[str, ...]], ...] = ()
    unless: tuple[tuple[str, tuple[str, ...]], ...] = ()


_RKNPU_ON = (("CONFIG_ROCKCHIP_RKNPU", ("y", "m")),)
_FIX_DEFCONFIG = ("in the kernel defconfig named by the SDK defconfig's RK_KERNEL_CFG (or one of its "
                  "RK_KERNEL_CFG_FRAGMENTS), as a patch in the recipe's patch series")

CONFIG_CHECKS: tuple[ConfigCheck, ...] = (
    ConfigCheck(
        id="kernel-config-not-found",
        title="preflight cannot find the kernel config build.sh would use",
        error="unknown: whether the driver is built at all cannot be told before the build",
        fix="fix lunch.defconfig in the recipe (the SDK defconfig's name, or chip:name), or the "
            "RK_KERNEL_CFG / RK_KERNEL_CFG_FRAGMENTS it names",
    ),
    ConfigCheck(
        id="rknpu-not-enabled",
        title="the kernel config does not enable the RKNPU driver",
        error="none: the driver's Makefile says obj-$(CONFIG_ROCKCHIP_RKNPU) += rknpu.o, so kbuild "
              "compiles nothing there and succeeds; the image keeps the old driver",
        fix=f"set CONFIG_ROCKCHIP_RKNPU=y {_FIX_DEFCONFIG}",
        requires=_RKNPU_ON,
    ),
    ConfigCheck(
        id="rknpu-debugfs-off",
        title="the kernel config leaves out the driver's debugfs files (and their /proc/rknpu copies)",
        error="no /sys/kernel/debug/rknpu/version (nor /proc/rknpu/version) on the board: verify "
              "cannot read the driver version",
        fix=f"set CONFIG_DEBUG_FS=y and keep CONFIG_ROCKCHIP_RKNPU_DEBUG_FS=y (its default once "
            f"DEBUG_FS is on), or set CONFIG_ROCKCHIP_RKNPU_PROC_FS=y, {_FIX_DEFCONFIG}",
        requires=(("CONFIG_DEBUG_FS", ("y",)), ("CONFIG_ROCKCHIP_RKNPU_DEBUG_FS", ("y",))),
        when=_RKNPU_ON,
        unless=(("CONFIG_ROCKCHIP_RKNPU_PROC_FS", ("y",)),),
    ),
    ConfigCheck(
        id="rockchip-iommu-not-builtin",
        title="the kernel config does not build the Rockchip IOMMU driver in",
        error='modpost: "iommu_get_dma_cookie" [drivers/rknpu/rknpu.ko] undefined!',
        fix=f"set CONFIG_ROCKCHIP_IOMMU=y {_FIX_DEFCONFIG}",
        requires=(("CONFIG_ROCKCHIP_IOMMU", ("y",)),),
        when=_RKNPU_ON,
    ),
)

CHECKS: tuple[Check | ConfigCheck, ...] = SOURCE_CHECKS + CONFIG_CHECKS
DEFAULT_KERNEL_CFG = "rockchip_linux_defconfig"  # the framework's default RK_KERNEL_CFG for RK35xx


@dataclass(frozen=True)
class Finding:
    """A check that fired, with where in the trees it was seen."""

    check: Check | ConfigCheck
    evidence: str


def preflight(kernel_dir: Path, driver_path: str = "drivers/rknpu", *, sdk_dir: Path | None = None,
              defconfig: str | None = None) -> list[Finding]:
    """Run every check in CHECKS against the overlaid driver at `kernel_dir/driver_path`.

    The config checks run when `sdk_dir` is given: `defconfig` is the lunch selection
    (`name_defconfig` or `chip:name_defconfig`; None: the SDK's `output/defconfig`).
    """
    kernel_dir = Path(kernel_dir)
    driver = kernel_dir / driver_path
    if not driver.is_dir():
        raise UserError(f"preflight: no driver at {driver}: overlay the driver first")
    sources = [(f"{driver_path}/{path.relative_to(driver).as_posix()}", _code_only(path))
               for path in sorted(driver.rglob("*")) if path.suffix in (".c", ".h")
               and path.is_file()]
    findings = []
    for check in SOURCE_CHECKS:
        evidence = _probe(check, kernel_dir, sources)
        if evidence:
            findings.append(Finding(check, evidence))
    if sdk_dir is not None:
        findings += _config_findings(kernel_dir, driver / "Kconfig", Path(sdk_dir), defconfig)
    return findings


# --- the kernel config build.sh would use ---------------------------------------------

_KCONFIG_SET = re.compile(r"^(?P<key>[A-Za-z0-9_]+)=(?P<value>.*)$")
_KCONFIG_UNSET = re.compile(r"^#\s*(?P<key>[A-Za-z0-9_]+) is not set\s*$")


def read_kconfig(path: Path) -> dict[str, str]:
    """KEY -> value of a defconfig / .config / fragment (`# KEY is not set` -> "n", quotes removed)."""
    values = {}
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        match = _KCONFIG_SET.match(line) or _KCONFIG_UNSET.match(line)
        if match:
            value = match.groupdict().get("value", "n")
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            values[match.group("key")] = value
    return values


def find_sdk_defconfig(sdk_dir: Path, defconfig: str | None) -> tuple[Path | None, list[str]]:
    """The SDK defconfig a lunch selection names, and the SDK-relative places searched."""
    rockchip = sdk_dir / "device/rockchip"
    if defconfig is None:
        candidates = [sdk_dir / "output/defconfig"]
    else:
        chip, _, name = defconfig.rpartition(":")
        chip = "" if chip == "lunch" else chip
        names = [name] if name.endswith("_defconfig") else [name, f"{name}_defconfig"]
        dirs = ([rockchip / ".chips" / chip, rockchip / chip] if chip else []) + [rockchip / ".chip"]
        if not chip:
            dirs += sorted(rockchip.glob(".chips/*")) + sorted(rockchip.glob("rk*"))
        candidates = [d / n for d in dirs for n in names]
    searched = [c.relative_to(sdk_dir).as_posix() for c in candidates]
    for path in candidates:
        if path.is_file():
            return _follow_name_file(path.resolve()), searched
    return None, searched


def _follow_name_file(path: Path) -> Path:
    """A defconfig whose whole text names another one (a link stored as text) -> that one."""
    text = path.read_text(errors="replace").strip()
    if text.endswith("_defconfig") and "\n" not in text and "=" not in text and "/" not in text:
        target = path.parent / text
        if target.is_file():
            return target
    return path


def _kconfig_defaults(kconfig: Path) -> dict[str, str]:
    """CONFIG_X -> unconditional `default` of each `config X` in one Kconfig file."""
    defaults: dict[str, str] = {}
    current = None
    if not kconfig.is_file():
        return defaults
    for line in kconfig.read_text(errors="replace").splitlines():
        words = line.split()
        if len(words) == 2 and words[0] in ("config", "menuconfig"):
            current = f"CONFIG_{words[1]}"
        elif current and len(words) == 2 and words[0] == "default" and words[1] in ("y", "m", "n"):
            defaults.setdefault(current, words[1])
    return defaults


@dataclass(frozen=True)
class KernelConfigFiles:
    """What build.sh would configure the kernel from: the SDK defconfig naming it, the kernel
    defconfig plus fragments in order (`files`), or `problem` saying what is missing."""

    sdk_defconfig: Path | None
    files: tuple[Path, ...]
    problem: str = ""


def kernel_config_files(kernel_dir: Path, sdk_dir: Path, defconfig: str | None) -> KernelConfigFiles:
    """Follow the lunch selection `defconfig` to `RK_KERNEL_CFG` and `RK_KERNEL_CFG_FRAGMENTS`."""
    kernel_dir, sdk_dir = Path(kernel_dir), Path(sdk_dir)
    sdk_cfg, searched = find_sdk_defconfig(sdk_dir, defconfig)
    if sdk_cfg is None:
        what = "the selected defconfig (output/defconfig)" if defconfig is None else repr(defconfig)
        return KernelConfigFiles(None, (), f"no SDK defconfig for {what}; searched "
                                           f"{', '.join(searched)} under {sdk_dir}")
    rk = read_kconfig(sdk_cfg)
    arch = rk.get("RK_KERNEL_ARCH") or "arm64"
    base = rk.get("RK_KERNEL_CFG") or DEFAULT_KERNEL_CFG
    files, missing = [], []
    for name in [base] + rk.get("RK_KERNEL_CFG_FRAGMENTS", "").split():
        # kbuild finds a fragment in arch/<arch>/configs or kernel/configs.
        places = [kernel_dir / f"arch/{arch}/configs" / name]
        if name != base:
            places.append(kernel_dir / "kernel/configs" / name)
        found = next((p for p in places if p.is_file()), None)
        if found:
            files.append(found)
        else:
            missing.append(" or ".join(_relative(p, kernel_dir) for p in places))
    problem = ""
    if missing:
        default = "" if "RK_KERNEL_CFG" in rk else f" (RK_KERNEL_CFG unset: the default {base})"
        problem = (f"{_relative(sdk_cfg, sdk_dir.resolve())} names kernel config(s) not in {kernel_dir}: "
                   f"{', '.join(missing)}{default}")
    return KernelConfigFiles(sdk_cfg, tuple(files), problem)


def _config_findings(kernel_dir: Path, driver_kconfig: Path, sdk_dir: Path,
                     defconfig: str | None) -> list[Finding]:
    source = kernel_config_files(kernel_dir, sdk_dir, defconfig)
    if source.problem or source.sdk_defconfig is None:  # no problem: the SDK defconfig was found
        not_found = next(check for check in CONFIG_CHECKS if check.id == "kernel-config-not-found")
        return [Finding(not_found, source.problem)]
    origin = _relative(source.sdk_defconfig, sdk_dir.resolve())
    files = source.files
    values = _kconfig_defaults(driver_kconfig)
    defaulted = set(values)
    for path in files:
        for key, value in read_kconfig(path).items():
            values[key] = value
            defaulted.discard(key)
    used = " + ".join(_relative(p, kernel_dir) for p in files)
    findings: list[Finding] = []

    def holds(key: str, ok: tuple[str, ...]) -> bool:
        return values.get(key, "n") in ok

    def shown(key: str) -> str:
        if key not in values:
            return f"{key} is not set"
        return f"{key}={values[key]}" + (" (its Kconfig default)" if key in defaulted else "")

    findings = []
    for check in CONFIG_CHECKS:
        if not check.requires or not all(holds(*cond) for cond in check.when) \
                or any(holds(*cond) for cond in check.unless):
            continue
        wrong = [shown(key) for key, ok in check.requires if not holds(key, ok)]
        if wrong:
            wrong += [shown(key) for key, _ in check.unless]
            findings.append(Finding(check, f"{'; '.join(wrong)} in {used} (the kernel config of {origin})"))
    return findings


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def enforce(findings: list[Finding], accepted: Collection[str]) -> None:
    """Warn about accepted findings; raise a UserError listing every other one."""
    accepted = {accepted} if isinstance(accepted, str) else set(accepted)
    refuse_unknown_ids("preflight.accept", accepted, {check.id for check in CHECKS}, kind="check id")
    for finding in findings:
        if finding.check.id in accepted:
            _log.warning(f"preflight finding accepted by the recipe, the build "
                         f"may fail:\n{format_findings([finding])}")
    blocking = [f for f in findings if f.check.id not in accepted]
    if blocking:
        ids = ", ".join(f.check.id for f in blocking)
        raise UserError(
            f"preflight: the kernel build would fail or leave out the driver "
            f"({len(blocking)} known problem(s)):\n\n"
            f"{format_findings(blocking)}\n\n"
            "Fix them (a patch in the recipe's patch series, another kernel tree or defconfig) and run "
            "again. If you know the build copes, accept them in the recipe:\n"
            f"  preflight:\n    accept: [{ids}]")


def format_findings(findings: Iterable[Finding]) -> str:
    """Human-readable text: id, title, the error it would cause, evidence and fix per finding."""
    blocks = [f"[{f.check.id}] {f.check.title}\n"
              f"  what happens: {f.check.error}\n"
              f"  evidence:     {f.evidence}\n"
              f"  known fix:    {f.check.fix}" for f in findings]
    return "\n\n".join(blocks) if blocks else "preflight: no known incompatibility found"


def _probe(check: Check, kernel_dir: Path, sources: list[tuple[str, str]]) -> str:
    """Evidence text if the driver uses what the kernel does not provide, else ''."""
    used: dict[str, str] = {}
    for rel, code in sources:
        for match in re.finditer(check.uses, code, re.MULTILINE):
            name = match.groupdict().get("name") or match.group(0)
            used.setdefault(name, f"{rel}:{code.count(chr(10), 0, match.start()) + 1}")
    problems = []
    for name, where in used.items():
        patterns = [posixpath.normpath(pattern.format(name=name)) for pattern in check.provided_in]
        files = [path for pattern in patterns for path in sorted(kernel_dir.glob(pattern))
                 if path.is_file()]
        if check.provides is None:
            if files:
                continue
            texts = {}
        else:
            texts = {path: _code_only(path) for path in files}
            wanted = check.provides.format(name=re.escape(name))
            if any(re.search(wanted, text, re.MULTILINE) for text in texts.values()):
                continue
        searched = ", ".join(patterns) + ("" if files or check.provides is None
                                          else " (none of these exist)")
        problem = f"{where} {check.verb} {name}; {check.absent} {searched}"
        if check.near_miss:
            hits = [f"{path.relative_to(kernel_dir).as_posix()}:"
                    f"{text.count(chr(10), 0, m.start()) + 1} {m.group(0)}"
                    for path, text in texts.items()
                    for m in [re.search(check.near_miss, text)] if m]
            if hits:
                problem += f" (found instead: {', '.join(hits)})"
        problems.append(problem)
    return "; ".join(problems)


_COMMENT_OR_STRING = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'',
                                re.DOTALL)
_CONDITIONAL = re.compile(r"^[ \t]*#[ \t]*(if|ifdef|ifndef|else|elif|endif)\b(.*)$")


def _code_only(path: Path) -> str:
    """C source with comments and `#if 0` blocks blanked; line numbers are kept."""
    text = path.read_text(errors="replace")
    text = _COMMENT_OR_STRING.sub(
        lambda m: m.group(0) if m.group(0)[0] in "\"'" else re.sub(r"[^\n]", " ", m.group(0)),
        text)
    # A disabled block (how a patch "comments out" code) does not reach the compiler.
    lines, depth = [], 0
    for line in text.split("\n"):
        match = _CONDITIONAL.match(line)
        if depth:
            if match and match.group(1).startswith("if"):
                depth += 1
            elif match and (match.group(1) == "endif" or
                            (depth == 1 and match.group(1) in ("else", "elif"))):
                depth -= 1  # at depth 1, #else/#elif ends the disabled part
            lines.append("")
        elif match and match.group(1) == "if" and match.group(2).strip() == "0":
            depth = 1
            lines.append("")
        else:
            lines.append(line)
    return "\n".join(lines)
