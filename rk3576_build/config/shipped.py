"""Where the files the tool ships live: recipes, patches, Dockerfile.builder, builder/.

In a checkout they sit at the repository root; an installed wheel carries a copy
of the same tree in the package (`rk3576_build/_shipped/`, made by setup.py's
build hook), so recipes' relative paths (`../Dockerfile.builder`) work in both.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the rk3576_build package
# What the wheel carries, relative to the root (setup.py copies exactly these).
SHIPPED = ("recipes", "patches", "Dockerfile.builder", "builder")
INSTALLED_DIRNAME = "_shipped"


def shipped_root() -> Path:
    """The directory holding recipes/, patches/, Dockerfile.builder and builder/."""
    installed = PACKAGE_DIR / INSTALLED_DIRNAME
    return installed if installed.is_dir() else PACKAGE_DIR.parent


def shipped_path(*parts: str) -> Path:
    """A shipped file or directory, e.g. shipped_path("recipes", "demo.yaml")."""
    return shipped_root().joinpath(*parts)


def is_installed() -> bool:
    """True when running from an installed wheel (not a checkout or an editable install)."""
    return (PACKAGE_DIR / INSTALLED_DIRNAME).is_dir()


def is_shipped(path: Path) -> bool:
    """Whether `path` is one of the tool's own recipes (in the checkout's recipes/ or site-packages)."""
    return Path(path).resolve().is_relative_to(shipped_path("recipes").resolve())
