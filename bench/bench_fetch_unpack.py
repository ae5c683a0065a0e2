#!/usr/bin/env python3
"""Benchmark fetch() against `curl -o` and unpack() against `tar -I pigz -xf` / `tar -xzf`.

Usage: python3 bench/bench_fetch_unpack.py [--workdir DIR] [--cases fetch,small,sdk] [--reps N] [--keep]
  fetch  a 1 GiB file over loopback HTTP: fetch() (download + sha256) vs bare `curl -o`
  small  an archive of 20,000 small source files unpacked on tmpfs (/dev/shm)
  sdk    a >= 1 GB SDK-like archive (blobs, text, small files) unpacked on disk and tmpfs
Inputs are built once in --workdir and reused. Prints figures and ratios; no assertions.
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

from rk3576_build.sources import decompress  # noqa: E402
from rk3576_build.sources.fetch import fetch  # noqa: E402
from rk3576_build.sources.unpack import unpack  # noqa: E402

MiB = 1 << 20
BLOBS_MB = 900            # incompressible
TEXT_MB = 400             # source-like, compresses about 4:1
SMALL_FILES = 20_000      # 1-12 KiB each, like a kernel tree's .c/.h files
WORDS = ("static int struct void return if else for while unsigned long u32 u64 "
         "rknpu_job rknpu_gem dma_buf iommu devfreq mutex_lock spin_unlock "
         "#include #define EXPORT_SYMBOL_GPL ( ) { } ; = -> , * & 0x1000 NULL").split()


def _line_pool(rng: random.Random) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) + "\n" for _ in range(50_000)]


def make_tree(root: Path) -> None:
    """An SDK-like tree: incompressible blobs, source-like text, then the small files."""
    rng = random.Random(3576)
    blobs = root / "sdk" / "prebuilts"
    blobs.mkdir(parents=True)
    for i in range(BLOBS_MB // 100):
        (blobs / f"image-{i}.img").write_bytes(os.urandom(100 * MiB))
    text = root / "sdk" / "external"
    text.mkdir(parents=True)
    line_pool = _line_pool(rng)
    for i in range(TEXT_MB // 50):
        lines = rng.choices(line_pool, k=50 * MiB // 45)
        (text / f"source-{i}.c").write_text("".join(lines))
    make_small_files(root)


def make_small_files(root: Path, count: int = SMALL_FILES) -> None:
    """`count` small .c files (1-12 KiB) in dirs of 200, like a kernel tree, and one symlink."""
    rng = random.Random(3576)
    line_pool = _line_pool(rng)
    small = root / "sdk" / "kernel" / "drivers"
    for i in range(count):
        d = small / f"dir{i // 200:03d}"
        if i % 200 == 0:
            d.mkdir(parents=True)
        (d / f"file{i}.c").write_text("".join(rng.choices(line_pool, k=rng.randint(20, 270))))
    (small / "dir000" / "link.c").symlink_to("file0.c")


def build_small_archive(work: Path) -> Path:
    archive = work / "small-files.tar.gz"
    if not archive.exists():
        tree = work / "small-tree"
        shutil.rmtree(tree, ignore_errors=True)
        make_small_files(tree)
        subprocess.run(f"tar -C {tree} -cf - sdk | pigz -6 > {archive}.tmp", shell=True, check=True)
        os.replace(f"{archive}.tmp", archive)
        shutil.rmtree(tree)
    return archive


def build_blob(work: Path) -> Path:
    blob = work / "fetch-1GiB.bin"
    if not blob.exists():
        with open(f"{blob}.tmp", "wb") as out:
            for _ in range(1024):
                out.write(os.urandom(MiB))
        os.replace(f"{blob}.tmp", blob)
    return blob


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


def serve(work: Path):
    """A sendfile() HTTP server for `work` in its own process (so it does not share our GIL)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(work)))
    process = multiprocessing.get_context("fork").Process(target=server.serve_forever, daemon=True)
    process.start()
    return server, process


