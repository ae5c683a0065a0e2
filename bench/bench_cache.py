"""Bench: the build cache at real-SDK scale, against `tar -S | zstd -T0 -1` + `sha256sum`.

Datasets, made fresh (random-ish content: half random bytes, half 16-symbol text, so zstd
has something to do):

- sparse ext4 images of 2 and 8 GiB, 40% used (`mkfs.ext4 -d` from a tree of files), as
  build.sh leaves rootfs.img;
- a kernel build tree of 50,000 small files (objects, sources, and .cmd files that name the
  SDK's absolute path, as Kbuild writes them).

Each is saved and restored through `Cache.save`/`Cache.restore` with a directory store and
with a registry store (Debian's docker-registry on loopback, as the tests run it), and
through the pipeline `tar -S -cf - | zstd -T0 -1` + `sha256sum` of the files (restore:
`zstd -d | tar -S -xf -` + `sha256sum`). Also with `openssl dgst -sha256` in place of
sha256sum, which uses the CPU's SHA instructions as Python's hashlib does (coreutils'
sha256sum does not). Rounds alternate the methods; the median is shown, with the bytes the
restored products take on disk.

    python3 bench/bench_cache.py [--images 2,8] [--tree 50000] [--rounds 3] [--no-registry]
                                 [--base DIR] [--demo]

`--demo` also times the fresh-work-dir build of the demo recipe with a cold and a warm
cache (needs Docker).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from cache_fixtures import serve_registry  # noqa: E402
from rk3576_build.build.cache import Cache, step_key  # noqa: E402

_TEXT = bytes((b & 15) + 97 for b in range(256))


def random_ish(size: int) -> bytes:
    """Blocks of 64 KiB alternating random bytes and 16-symbol text."""
    blocks = []
    for offset in range(0, size, 65536):
        chunk = os.urandom(min(65536, size - offset))
        blocks.append(chunk if (offset // 65536) % 2 else chunk.translate(_TEXT))
    return b"".join(blocks)


def ext4_image(path: Path, gib: int, used: float = 0.4) -> None:
    """A sparse ext4 image of `gib` GiB whose files fill `used` of it."""
    source = path.with_name(path.name + ".files")
    rnd = random.Random(gib)
    total, count = int((gib << 30) * used), 0
    while total > 0:
        size = min(int(2 ** rnd.uniform(12, 24)), total)  # 4 KiB .. 16 MiB
        directory = source / f"usr/lib/d{count % 256}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{count}").write_bytes(random_ish(size))
        total -= size
        count += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["truncate", "-s", f"{gib}G", str(path)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(source), str(path)], check=True)
    shutil.rmtree(source)


def kernel_tree(root: Path, files: int) -> None:
    """`files` small files as an in-tree kernel build leaves them."""
    rnd = random.Random(files)
    sdk = os.path.abspath(root.parent)
    for n in range(files):
        directory = root / f"drivers/d{n // 25 % 80}/s{n // 2000}"
        if n % 25 == 0:
            directory.mkdir(parents=True, exist_ok=True)
        kind = n % 4
        if kind == 0:
            data = random_ish(int(2 ** rnd.uniform(11, 16)))  # an object: 2 .. 64 KiB
            name = f"f{n}.o"
        elif kind == 1:
            data = (f"cmd_{directory.name}/f{n}.o := aarch64-linux-gnu-gcc -I{sdk}/kernel/include "
                    f"-I{sdk}/kernel/arch/arm64/include -c -o f{n}.o f{n}.c\n" * rnd.randint(2, 20)).encode()
            name = f".f{n}.o.cmd"
        else:
            data = random_ish(int(2 ** rnd.uniform(10, 14))).translate(_TEXT)  # a source: 1 .. 16 KiB
            name = f"f{n}.{'c' if kind == 2 else 'h'}"
        (directory / name).write_bytes(data)


def allocated(path: Path) -> int:
    """Bytes the files under `path` take on disk."""
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum((Path(d) / f).lstat().st_blocks * 512 for d, _, names in os.walk(path) for f in names)


def logical(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum((Path(d) / f).lstat().st_size for d, _, names in os.walk(path) for f in names)


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def sh(command: str) -> None:
    subprocess.run(["bash", "-o", "pipefail", "-c", command], check=True, stdout=subprocess.DEVNULL)


def pipeline(sdk: Path, product: str, work: Path, hasher: str) -> tuple[float, float, int, int]:
    """The pipeline's save and restore seconds, its archive's size, and the restored bytes on disk."""
    archive, dest = work / "p.tar.zst", work / "p-restored"
    dest.mkdir(parents=True)
    files = f"find {product} -type f -print0 | xargs -0 -r {hasher} > /dev/null"
    save = timed(lambda: sh(f"cd {sdk} && tar -S -cf - {product} | zstd -T0 -1 -q -o {archive} && {files}"))
    restore = timed(lambda: sh(f"zstd -d -q -c {archive} | tar -S -xf - -C {dest} && cd {dest} && {files}"))
    size, on_disk = archive.stat().st_size, allocated(dest / product)
    archive.unlink()
    shutil.rmtree(dest)
    return save, restore, size, on_disk


def through_cache(sdk: Path, product: str, work: Path, url: str) -> tuple[float, float, int, int]:
    """Cache.save and Cache.restore seconds, the entry's size, and the restored bytes on disk."""
    key = step_key({"bench": product, "at": time.time_ns()}).key
    reports: list[str] = []
    cache = Cache.from_urls(store=url, scratch=work / "scratch", report=reports.append)
    save = timed(lambda: cache.save(key, sdk, [product]))
    fresh = work / "restored"
    restore = timed(lambda: cache.restore(key, fresh))
    if reports or not (fresh / product).exists():
        sys.exit(f"the cache failed: {reports}")
    size = sum(f.stat().st_size for f in Path(url[4:]).rglob("products.zst")) if url.startswith("dir:") else -1
    on_disk = allocated(fresh / product)
    shutil.rmtree(fresh)
    if url.startswith("dir:"):
        shutil.rmtree(url[4:])
    return save, restore, size, on_disk


