"""Bench: the demo's driver matrix against the same three drivers as three separate demo runs.

Both sides start from fresh work directories and go through the real command line, all the
way to a verified board (build, flash, QEMU boot, verify with the RKLLM check):

- separate: `rk3576-build demo --driver-version V --workdir <fresh>` once per version, one
  after another (each builds all six steps, then verifies);
- matrix:   `rk3576-build demo --matrix V1,V2,V3 --workdir <fresh>` (the later variants restore
  lunch, u-boot and ubuntu from the shared build cache; the board verifies one image while
  the next one builds).

Both share what any two runs on one host share: the download cache, the builder image and the
compiler cache volume (warmed by a first, untimed matrix run). Target (issue 22): matrix wall
time at most 0.6x the separate runs'.

    python3 bench/bench_matrix.py [--versions 0.9.6,0.9.7,0.9.8] [--reps 1] [--keep DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def demo(workdir: Path, *args: str) -> tuple[float, int, str]:
    """Wall time, exit code and output of one `rk3576-build demo` in a fresh `workdir`."""
    shutil.rmtree(workdir, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "RK3576_CONSOLE_PASSWORD"}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "rk3576_build.cli", "demo", "--workdir", str(workdir), *args],
                          cwd=REPO, env=env, capture_output=True, text=True)
    return time.monotonic() - started, done.returncode, done.stdout + done.stderr


def separate(base: Path, versions: list[str]) -> tuple[float, list[float]]:
    times = []
    for version in versions:
        wall, code, output = demo(base / f"separate-{version}", "--driver-version", version)
        if code not in (0, 1):  # 1: this driver fails its verify, as it should
            sys.exit(f"demo --driver-version {version} exited {code}:\n{output[-3000:]}")
        times.append(wall)
    return sum(times), times


def matrix(base: Path, versions: list[str]) -> tuple[float, dict]:
    wall, code, output = demo(base / "matrix", "--matrix", ",".join(versions))
    if code not in (0, 1):
        sys.exit(f"demo --matrix exited {code}:\n{output[-3000:]}")
    data = json.loads((base / "matrix" / "matrix" / "matrix.json").read_text())
    return wall, data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", default="0.9.6,0.9.7,0.9.8")
    parser.add_argument("--reps", type=int, default=1, help="rounds of (separate, matrix), each side first in turn")
    parser.add_argument("--keep", type=Path, help="work under this directory and keep it")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    versions = [v for v in args.versions.split(",") if v]
    base = args.keep or Path(tempfile.mkdtemp(prefix="rk3576-bench-matrix-"))
    try:
        print(f"warming up (builder image, downloads, compiler cache) in {base}", file=sys.stderr)
        matrix(base / "warm-up", versions)
        rounds = []
        for rep in range(args.reps):
            # Alternate which side goes first: other jobs' load on a shared host drifts.
            if rep % 2 == 0:
                sep_total, sep_each = separate(base / f"round-{rep}", versions)
                mat_total, data = matrix(base / f"round-{rep}", versions)
            else:
                mat_total, data = matrix(base / f"round-{rep}", versions)
                sep_total, sep_each = separate(base / f"round-{rep}", versions)
            builds = {v["name"]: v["build"] for v in data["variants"]}
            rounds.append({"separate_s": round(sep_total, 1), "separate_each_s": [round(t, 1) for t in sep_each],
                           "matrix_s": round(mat_total, 1), "ratio": round(mat_total / sep_total, 3),
                           "matrix_builds_s": {k: b["duration_s"] for k, b in builds.items()},
                           "matrix_verify_s": {r["variant"]: r["duration_s"] for r in data["runs"]},
                           "verdicts": {c["variant"]: c["verdict"] for c in data["cells"]},
                           "load": os.getloadavg()[0]})
            print(f"round {rep + 1}: separate {sep_total:.1f} s ({', '.join(f'{t:.1f}' for t in sep_each)}), "
                  f"matrix {mat_total:.1f} s, ratio {mat_total / sep_total:.2f} "
                  f"(load {os.getloadavg()[0]:.1f})", file=sys.stderr)
        summary = {"versions": versions, "rounds": rounds,
                   "median_ratio": round(statistics.median(r["ratio"] for r in rounds), 3)}
        if args.json:
            print(json.dumps(summary, indent=1))
        else:
            print(f"median ratio matrix/separate: {summary['median_ratio']:.2f} (target <= 0.6)")
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
