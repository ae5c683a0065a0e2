"""Bench: a fresh work dir's build after a driver bump, with a cold and with a warm build cache.

The fresh runner the cache is for: a CI job or a colleague's machine that starts from
nothing. Each case is a new work directory building the demo recipe (sample SDK, RKNPU
0.9.6) up to the manifest through the real command line:

- cold: the cache is empty, so every build.sh step runs;
- warm: the cache holds a 0.9.8 build from another work directory, so the steps the
  driver does not affect (lunch, u-boot, ubuntu) are restored and kernel, module and
  updateimg are built.

It also times one large entry (an incompressible image standing in for a real rootfs.img)
through pack + store and restore (fetch, verify, place), for the directory and, with
--registry, an OCI registry.

    python3 bench/bench_cache.py [--cache dir|oci://127.0.0.1:5000/rk3576/cache] [--keep DIR]
                                 [--size MIB] [--registry oci://127.0.0.1:5000/rk3576/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rk3576_build.build.cache import Cache, step_key  # noqa: E402
from rk3576_build.demo import command as demo  # noqa: E402
from rk3576_build.demo.board_kit import ensure_kit  # noqa: E402


def write_recipe(path: Path, url: str, checksums: dict, driver: str, cache: str, downloads: Path) -> Path:
    """The demo recipe with its own work dir, this bench's sources and the cache as the store."""
    data = yaml.safe_load((REPO / "recipes" / "demo.yaml").read_text())
    name = demo.driver_tarball_name(driver)
    data["workdir"] = str(path.parent / "work")
    data["downloads"] = str(downloads)
    data["sdk"]["url"] = f"{url}/{demo.SDK_TARBALL}"
    data["driver"].update(version=driver, url=f"{url}/{name}", sha256=checksums[name])
    data["patches"]["dir"] = str(REPO / "patches" / "demo")
    data["builder"]["dockerfile"] = str(REPO / "Dockerfile.builder")
    data["builder"]["mounts"][0]["source"] = str(ensure_kit().root)
    data["cache"] = {"store": cache}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def build(recipe: Path) -> tuple[float, dict[str, tuple[str, float]]]:
    """Wall time of `rk3576-build run` (to the manifest) and each step's (built|restored, seconds)."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "rk3576_build.cli", "--recipe", str(recipe), "run"],
                            capture_output=True, text=True, cwd=REPO)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"build of {recipe} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    manifest = json.loads((recipe.parent / "work" / "manifest.json").read_text())
    return elapsed, {s["name"]: ((s.get("cache") or {}).get("result", "built"), s["duration"])
                     for s in manifest["steps"]}


def large_entry(base: Path, url: str, size_mib: int) -> tuple[float, float]:
    """Seconds to save (pack + store) and to restore (fetch + verify + place) one image of `size_mib`."""
    sdk = base / "sdk"
    (sdk / "output" / "firmware").mkdir(parents=True, exist_ok=True)
    with open(sdk / "output" / "firmware" / "rootfs.img", "wb") as fh:
        for _ in range(size_mib):
            fh.write(os.urandom(1 << 20))
    key = step_key({"bench": url, "size": size_mib, "time": time.time()}).key
    cache = Cache.from_urls(store=url, scratch=base / "scratch", report=print)
    started = time.perf_counter()
    assert cache.save(key, sdk, ["output/firmware/rootfs.img"]) == [cache.backends[0].url]
    saved = time.perf_counter() - started
    started = time.perf_counter()
    assert cache.restore(key, base / "fresh") is not None
    return saved, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="dir",
                        help="'dir' (a fresh directory, default) or an OCI URL of a registry you run")
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temporary directory)")
    parser.add_argument("--size", type=int, default=256, help="MiB of the large entry (default 256)")
    parser.add_argument("--registry", help="also time the large entry on this OCI registry URL")
    args = parser.parse_args()
    os.environ.setdefault(demo.PASSWORD_ENV, demo.DEMO_PASSWORD)
    base = args.keep or Path(tempfile.mkdtemp(prefix="bench-cache."))
    try:
        checksums = demo.prepare_sources(base / "sources", os.environ[demo.PASSWORD_ENV])
        server, url = demo.serve(base / "sources")
        try:
            def case(name: str, driver: str, cache: str) -> tuple[float, dict[str, tuple[str, float]]]:
                """A fresh machine: its own work dir and downloads."""
                return build(write_recipe(base / name / "r.yaml", url, checksums, driver, cache, base / name / "dl"))

            def cache_for(name: str) -> str:
                if args.cache == "dir":
                    return f"dir:{base / f'cache-{name}'}"
                return f"{args.cache.rstrip('/')}-{name}-{int(time.time())}"

            # The seeding build goes first: it also warms what every case shares (builder image, ccache).
            warm_cache = cache_for("warm")
            seed_time, _ = case("seed", "0.9.8", warm_cache)
            rows = [("cold cache", *case("cold", "0.9.6", cache_for("cold"))),
                    ("warm cache (seeded by a 0.9.8 build)", *case("warm", "0.9.6", warm_cache))]
        finally:
            server.shutdown()
        print(f"fresh work dir, demo recipe, driver 0.9.6, cache {args.cache}; seeding build {seed_time:.1f} s")
        print(f"{'case':40} {'wall':>8}  steps built / restored")
        for label, seconds, steps in rows:
            built = [n for n, (r, _) in steps.items() if r == "built"]
            restored = [n for n, (r, _) in steps.items() if r == "restored"]
            print(f"{label:40} {seconds:7.1f}s  {len(built)} built ({', '.join(built)}) / "
                  f"{len(restored)} restored ({', '.join(restored) or '-'})")
        print("per step, seconds (cold: built; warm: built or restored):")
        for name, (_, cold_s) in rows[0][2].items():
            result, warm_s = rows[1][2][name]
            print(f"  {name:10} {cold_s:6.2f}  {warm_s:6.2f} {result}")
        print(f"one {args.size} MiB incompressible entry: save (pack + store) / restore (fetch + verify + place)")
        for url in [f"dir:{base / 'large-cache'}"] + ([args.registry] if args.registry else []):
            saved, restored_in = large_entry(base / "large" / str(len(url)), url, args.size)
            print(f"  {url.split(':')[0]:4} {saved:6.1f} s / {restored_in:6.1f} s "
                  f"({args.size / restored_in:.0f} MiB/s restore)")
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