def bench_dataset(label: str, sdk: Path, product: str, work: Path, rounds: int, registry: str | None) -> list[str]:
    methods = {"cache, directory": lambda: through_cache(sdk, product, work, f"dir:{work / 'store'}"),
               "tar -S | zstd -T0 -1 + sha256sum": lambda: pipeline(sdk, product, work, "sha256sum"),
               "tar -S | zstd -T0 -1 + openssl sha256": lambda: pipeline(sdk, product, work, "openssl dgst -sha256")}
    if registry:  # a new repository each round: a registry does not take a blob it already has twice
        methods["cache, registry"] = lambda: through_cache(sdk, product, work, f"{registry}-{time.time_ns()}")
    results: dict[str, list[tuple]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, run in methods.items():
            results[name].append(run())
    source = (logical(sdk / product), allocated(sdk / product))
    rows = [f"{label}: {source[0] / 2**30:.2f} GiB logical, {source[1] / 2**30:.2f} GiB on disk"]
    base = {i: statistics.median(r[i] for r in results["tar -S | zstd -T0 -1 + sha256sum"]) for i in (0, 1)}
    strict = {i: statistics.median(r[i] for r in results["tar -S | zstd -T0 -1 + openssl sha256"]) for i in (0, 1)}
    for name, runs in results.items():
        save, restore = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        size, on_disk = runs[-1][2], runs[-1][3]
        rows.append(f"  {name:40} save {save:6.1f} s ({save / base[0]:.2f}x, {save / strict[0]:.2f}x openssl)  "
                    f"restore {restore:6.1f} s ({restore / base[1]:.2f}x, {restore / strict[1]:.2f}x openssl)  "
                    f"archive {size / 2**20 if size >= 0 else float('nan'):7.0f} MiB  "
                    f"restored on disk {on_disk / 2**20:7.0f} MiB ({on_disk / source[1] * 100:.1f}% of the source)  "
                    f"[{', '.join(f'{r[0]:.1f}/{r[1]:.1f}' for r in runs)}]")
    return rows


# --------------------------------------------------------------------------- the demo build, cold and warm


def demo_builds(base: Path) -> list[str]:
    """A fresh work dir's build of the demo recipe (driver 0.9.6) with a cold and a warm cache."""
    from rk3576_build.demo import command as demo
    from rk3576_build.demo.board_kit import ensure_kit

    os.environ.setdefault(demo.PASSWORD_ENV, demo.DEMO_PASSWORD)
    checksums = demo.prepare_sources(base / "sources", os.environ[demo.PASSWORD_ENV])
    server, url = demo.serve(base / "sources")

    def case(name: str, driver: str, cache: str) -> tuple[float, dict]:
        data = yaml.safe_load((REPO / "recipes" / "demo.yaml").read_text())
        tarball = demo.driver_tarball_name(driver)
        data.update(workdir=str(base / name / "work"), downloads=str(base / name / "dl"), cache={"store": cache})
        data["sdk"]["url"] = f"{url}/{demo.SDK_TARBALL}"
        data["driver"].update(version=driver, url=f"{url}/{tarball}", sha256=checksums[tarball])
        data["patches"]["dir"] = str(REPO / "patches" / "demo")
        data["builder"]["dockerfile"] = str(REPO / "Dockerfile.builder")
        data["builder"]["mounts"][0]["source"] = str(ensure_kit().root)
        recipe = base / name / "r.yaml"
        recipe.parent.mkdir(parents=True)
        recipe.write_text(yaml.safe_dump(data))
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "rk3576_build.cli", "--recipe", str(recipe), "run"],
                                capture_output=True, text=True, cwd=REPO)
        if result.returncode != 0:
            sys.exit(f"build of {recipe} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        manifest = json.loads((base / name / "work" / "manifest.json").read_text())
        return time.perf_counter() - started, {s["name"]: ((s.get("cache") or {}).get("result", "built"),
                                                           s["duration"]) for s in manifest["steps"]}

    try:
        seed, _ = case("seed", "0.9.8", f"dir:{base / 'cache-warm'}")
        rows = [("cold cache", *case("cold", "0.9.6", f"dir:{base / 'cache-cold'}")),
                ("warm cache (seeded by a 0.9.8 build)", *case("warm", "0.9.6", f"dir:{base / 'cache-warm'}"))]
    finally:
        server.shutdown()
    out = [f"fresh work dir, demo recipe, driver 0.9.6; seeding build {seed:.1f} s"]
    for label, seconds, steps in rows:
        built = [n for n, (r, _) in steps.items() if r == "built"]
        restored = [n for n, (r, _) in steps.items() if r == "restored"]
        out.append(f"  {label:40} {seconds:7.1f} s  {len(built)} built ({', '.join(built)}) / "
                   f"{len(restored)} restored ({', '.join(restored) or '-'})")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="2,8", help="GiB of the ext4 images, comma-separated (default 2,8)")
    parser.add_argument("--tree", type=int, default=50_000, help="files in the kernel tree (0: none)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each method (default 3)")
    parser.add_argument("--no-registry", action="store_true", help="skip the registry backend")
    parser.add_argument("--base", type=Path, help="work here (default: a temporary directory under /work or /tmp)")
    parser.add_argument("--demo", action="store_true", help="also time the demo build with a cold and a warm cache")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-cache.", dir=args.base)).resolve()
    rows = [f"{os.cpu_count()} cores; load average at start {os.getloadavg()[0]:.1f}"]
    try:
        with serve_registry(base) if not args.no_registry else contextlib.nullcontext() as served:
            registry = f"{served[0]}-bench" if served else None
            datasets = [(f"{gib} GiB ext4 image, 40% used", f"output/firmware/rootfs-{gib}g.img",
                         lambda p, g=gib: ext4_image(p, g)) for gib in map(int, filter(None, args.images.split(",")))]
            if args.tree:
                datasets.append((f"kernel build tree, {args.tree} files", "kernel",
                                 lambda p: kernel_tree(p, args.tree)))
            for label, product, make in datasets:
                sdk = base / "sdk"
                made = timed(functools.partial(make, sdk / product))
                print(f"{label}: made in {made:.0f} s", flush=True)
                rows += bench_dataset(label, sdk, product, base / "work", args.rounds, registry)
                print("\n".join(rows[-(5 if registry else 4):]), flush=True)
                shutil.rmtree(sdk)
                shutil.rmtree(base / "data", ignore_errors=True)  # the registry's blobs
        if args.demo:
            rows += demo_builds(base / "demo")
        rows.append(f"load average at the end {os.getloadavg()[0]:.1f}")
        print("\n".join(rows))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
