"""The rebuild check: are two builds of the same recipe bit-identical?

Every artifact the two manifests list is hashed again in both work directories; for each one
that differs, `diffoscope` (Debian package) writes a report (text, and HTML unless turned off)
into the output directory, which keeps them with a summary (rebuild-check.json). The result
says pass or fail like an exit status (0 identical, 1 different). What is known not to be
reproducible in Rockchip's images is listed in docs/release.md.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rk3576_build.core.errors import UserError
from rk3576_build.core.files import sha256_file

SUMMARY = "rebuild-check.json"
DIFFOSCOPE_TIMEOUT = 3600


@dataclass
class ArtifactDiff:
    """One artifact that is not the same in both builds."""

    path: str
    first_sha256: str | None
    second_sha256: str | None
    reports: list[str] = field(default_factory=list)  # paths of diffoscope's reports, relative to out
    note: str = ""


@dataclass
class RebuildResult:
    """The outcome: identical and differing artifacts, and where the reports are."""

    out: Path
    identical: list[str] = field(default_factory=list)
    differing: list[ArtifactDiff] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        return 1 if self.differing else 0

    @property
    def ok(self) -> bool:
        return not self.differing

    def summary(self) -> str:
        if self.ok:
            return f"rebuild check passed: {len(self.identical)} artifact(s) bit-identical"
        parts = [f"{d.path} ({d.note or 'sha256 differs'}" + (f"; report {d.reports[0]}" if d.reports else "") + ")"
                 for d in self.differing]
        return f"rebuild check failed: {len(self.differing)} artifact(s) differ: " + ", ".join(parts)


def _artifacts(manifest_path: Path) -> dict[str, str]:
    try:
        manifest = json.loads(Path(manifest_path).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the build manifest {manifest_path}: {exc}") from None
    return {str(a["path"]): str(a.get("sha256", "")) for a in manifest.get("artifacts", []) if "path" in a}


def _report_name(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", path).strip("_") or "artifact"


def run_diffoscope(first: Path, second: Path, out: Path, stem: str, *, html: bool = True,
                   timeout: int = DIFFOSCOPE_TIMEOUT) -> tuple[list[str], str]:
    """diffoscope's reports of two files into `out` (names relative to it) and a note."""
    tool = shutil.which("diffoscope")
    if not tool:
        return [], "diffoscope not installed (Debian: apt-get install diffoscope): no report"
    reports = [f"diffoscope/{stem}.txt"] + ([f"diffoscope/{stem}.html"] if html else [])
    (out / "diffoscope").mkdir(parents=True, exist_ok=True)
    command = [tool, "--no-progress", "--text", str(out / reports[0])]
    if html:
        command += ["--html", str(out / reports[1])]
    try:
        result = subprocess.run(command + [str(first), str(second)], capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [r for r in reports if (out / r).exists()], f"diffoscope did not finish within {timeout} s"
    kept = [r for r in reports if (out / r).exists()]
    if result.returncode not in (0, 1):
        tail = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        return kept, f"diffoscope failed (exit {result.returncode}): {tail[0]}"
    return kept, ""


def compare_builds(first_manifest: Path, first_root: Path, second_manifest: Path, second_root: Path,
                   out: Path, *, html: bool = True, timeout: int = DIFFOSCOPE_TIMEOUT) -> RebuildResult:
    """Compare every artifact of two builds (paths in their manifests, relative to each root)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    first, second = _artifacts(first_manifest), _artifacts(second_manifest)
    result = RebuildResult(out=out)
    for path in sorted(set(first) | set(second)):
        a, b = Path(first_root) / path, Path(second_root) / path
        sha_a = sha256_file(a) if path in first and a.is_file() else None
        sha_b = sha256_file(b) if path in second and b.is_file() else None
        stale = [n for n, sha, recorded in (("first", sha_a, first.get(path)), ("second", sha_b, second.get(path)))
                 if sha is not None and recorded and sha != recorded]
        if sha_a is not None and sha_a == sha_b and not stale:
            result.identical.append(path)
            continue
        diff = ArtifactDiff(path, sha_a, sha_b)
        if stale:
            diff.note = f"changed since the {' and '.join(stale)} build's manifest was written"
            if sha_a == sha_b:
                result.differing.append(diff)
                continue
        if sha_a is None or sha_b is None:
            diff.note = f"missing in the {'first' if sha_a is None else 'second'} build"
        else:
            diff.reports, note = run_diffoscope(a, b, out, _report_name(path), html=html, timeout=timeout)
            diff.note = "; ".join(n for n in (diff.note, note) if n)
        result.differing.append(diff)
    (out / SUMMARY).write_text(json.dumps({
        "status": "passed" if result.ok else "failed", "identical": result.identical,
        "differing": [asdict(d) for d in result.differing]}, indent=2) + "\n")
    return result


def compare_work_dirs(first: Path, second: Path, out: Path, **options) -> RebuildResult:
    """compare_builds() of two work directories (their manifest.json, artifacts under sdk/)."""
    first, second = Path(first), Path(second)
    return compare_builds(first / "manifest.json", first / "sdk", second / "manifest.json", second / "sdk",
                          out, **options)
