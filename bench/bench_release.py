"""Releasing, measured (docs/performance.md, "Releasing").

1. A release of a finished demo build: make_release (copy, SBOMs, provenance, 5 signatures, its
   own verify), verify-release, publish to Debian's docker-registry on loopback, pull (verified).
2. The Debian packages of a 2 GiB rootfs.img (the debootstrap base image packed with
   `mkfs.ext4 -d`): debugfs (release/rootfs.py, no root) against `mount -o loop,ro` +
   `dpkg-query --admindir` + `umount` (needs root and loop devices).

    python3 bench/bench_release.py [--workdir build/demo] [--reps 5] [--skip-rootfs]

The demo work directory must hold a finished build (`rk3576-build demo --no-verify`).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from cache_fixtures import serve_registry  # noqa: E402
from rk3576_build.release import publish, rootfs  # noqa: E402
from rk3576_build.release.bundle import make_release, verify_release  # noqa: E402

BASE = "rk3576-build/debian-base:bookworm"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def report(name: str, times: list[float]) -> None:
    print(f"{name:58s} median {statistics.median(times):7.3f} s  min {min(times):7.3f} s  (n={len(times)})")


def bench_demo_release(workdir: Path, reps: int, scratch: Path) -> None:
    key = scratch / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    pub = key.with_suffix(".pub")
    commit = subprocess.run(["git", "-C", str(workdir / "sdk" / "kernel"), "rev-parse", "HEAD"], check=True,
                            capture_output=True, text=True).stdout.strip()
    made, checked, pushed, pulled = [], [], [], []
    (scratch / "registry").mkdir()
    with serve_registry(scratch / "registry") as (url, _):
        host = url.rsplit("/", 2)[0]
        for n in range(reps):
            out = scratch / f"release-{n}"
            made.append(timed(lambda out=out: make_release(
                out, manifest_path=workdir / "manifest.json", sdk_dir=workdir / "sdk", key=key, supplier="bench",
                kernel_commit=commit, trusted=[pub], echo=lambda _: None)))
            checked.append(timed(lambda out=out: verify_release(out, [pub])))
            ref = f"{host}/bench/release-{n}:r"  # a new repository: every blob goes up
            pushed.append(timed(lambda out=out, ref=ref: publish.publish(out, ref, echo=lambda _: None)))
            pulled.append(timed(lambda ref=ref, n=n: publish.pull(ref, scratch / f"pulled-{n}", [pub],
                                                                  echo=lambda _: None)))
    size = sum(p.stat().st_size for p in (scratch / "release-0").rglob("*") if p.is_file())
    print(f"demo release: {size / 1e6:.1f} MB in {len(list((scratch / 'release-0').rglob('*')))} entries")
    report("make_release (copy, SBOMs, provenance, signatures, verify)", made)
    report("verify-release", checked)
    report("publish to a loopback registry (a new repository)", pushed)
    report("pull + verify", pulled)


def debian_rootfs_image(scratch: Path, size: str = "2G") -> Path:
    tree = scratch / "root"
    tree.mkdir()
    container = subprocess.run(["docker", "create", BASE, "true"], capture_output=True, text=True,
                               check=True).stdout.strip()
    try:
        export = subprocess.Popen(["docker", "export", container], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(tree)], stdin=export.stdout, check=True)
        assert export.wait() == 0
    finally:
        subprocess.run(["docker", "rm", container], capture_output=True)
    image = scratch / "rootfs.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(image), size], check=True, capture_output=True)
    shutil.rmtree(tree)
    return image


def bench_rootfs_listing(reps: int, scratch: Path) -> None:
    image = debian_rootfs_image(scratch)
    mnt = scratch / "mnt"
    mnt.mkdir()
    count = len(rootfs.rootfs_packages(image)[1])

    def mounted() -> None:
        subprocess.run(["mount", "-o", "loop,ro", str(image), str(mnt)], check=True)
        try:
            subprocess.run(["dpkg-query", f"--admindir={mnt}/var/lib/dpkg", "-W", "-f",
                            "${db:Status-Status}\t${Package}\t${Architecture}\t${Version}\n"],
                           check=True, capture_output=True)
        finally:
            subprocess.run(["umount", str(mnt)], check=True)

    print(f"rootfs.img: {image.stat().st_size / 2**30:.0f} GiB ext4, {count} packages")
    report("debugfs: os-release + dpkg status -> package list", [timed(lambda: rootfs.rootfs_packages(image))
                                                                 for _ in range(reps)])
    try:
        report("mount -o loop,ro + dpkg-query -W + umount", [timed(mounted) for _ in range(reps)])
    except subprocess.CalledProcessError as exc:
        print(f"mount -o loop,ro: not possible here ({exc}); needs root and loop devices")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=REPO / "build" / "demo")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--skip-rootfs", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-release-") as tmp:
        bench_demo_release(args.workdir.absolute(), args.reps, Path(tmp))
    if not args.skip_rootfs:
        with tempfile.TemporaryDirectory(prefix="bench-rootfs-") as tmp:
            bench_rootfs_listing(args.reps, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
