"""Build hook: the wheel carries the shipped recipes, patches, Dockerfile.builder and builder/.

They stay at the repository root (where recipes refer to them as ../...); the
build copies them into the package as rk3576_build/_shipped/ with the same layout.
Metadata lives in pyproject.toml.
"""

import importlib.util
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# The list lives in rk3576_build/config/shipped.py (loaded by path: the package is not importable here).
_spec = importlib.util.spec_from_file_location("_shipped", ROOT / "rk3576_build" / "config" / "shipped.py")
shipped = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shipped)
SKIP = shutil.ignore_patterns("*.local.yaml", "*.lock.yaml", "__pycache__")


class BuildWithShipped(build_py):
    def run(self):
        super().run()
        dest = Path(self.build_lib) / "rk3576_build" / shipped.INSTALLED_DIRNAME
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for name in shipped.SHIPPED:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, dest / name, ignore=SKIP)
            else:
                shutil.copy2(source, dest / name)


setup(cmdclass={"build_py": BuildWithShipped})
