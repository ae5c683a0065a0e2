"""The build manifest: what went into a build and what came out, with checksums (JSON).

`assemble` gathers it from the stages' stamps; `build_manifest` checksums the artifacts.
Credentials never reach it: every URL in the recipe, inputs and steps loses its user name
and password (core.text.redact), whatever the recipe dict holds.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from pathlib import Path

from rk3576_build.build import rootfs_overlays
from rk3576_build.config.layout import Layout
from rk3576_build.config.model import Recipe
from rk3576_build.core.errors import UserError
from rk3576_build.core.files import sha256_file, write_json
from rk3576_build.core.text import redact, redact_url
from rk3576_build.pipeline.stamps import read_stamp

SCHEMA_VERSION = 1

__all__ = ["SCHEMA_VERSION", "assemble", "build_manifest", "sha256_file", "write_manifest"]


def build_manifest(*, recipe: Mapping, inputs: Sequence[Mapping], steps: Sequence[Mapping], artifacts_root: Path,
                   artifacts: Sequence[str]) -> dict:
    """The manifest dict; each artifact (relative to `artifacts_root`) gets its size and sha256.

    URLs anywhere in `recipe`, `inputs` and `steps` are stripped of credentials.
    """
    artifacts_root = Path(artifacts_root)
    entries = []
    for rel in artifacts:
        path = artifacts_root / rel
        if not path.is_file():
            raise UserError(f"artifact {rel} is missing from {artifacts_root}: "
                            "rerun the build step that produces it (or fix `artifacts` in the recipe)")
        entries.append({"path": rel, "size": path.stat().st_size, "sha256": sha256_file(path)})
    return {
        "recipe": redact(dict(recipe)),
        "inputs": [redact(dict(item)) for item in inputs],
        "steps": [redact(dict(item)) for item in steps],
        "artifacts": entries,
    }


def write_manifest(path: Path, manifest: Mapping) -> Path:
    """Write `manifest` as JSON atomically, adding the schema version and creation time (UTC)."""
    data = {
        **manifest,
        "schema_version": SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    # 0644: a manifest is for everyone to read; fsync: it is what a release is made of.
    return write_json(path, data, indent=2, mode=0o644, fsync=True)


def assemble(recipe: Recipe, layout: Layout, *, patches: Sequence[Path], accepted: list[dict]) -> dict:
    """The manifest of the build in `layout`, from the stages' stamps: sources, patches, builder image,
    apps (what each app.json says), rootfs overlays, each step's command and timing, the artifacts, and
    `accepted` (what the gates let through because the recipe said so: builder.accept_probe,
    builder.accept, preflight.accept)."""
    fetched = {n: read_stamp(layout.stamp(f"fetch-{n}")) for n in ("sdk", "driver")}
    baseline = read_stamp(layout.stamp("kernel-baseline"))
    overlay = read_stamp(layout.stamp("kernel-overlay"))
    # The kernel tree's HEAD after the overlay and the patches, as preflight checked it (the release's commit).
    kernel_commit = read_stamp(layout.stamp("kernel-preflight"))["head"]
    image = read_stamp(layout.state / "builder-image.json")
    inputs = [
        {"name": "sdk", "url": redact_url(recipe.sdk.url), "sha256": fetched["sdk"]["sha256"],
         "size": fetched["sdk"]["size"], "kernel_version": baseline["kernel_version"],
         "kernel_commit": kernel_commit},
        {"name": "driver", "url": redact_url(recipe.driver.url),
         "sha256": fetched["driver"]["sha256"], "size": fetched["driver"]["size"],
         "version": overlay["version"], "date": overlay["date"], "commit": overlay["commit"]},
        *({"name": f"patch:{p.name}", "sha256": sha256_file(p)} for p in patches),
        {"name": "builder", "image": image["tag"], "image_id": image["id"],
         "config_hash": image["config_hash"]},
        *_app_inputs(recipe, layout),
        *_overlay_inputs(recipe, layout),
    ]
    steps = []
    for step in recipe.steps:
        timing = read_stamp(layout.state / f"step-{step.name}.timing.json")
        steps.append({"name": step.name, "command": timing.get("command", step.command),
                      "target": timing.get("target"), "alternatives": list(step.targets),
                      "duration": timing["duration"], "exit_status": timing["exit_status"],
                      "log": timing["log"], "cache": timing.get("cache")})
    data = build_manifest(recipe=recipe.to_dict(), inputs=inputs, steps=steps,
                          artifacts_root=layout.sdk, artifacts=recipe.artifacts)
    data["accepted"] = accepted
    return data


def _app_inputs(recipe: Recipe, layout: Layout) -> list[dict]:
    """The manifest's `app:<name>` inputs: what each app's build recorded (build/apps.py's app.json)."""
    return [{**read_stamp(layout.app(app.name) / "app.json"), "name": f"app:{app.name}"}
            for app in recipe.enabled_apps]


def _overlay_inputs(recipe: Recipe, layout: Layout) -> list[dict]:
    """The manifest's `overlay:<name>` inputs: every file with its mode and sha256."""
    if not layout.overlays():
        return []
    stamp = read_stamp(layout.stamp("rootfs-overlays"))
    sources = {o.name: str(o.source) for o in layout.overlays()}
    return [{"name": f"overlay:{o['name']}", "source": sources.get(o["name"]), "sdk_dir": d,
             "sha256": rootfs_overlays.digest(o["files"]), "files": o["files"]}
            for o, d in zip(stamp["overlays"], stamp["dirs"], strict=True)]