def bench_fetch(work: Path, reps: int) -> str:
    blob = build_blob(work)
    size_mb = blob.stat().st_size / MiB
    sha = hashlib.sha256()
    started = time.perf_counter()
    with open(blob, "rb") as handle:
        while chunk := handle.read(MiB):
            sha.update(chunk)
    sha_rate = size_mb / (time.perf_counter() - started)
    sha = sha.hexdigest()
    server, process = serve(work)
    url = f"http://127.0.0.1:{server.server_address[1]}/{blob.name}"
    dl, curl_out = work / "downloads", work / "curl.out"

    def clean_downloads():
        shutil.rmtree(dl, ignore_errors=True)
        curl_out.unlink(missing_ok=True)
    f = compare(f"fetch {size_mb:.0f} MiB (loopback HTTP, to {work}):", {
        "fetch() (download + sha256, one pass)":
            lambda: fetch("sdk", url, sha256=sha, downloads_dir=dl, progress=False),
        "curl -o": lambda: subprocess.run(["curl", "-sSf", "-o", curl_out, url], check=True),
        "curl -o && sha256sum": lambda: subprocess.run(
            f"curl -sSf -o {curl_out} {url} && sha256sum {curl_out} >/dev/null", shell=True, check=True),
    }, reps, before=clean_downloads)
    fetch("sdk", url, sha256=sha, downloads_dir=dl, progress=False)
    t_cached = timed("cached", lambda: fetch("sdk", url, sha256=sha, downloads_dir=dl, progress=False))
    clean_downloads()
    process.terminate()
    server.server_close()
    t_fetch, t_curl = f["fetch() (download + sha256, one pass)"], f["curl -o"]
    return (f"  fetch: fetch() {size_mb / t_fetch:.0f} MiB/s, curl -o {size_mb / t_curl:.0f} MiB/s: "
            f"fetch throughput / curl's {t_curl / t_fetch:.2f}; vs curl + sha256sum "
            f"{f['curl -o && sha256sum'] / t_fetch:.2f}; sha256 alone here {sha_rate:.0f} MiB/s "
            f"(one stream cannot go faster); cached fetch() {t_cached * 1000:.1f} ms")


def bench_unpack(archive: Path, where: str, base: Path, reps: int, tar_xzf: bool = True) -> str:
    out = base / "out"

    def fresh():
        shutil.rmtree(base, ignore_errors=True)
        out.mkdir(parents=True)
    cases = {
        "tar -I pigz -xf": lambda: subprocess.run(["tar", "-I", "pigz", "-xf", archive, "-C", out], check=True),
        "unpack() (igzip -> gate -> tar)": lambda: unpack(archive, out / "x", progress=False),
        "unpack(), Python zlib fallback": lambda: _without_tools(lambda: unpack(archive, out / "x", progress=False)),
    }
    if tar_xzf:
        cases["tar -xzf (GNU tar + gzip)"] = lambda: subprocess.run(["tar", "-xzf", archive, "-C", out], check=True)
    u = compare(f"unpack {archive.name} ({where}):", cases, reps, before=fresh)
    shutil.rmtree(base, ignore_errors=True)
    t_unpack, t_pigz = u["unpack() (igzip -> gate -> tar)"], u["tar -I pigz -xf"]
    line = (f"  unpack {archive.name} ({where}): unpack() {t_unpack:.2f} s vs tar -I pigz -xf {t_pigz:.2f} s: "
            f"ratio {t_unpack / t_pigz:.2f}; Python fallback {u['unpack(), Python zlib fallback'] / t_pigz:.2f}")
    if tar_xzf:
        line += f"; vs tar -xzf {t_unpack / u['tar -xzf (GNU tar + gzip)']:.2f}"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rk3576-bench"))
    parser.add_argument("--cases", default="fetch,small", help="comma-separated: fetch, small, sdk")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the generated SDK-like archive")
    args = parser.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    cases = set(args.cases.split(","))
    tar_version = subprocess.run(["tar", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    print(f"{os.cpu_count()} cores, {tar_version}, {args.reps} interleaved runs each, "
          f"load average {os.getloadavg()[0]:.1f}")
    summaries = []
    if "fetch" in cases:
        summaries.append(bench_fetch(work, args.reps))
    shm = Path("/dev/shm")
    if "small" in cases:
        archive = build_small_archive(work)
        summaries.append(bench_unpack(archive, "tmpfs", shm / "rk3576-bench-small", args.reps))
    if "sdk" in cases:
        archive = build_archive(work)
        targets = [("disk", work / "unpacked")]
        if shm.is_dir() and shutil.disk_usage(shm).free > 4 * archive.stat().st_size:
            targets.append(("tmpfs, no disk I/O", shm / "rk3576-bench-unpacked"))
        for where, base in targets:
            summaries.append(bench_unpack(archive, where, base, args.reps))
        if not args.keep:
            archive.unlink()
    print(f"summary (medians; load average now {os.getloadavg()[0]:.1f}):")
    print("\n".join(summaries))


def _without_tools(func):
    original = decompress.tool
    decompress.tool = lambda kind: None
    try:
        return func()
    finally:
        decompress.tool = original


if __name__ == "__main__":
    main()
