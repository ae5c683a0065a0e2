"""Bench kernel_tree on a 70,000-file tree (a kernel's size) against plain git.

Usage: python3 bench/bench_kernel_tree.py [files]   (default 70000)
Prints seconds per step and the ratio of ensure_baseline to a plain
`git init; git add -A; git commit` of the same tree.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rk3576_build.demo.sample_driver import write_driver_tree
from rk3576_build.kernel import tree as kt

MAKEFILE = "VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 75\nEXTRAVERSION =\n"


def make_tree(root: Path, files: int) -> None:
    """`files` small C files, 100 per directory, plus a kernel Makefile."""
    root.mkdir(parents=True)
    (root / "Makefile").write_text(MAKEFILE)
    (root / ".gitignore").write_text("*.o\n*.mod.c\n")
    for index in range(files):
        folder = root / "drivers" / f"d{index // 100:04}"
        if index % 100 == 0:
            folder.mkdir(parents=True)
        (folder / f"f{index % 100:02}.c").write_text(f"int symbol_{index};\n")


def timed(label: str, func, *args, **kwargs) -> float:
    start = time.perf_counter()
    func(*args, **kwargs)
    elapsed = time.perf_counter() - start
    print(f"{label:<44} {elapsed:7.2f} s")
    return elapsed


def plain_git(root: Path) -> None:
    env = ["-c", "user.name=b", "-c", "user.email=b@b", "-c", "gc.auto=0"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "plain"]):
        subprocess.run(["git", *env, "-C", str(root), *args], check=True)


def main() -> None:
    files = int(sys.argv[1]) if len(sys.argv) > 1 else 70000
    work = Path(tempfile.mkdtemp(prefix="bench-kernel-tree-"))
    try:
        print(f"tree of {files} files under {work}")
        timed("make tree (x2)", lambda: (make_tree(work / "plain", files),
                                          make_tree(work / "kernel", files)))
        plain = timed("baseline: plain git init/add/commit", plain_git, work / "plain")
        ours = timed("kernel_tree.ensure_baseline", kt.ensure_baseline, work / "kernel")
        timed("ensure_baseline again (no-op)", kt.ensure_baseline, work / "kernel")
        driver = write_driver_tree(work / "driver", "0.9.8")
        timed("overlay_driver", kt.overlay_driver, work / "kernel", driver, description="bench")
        timed("overlay_driver again (reset + replace)", kt.overlay_driver, work / "kernel",
              driver, description="bench")
        timed("apply_patches([])", kt.apply_patches, work / "kernel", [])
        timed("tree_state", kt.tree_state, work / "kernel")
        print(f"ratio ensure_baseline / plain git: {ours / plain:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
