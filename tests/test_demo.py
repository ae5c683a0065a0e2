"""The README's main job, end to end: `rk3576-build demo` builds, flashes the virtual board and verifies."""

from __future__ import annotations

import json

import pytest

from helpers import REPO, rk
from rk3576_build.config.layout import UPDATE_IMG
from rk3576_build.config.recipe import load_recipe
from rk3576_build.demo import command as demo_command
from rk3576_build.release.bundle import verify_release
from rk3576_build.sources import fetch


@pytest.mark.docker
@pytest.mark.qemu
def test_demo_end_to_end_and_driver_change():
    first = rk("demo", timeout=2400)
    output = first.stdout + first.stderr
    assert first.returncode == 0, output[-4000:]
    assert "RKNPU driver: v0.9.8" in output
    report = json.loads((REPO / "build" / "demo" / "verify" / "verify-report.json").read_text())
    assert report["match"] is True and report["actual"] == "RKNPU driver: v0.9.8"
    manifest = json.loads((REPO / "build" / "demo" / "manifest.json").read_text())
    assert [s["name"] for s in manifest["steps"]] == ["lunch", "u-boot", "kernel", "module", "ubuntu", "updateimg"]
    # The demo's app, built through apps: and baked in, passes the multimodal check with its figures.
    assert "app:multimodal-demo" in {i["name"] for i in manifest["inputs"]}
    assert report["multimodal"]["imgenc_inference_ms"] > 0 and report["multimodal"]["generate"]["tokens"] == 12
    assert "  multimodal PASSED: runtime 1.2.1 accepts rknpu driver 0.9.8 on RK3576" in output
    assert "ms to encode the image" in output
    # It ends with a release signed by its throwaway key, checked as verify-release does.
    release, public = REPO / "build" / "demo" / "release", REPO / "build" / "demo" / demo_command.DEMO_KEY
    signer = verify_release(release, [public.with_name(public.name + ".pub")])
    assert first.stdout.splitlines()[-1] == f"{release}: verified, signed by {signer}"
    assert (release / "update.img").read_bytes() == (REPO / "build" / "demo" / "sdk" / UPDATE_IMG).read_bytes()

    # Another driver: only the driver's tasks and the steps it affects rerun; the board reports it,
    # and the RKLLM runtime warns that this driver is too old: the demo fails (exit 1).
    second = rk("demo", "--driver-version", "0.9.6", timeout=2400)
    output = second.stdout + second.stderr
    assert second.returncode == 1, output[-4000:]
    assert "RKNPU driver: v0.9.6" in output and "has no 'vendor-baseline' tag" not in output
    assert "rk3576-build: error: verify: verify failed: rkllm" in second.stderr
    assert "the runtime says the driver is too old" in output
    assert ".  step:kernel" in second.stdout and ".  step:updateimg" in second.stdout
    assert "-- step:ubuntu" in second.stdout and "-- step:u-boot" in second.stdout
    assert "-- app:multimodal-demo" in second.stdout, "a driver change never rebuilds an app"
    assert ".  release" not in second.stdout and not release.exists(), "no release of what failed verify"
    # No password in anything the demo wrote.
    for path in (REPO / "build" / "demo").rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert b"npu-demo-pw" not in path.read_bytes(), path


def test_demo_runs_on_new_ports_reuse_one_cache_entry_per_file(tmp_path, monkeypatch):
    """Each demo run serves its sources on a new loopback port; the download cache must not grow."""
    monkeypatch.setenv(demo_command.RKLLM_OVERLAY_ENV, "")  # prepare_sources sets it; restored after
    sources = tmp_path / "sources"
    checksums = demo_command.prepare_sources(sources, "pw")
    downloads = tmp_path / "downloads"
    driver = demo_command.driver_tarball_name("0.9.8")
    seen = []
    for _run in range(2):
        server, url = demo_command.serve(sources)
        try:  # the variables run_demo sets, then the fetch the build's fetch stage makes
            for name, value in {"DEMO_SOURCES_URL": url, "DEMO_SDK_SHA256": checksums[demo_command.SDK_TARBALL],
                                "DEMO_DRIVER_FILE": driver, "DEMO_DRIVER_SHA256": checksums[driver]}.items():
                monkeypatch.setenv(name, value)
            recipe = load_recipe(REPO / "recipes" / "demo.yaml")
            for name, spec in (("sdk", recipe.sdk), ("driver", recipe.driver)):
                result = fetch.fetch(name, spec.url, sha256=spec.sha256, downloads_dir=downloads,
                                     mirrors=recipe.mirrors, lock_file=tmp_path / "demo.lock.yaml")
                seen.append((url, result.path, result.path.stat().st_ino, result.path.stat().st_mtime_ns))
        finally:
            server.shutdown()
            server.server_close()
    assert seen[0][0] != seen[2][0]                                   # two ports
    assert [s[1:] for s in seen[:2]] == [s[1:] for s in seen[2:]]     # same files, not downloaded again
    assert sorted(p.name for p in downloads.iterdir()) == sorted(
        f"sha256-{checksums[f]}" for f in (demo_command.SDK_TARBALL, driver))
