"""Shared test plumbing: tool markers that skip locally but fail under CI=true."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _docker_ok() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def _qemu_ok() -> bool:
    from rk3576_build.demo.board_kit import find_kit

    return bool(shutil.which("qemu-system-aarch64")) and find_kit() is not None


def _registry_ok() -> bool:
    """Debian's docker-registry (Docker Distribution) and the oras client for the build cache."""
    import importlib.util

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
            message = f"{name} is not available (run scripts/setup-host.sh)"
            if IN_CI:
                pytest.fail(f"CI=true: {message}", pytrace=False)
            pytest.skip(message)


@pytest.fixture(autouse=True)
def _fresh_package_logger():
    """An in-process CLI run configures the package's logger (own handler, no propagation);
    each test starts from an unconfigured one so caplog sees what modules log."""
    import logging

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
