#!/usr/bin/env python3
"""Benchmark fetch() against `curl -o` and unpack() against `tar -xzf` on a >= 1 GB SDK-like archive.

Usage: python3 bench/bench_fetch_unpack.py [--workdir DIR] [--keep]
The archive (built once, reused by later runs from --workdir) mixes what MYIR's SDK holds:
large incompressible blobs (prebuilt images, toolchains), compressible source-like text,
and many small source files. Prints figures and ratios; no assertions.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rk3576_build import unpack as unpack_mod  # noqa: E402
from rk3576_build.fetch import fetch  # noqa: E402
from rk3576_build.unpack import unpack  # noqa: E402

MiB = 1 << 20
BLOBS_MB = 900            # incompressible
TEXT_MB = 400             # source-like, compresses about 4:1
SMALL_FILES = 20_000      # 1-12 KiB each, like a kernel tree's .c/.h files
WORDS = ("static int struct void return if else for while unsigned long u32 u64 "
         "rknpu_job rknpu_gem dma_buf iommu devfreq mutex_lock spin_unlock "
         "#include #define EXPORT_SYMBOL_GPL ( ) { } ; = -> , * & 0x1000 NULL").split()


def make_tree(root: Path) -> None:
    rng = random.Random(3576)
    blobs = root / "sdk" / "prebuilts"
    blobs.mkdir(parents=True)
    for i in range(BLOBS_MB // 100):
        (blobs / f"image-{i}.img").write_bytes(os.urandom(100 * MiB))
    text = root / "sdk" / "external"
    text.mkdir(parents=True)
    line_pool = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) + "\n"
                 for _ in range(50_000)]
    for i in range(TEXT_MB // 50):
        lines = rng.choices(line_pool, k=50 * MiB // 45)
        (text / f"source-{i}.c").write_text("".join(lines))
    small = root / "sdk" / "kernel" / "drivers"
    for i in range(SMALL_FILES):
        d = small / f"dir{i // 200:03d}"
        if i % 200 == 0:
            d.mkdir(parents=True)
        (d / f"file{i}.c").write_text("".join(rng.choices(line_pool, k=rng.randint(20, 270))))
    (small / "dir000" / "link.c").symlink_to("file0.c")


def build_archive(work: Path) -> Path:
    archive = work / "MYD-LR3576-bench.tar.gz"
    if archive.exists():
        return archive
    tree = work / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    started = time.perf_counter()
    make_tree(tree)
    subprocess.run(f"tar -C {tree} -cf - sdk | pigz -6 > {archive}.tmp", shell=True, check=True)
    os.replace(f"{archive}.tmp", archive)
    shutil.rmtree(tree)
    print(f"built {archive.name}: {archive.stat().st_size / MiB:.0f} MiB "
          f"in {time.perf_counter() - started:.0f} s")
    return archive


class _Handler(SimpleHTTPRequestHandler):
    """Static files with sendfile(), so the server is not the bottleneck."""

    def log_message(self, *args):
        pass

    def copyfile(self, source, outputfile):
        outputfile.flush()
        self.connection.sendfile(source)


def timed(label: str, func) -> float:
    subprocess.run(["sync"])
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def compare(title: str, cases: dict, reps: int, before=lambda: None) -> dict[str, float]:
    """Run the cases interleaved `reps` times; print min and median; return the medians."""
    times: dict[str, list[float]] = {label: [] for label in cases}
    for _ in range(reps):
        for label, func in cases.items():
            before()
            times[label].append(timed(label, func))
    print(title)
    for label, values in times.items():
        print(f"  {label:<44} min {min(values):6.2f} s   median {statistics.median(values):6.2f} s")
    return {label: statistics.median(values) for label, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rk3576-bench"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the generated archive")
    args = parser.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    archive = build_archive(work)
    size = archive.stat().st_size
    mb = size / MiB
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    tar_version = subprocess.run(["tar", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    print(f"archive: {mb:.0f} MiB, {os.cpu_count()} cores, {tar_version}, {args.reps} runs each")

    # The server runs in its own process so that it does not share fetch()'s GIL.
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(work)))
    serving = multiprocessing.get_context("fork").Process(target=server.serve_forever, daemon=True)
    serving.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{archive.name}"
    dl, curl_out = work / "downloads", work / "curl.out"

    def clean_downloads():
        shutil.rmtree(dl, ignore_errors=True)
        curl_out.unlink(missing_ok=True)
    f = compare("fetch (loopback HTTP, to disk):", {
        "fetch() (download + sha256, one pass)":
            lambda: fetch("sdk", url, sha256=sha, downloads_dir=dl, progress=False),
        "curl -o": lambda: subprocess.run(["curl", "-sSf", "-o", curl_out, url], check=True),
        "curl -o && sha256sum": lambda: subprocess.run(
            f"curl -sSf -o {curl_out} {url} && sha256sum {curl_out} >/dev/null", shell=True, check=True),
    }, args.reps, before=clean_downloads)
    fetch("sdk", url, sha256=sha, downloads_dir=dl, progress=False)
    t_cached = timed("cached", lambda: fetch("sdk", url, sha256=sha, downloads_dir=dl, progress=False))
    clean_downloads()
    serving.terminate()
    server.server_close()

    summaries = []
    targets = [("disk", work / "unpacked")]
    if Path("/dev/shm").is_dir() and shutil.disk_usage("/dev/shm").free > 4 * size:
        targets.append(("tmpfs, no disk I/O", Path("/dev/shm/rk3576-bench-unpacked")))
    for where, base in targets:
        out = base / "out"

        def fresh():
            shutil.rmtree(base, ignore_errors=True)
            out.mkdir(parents=True)
        u = compare(f"unpack ({where}):", {
            "tar -xzf (GNU tar + gzip)": lambda: subprocess.run(["tar", "-xzf", archive, "-C", out], check=True),
            "tar -I pigz -xf": lambda: subprocess.run(["tar", "-I", "pigz", "-xf", archive, "-C", out], check=True),
            "unpack() (pigz -> gate -> splice -> tar)": lambda: unpack(archive, out, progress=False),
            "unpack(), Python zlib fallback": lambda: _without_tools(lambda: unpack(archive, out, progress=False)),
        }, args.reps, before=fresh)
        shutil.rmtree(base, ignore_errors=True)
        t_tar, t_unpack = u["tar -xzf (GNU tar + gzip)"], u["unpack() (pigz -> gate -> splice -> tar)"]
        summaries.append(
            f"  unpack ({where}): unpack() {t_unpack:.1f} s vs tar -xzf {t_tar:.1f} s: ratio {t_unpack / t_tar:.2f} "
            f"(vs tar -I pigz {t_unpack / u['tar -I pigz -xf']:.2f}; Python fallback vs tar -xzf "
            f"{u['unpack(), Python zlib fallback'] / t_tar:.2f})")
    if not args.keep:
        archive.unlink()

    t_fetch, t_curl = f["fetch() (download + sha256, one pass)"], f["curl -o"]
    print("summary (medians):")
    print(f"  fetch() {mb / t_fetch:.0f} MiB/s, curl -o {mb / t_curl:.0f} MiB/s: fetch/curl time ratio "
          f"{t_fetch / t_curl:.2f}, fetch/(curl + sha256sum) {t_fetch / f['curl -o && sha256sum']:.2f}")
    print(f"  cached fetch() (trusts the .done stamp, no re-hash): {t_cached * 1000:.1f} ms")
    print("\n".join(summaries))


def _without_tools(func):
    original = unpack_mod._tool
    unpack_mod._tool = lambda kind: None
    try:
        return func()
    finally:
        unpack_mod._tool = original


if __name__ == "__main__":
    main()
