"""Shared test plumbing: tool markers that skip locally but fail under CI=true, and the session fixtures.

Fixtures live here, never imported into test modules: an imported fixture is set up once per
importing module (pytest-dev/pytest#3217), so a board image would be built once per test file.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess

import pytest

from helpers import BASE_IMAGE, BOARD_PASSWORD, REPO, unavailable
from rk3576_build.build.container import BuilderImage, ensure_builder_image
from rk3576_build.demo import command as demo
from rk3576_build.demo.board_kit import find_kit
from rk3576_build.demo.vboard import build_board_image, password_hash


def _docker_ok() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def _qemu_ok() -> bool:
    return bool(shutil.which("qemu-system-aarch64")) and find_kit() is not None


def _registry_ok() -> bool:
    """Debian's docker-registry (Docker Distribution) and the oras client for the build cache."""
    return bool(shutil.which("docker-registry")) and importlib.util.find_spec("oras") is not None


def _labgrid_ok() -> bool:
    """labgrid's coordinator, exporter and client, and Debian's ser2net (in /usr/sbin)."""
    tools = ("labgrid-coordinator", "labgrid-exporter", "labgrid-client")
    return all(shutil.which(tool) for tool in tools) and bool(shutil.which("ser2net")
                                                             or os.path.exists("/usr/sbin/ser2net"))


def _browser_ok() -> bool:
    """Debian's chromium, run headless (the matrix report's page)."""
    return bool(shutil.which("chromium"))


_PROBES = {"docker": _docker_ok, "qemu": _qemu_ok, "registry": _registry_ok, "labgrid": _labgrid_ok,
           "browser": _browser_ok}
_probe_cache: dict[str, bool] = {}


def pytest_runtest_setup(item):
    for name, probe in _PROBES.items():
        if item.get_closest_marker(name) is None:
            continue
        if name not in _probe_cache:
            _probe_cache[name] = probe()
        if not _probe_cache[name]:
            unavailable(f"{name} is not available (run scripts/setup-host.sh)")


@pytest.fixture(autouse=True)
def _fresh_package_logger():
    """An in-process CLI run configures the package's logger (own handler, no propagation);
    each test starts from an unconfigured one so caplog sees what modules log."""
    logger = logging.getLogger("rk3576_build")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    for handler in saved[0]:
        logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
    yield
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    for handler in saved[0]:
        logger.addHandler(handler)
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


@pytest.fixture(scope="session")
def board_password_hash() -> str:
    """The hash of BOARD_PASSWORD the virtual boards' images carry."""
    return password_hash(BOARD_PASSWORD)


@pytest.fixture(scope="session")
def board_images(tmp_path_factory, board_password_hash):
    """driver version -> BoardImage, each built on first use, once per run."""
    root = tmp_path_factory.mktemp("boards")
    cache = {}

    def get(version: str = "0.9.8"):
        if version not in cache:
            cache[version] = build_board_image(root / version, driver_version=version,
                                               password_hash=board_password_hash)
        return cache[version]

    return get


@pytest.fixture(scope="session")
def builder_image() -> BuilderImage:
    """The real builder image (built once; reused by its hash label afterwards)."""
    return ensure_builder_image(REPO / "Dockerfile.builder", {"BASE": BASE_IMAGE}, log=lambda _line: None)


@pytest.fixture(scope="session")
def sources(tmp_path_factory):
    """(url, sha256 by file name, directory): the sample SDK in both spellings and the driver tarballs
    on a loopback server, for recipes made by helpers.write_recipe."""
    directory = tmp_path_factory.mktemp("sources")
    checksums = demo.prepare_sources(directory, "unused-in-this-test")
    server, url = demo.serve(directory)
    yield url, checksums, directory
    server.shutdown()
