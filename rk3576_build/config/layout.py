"""Where everything lives inside a recipe's work directory (the one place that names its paths)."""

from __future__ import annotations

from pathlib import Path

from rk3576_build.config.model import OverlaySpec, Recipe

# Where the SDK's build puts the images, relative to the SDK root.
UPDATE_IMG = Path("output/update/Image/update.img")
IMAGE_DIR = Path("rockdev")
# Where a flashed virtual board lives, relative to the work directory.
BOARD_DIR = Path("board")


class Layout:
    """Where everything lives inside a recipe's work directory."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.root = recipe.workdir
        self.state = self.root / "state"
        self.logs = self.root / "logs"
        self.sdk = self.root / "sdk"
        self.driver = self.root / "driver"
        self.board = self.root / BOARD_DIR
        self.verify = self.root / "verify"
        self.manifest = self.root / "manifest.json"
        self.dep_file = self.root / ".doit.db"
        self.lock = self.root / ".lock"
        self.apps = self.root / "apps"
        self.release = self.root / "release"  # `release` without --out (docs/release.md)
        self.rebuild_check = self.root / "rebuild-check"  # `rebuild-check` without --out: its reports

    def rebuild_root(self) -> Path:
        """The second, fresh work directory `rebuild-check` builds the recipe in again."""
        return self.root.with_name(self.root.name + ".rebuild")

    def app(self, name: str) -> Path:
        """An app's own directory (build/apps.py: src/, build/, files/, root/, app.json)."""
        return self.apps / name

    def app_source(self, name: str) -> Path:
        """Where an app's tarball is unpacked or its git commit checked out."""
        return self.root / "app-sources" / name

    def app_log(self, name: str) -> Path:
        return self.logs / f"app-{name}.log"

    def overlays(self) -> tuple[OverlaySpec, ...]:
        """What the rootfs gets: the recipe's rootfs_overlays, then each enabled app's install tree (root/)
        as the overlay `app-<name>`."""
        return self.recipe.rootfs_overlays + tuple(OverlaySpec(source=self.app(a.name) / "root", name=a.overlay_name)
                                                   for a in self.recipe.enabled_apps)

    @property
    def kernel(self) -> Path:
        return self.sdk / self.recipe.sdk.kernel_dir

    def stamp(self, name: str) -> Path:
        return self.state / f"{name}.json"

    def step_log(self, index: int, step: str) -> Path:
        return self.logs / f"{index:02d}-{step}.log"

    @property
    def probe_log(self) -> Path:
        return self.logs / "00-probe.log"

    def accepted(self, gate: str) -> Path:
        """What a gate (its short name: probe, check, preflight) let through because the recipe accepts it,
        with the recipe's reason."""
        return self.state / f"accepted-{gate}.json"

    def failed(self, gate: str) -> Path:
        """Why a gate failed on its last run; absent once it passes (`shell` reports it)."""
        return self.state / f"failed-{gate}.json"

    def update_img(self) -> Path:
        return self.sdk / UPDATE_IMG

    @property
    def image_dir(self) -> Path:
        """The partition images rkdeveloptool writes (the SDK's rockdev/)."""
        return self.sdk / IMAGE_DIR
