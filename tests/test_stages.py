"""The stages run as plain methods, without doit (tests/test_layers.py checks who imports doit)."""

from __future__ import annotations

import yaml

from helpers import REPO
from rk3576_build.config.recipe import load_recipe
from rk3576_build.demo import command as demo
from rk3576_build.pipeline.stages import Stages, read_stamp


def test_source_and_kernel_stages_run_directly_without_doit(tmp_path, sources):
    url, checksums, _ = sources
    data = yaml.safe_load((REPO / "recipes" / "demo.yaml").read_text())
    name = demo.driver_tarball_name("0.9.8")
    data["workdir"] = str(tmp_path / "work")
    data["downloads"] = str(tmp_path / "downloads")
    data["sdk"]["url"] = f"{url}/{demo.SDK_TARBALL}"
    data["driver"].update(version="0.9.8", url=f"{url}/{name}", sha256=checksums[name])
    data["patches"]["dir"] = str(REPO / "patches" / "demo")
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(data))
    lines: list[str] = []
    stages = Stages(load_recipe(tmp_path / "recipe.yaml"), echo=lines.append)
    for source in ("sdk", "driver"):
        stages.fetch(source)
        stages.unpack(source)
    stages.baseline()
    stages.overlay()
    stages.patches()
    stages.preflight()

    layout = stages.layout
    assert read_stamp(layout.stamp("kernel-overlay"))["version"] == "0.9.8"
    assert any(line.startswith("overlaid rknpu 0.9.8") for line in lines), lines
    assert any(line.startswith("preflight: ") and "finding(s)" in line for line in lines), lines
    for stamp in ("unpack-sdk", "kernel-baseline", "kernel-patches", "kernel-preflight"):
        assert read_stamp(layout.stamp(stamp))["tree"] == read_stamp(layout.stamp("kernel-baseline"))["tree"]
    assert not layout.dep_file.exists()  # doit never ran
