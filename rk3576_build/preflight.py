"""Preflight: spot known driver/kernel mismatches before a long build fails on them.

Each check is data (what the driver uses, where the kernel would provide it); it
reads the driver's few files and a handful of named kernel headers, never the tree.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError


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


# From domain.md, "Known build failures after overlaying 0.9.8". The modpost
# failure (rknpu as a module without CONFIG_ROCKCHIP_IOMMU=y) is not here: it
# depends on the .config the build generates, which does not exist beforehand.
CHECKS: tuple[Check, ...] = (
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
)


@dataclass(frozen=True)
class Finding:
    """A check that fired, with where in the trees it was seen."""

    check: Check
    evidence: str


def preflight(kernel_dir: Path, driver_path: str = "drivers/rknpu") -> list[Finding]:
    """Run every check in CHECKS against the overlaid driver at `kernel_dir/driver_path`."""
    kernel_dir = Path(kernel_dir)
    driver = kernel_dir / driver_path
    if not driver.is_dir():
        raise UserError(f"preflight: no driver at {driver}: overlay the driver first")
    sources = [(f"{driver_path}/{path.relative_to(driver).as_posix()}", _code_only(path))
               for path in sorted(driver.rglob("*")) if path.suffix in (".c", ".h")
               and path.is_file()]
    findings = []
    for check in CHECKS:
        evidence = _probe(check, kernel_dir, sources)
        if evidence:
            findings.append(Finding(check, evidence))
    return findings


def enforce(findings: list[Finding], accepted: Collection[str]) -> None:
    """Warn about accepted findings; raise a UserError listing every other one."""
    accepted = {accepted} if isinstance(accepted, str) else set(accepted)
    known = {check.id for check in CHECKS}
    unknown = sorted(accepted - known)
    if unknown:
        raise UserError(f"preflight.accept names unknown check id(s): {', '.join(unknown)}; "
                        f"known ids: {', '.join(sorted(known))}")
    for finding in findings:
        if finding.check.id in accepted:
            print(f"rk3576-build: warning: preflight finding accepted by the recipe, the build "
                  f"may fail:\n{format_findings([finding])}", file=sys.stderr)
    blocking = [f for f in findings if f.check.id not in accepted]
    if blocking:
        ids = ", ".join(f.check.id for f in blocking)
        raise UserError(
            f"preflight: the kernel build would fail ({len(blocking)} known problem(s)):\n\n"
            f"{format_findings(blocking)}\n\n"
            "Fix them (a patch in the recipe's patch series, or another kernel tree) and run "
            "again. If you know the build copes, accept them in the recipe:\n"
            f"  preflight:\n    accept: [{ids}]")


def format_findings(findings: Iterable[Finding]) -> str:
    """Human-readable text: id, title, the error it would cause, evidence and fix per finding."""
    blocks = [f"[{f.check.id}] {f.check.title}\n"
              f"  build error: {f.check.error}\n"
              f"  evidence:    {f.evidence}\n"
              f"  known fix:   {f.check.fix}" for f in findings]
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
        patterns = [pattern.format(name=name) for pattern in check.provided_in]
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
