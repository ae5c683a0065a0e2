"""The demo's own apps (sample/apps/): the multimodal demo's stand-in and its patch series, which
recipes/demo.yaml builds through `apps:` (docs/apps.md)."""

from __future__ import annotations

from pathlib import Path

SAMPLE_APPS = Path(__file__).resolve().parent / "sample" / "apps"


def sample_apps_dir() -> str:
    """$DEMO_APPS for a recipe that names it and an environment that does not set it: the sample apps in
    this installation (a checkout's or a wheel's), found when the recipe is loaded."""
    return str(SAMPLE_APPS)
