"""What the builder sets in every build step so two builds of the same inputs can be bit-identical.

SOURCE_DATE_EPOCH (reproducible-builds.org), and from it KBUILD_BUILD_TIMESTAMP, with fixed
KBUILD_BUILD_USER and KBUILD_BUILD_HOST (the kernel writes them into its version string; a
container's host name is random). SOURCE_DATE_EPOCH is the recipe's `builder.env.SOURCE_DATE_EPOCH`
when it sets one, else the newest modification time among the SDK tarball's members: a recorded
input decides it, not the day of the build. Reading a tarball's headers means decompressing it
once, so the value is remembered per tarball sha256 in the work directory's state
(docs/release.md#the-rebuild-check).
"""

from __future__ import annotations

import datetime
import tarfile
from collections.abc import Mapping
from pathlib import Path

from rk3576_build.config.layout import Layout
from rk3576_build.core.errors import UserError
from rk3576_build.core.files import read_json_object, write_json

BUILD_USER = "rk3576-build"
BUILD_HOST = "rk3576-build"
CACHE = "source-date-epoch.json"  # in the work directory's state/
_BUFFER = 1 << 20
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def newest_mtime(tarball: Path) -> int:
    """The newest modification time (whole seconds) among a tarball's members, read as a stream
    (gzip, bzip2, xz or none)."""
    newest = None
    try:
        with tarfile.open(tarball, mode="r|*", bufsize=_BUFFER) as archive:
            for member in archive:
                mtime = int(member.mtime)
                newest = mtime if newest is None else max(newest, mtime)
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise UserError(f"cannot read the member times of {tarball} ({exc}): set builder.env.SOURCE_DATE_EPOCH "
                        "in the recipe instead") from None
    if newest is None:
        raise UserError(f"{tarball} has no members: set builder.env.SOURCE_DATE_EPOCH in the recipe")
    return max(0, newest)


def source_date_epoch(layout: Layout) -> int:
    """The SDK tarball's newest member time, remembered in state/ per tarball sha256.

    The tarball is the one the fetch stage recorded (state/fetch-sdk.json: path, sha256)."""
    fetched = read_json_object(layout.stamp("fetch-sdk")) or {}
    digest, path = fetched.get("sha256"), fetched.get("path")
    cache = layout.state / CACHE
    known = read_json_object(cache) or {}
    if digest and known.get("sha256") == digest and isinstance(known.get("epoch"), int):
        return known["epoch"]
    if not digest or not path or not Path(path).is_file():
        raise UserError("the SDK tarball is not there to take SOURCE_DATE_EPOCH from: rerun `rk3576-build run fetch`, "
                        "or set builder.env.SOURCE_DATE_EPOCH in the recipe")
    epoch = newest_mtime(Path(path))
    write_json(cache, {"sha256": digest, "epoch": epoch, "from": Path(path).name})
    return epoch


def kbuild_timestamp(epoch: int) -> str:
    """`date -u -d @EPOCH` in the C locale (e.g. `Wed Oct  9 00:00:00 UTC 2024`), what Kbuild prints."""
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return (f"{_DAYS[moment.weekday()]} {_MONTHS[moment.month - 1]} {moment.day:2d} "
            f"{moment:%H:%M:%S} UTC {moment.year}")


def reproducible_env(epoch: int) -> dict[str, str]:
    """The variables for a given SOURCE_DATE_EPOCH."""
    return {"SOURCE_DATE_EPOCH": str(epoch), "KBUILD_BUILD_TIMESTAMP": kbuild_timestamp(epoch),
            "KBUILD_BUILD_USER": BUILD_USER, "KBUILD_BUILD_HOST": BUILD_HOST}


def parse_epoch(value: object) -> int:
    text = str(value).strip()
    if not text.isdigit():
        raise UserError(f"builder.env.SOURCE_DATE_EPOCH is {text!r}: give whole seconds since 1970 "
                        "(e.g. `git log -1 --format=%ct`)")
    return int(text)


def step_env(recipe_env: Mapping[str, object], layout: Layout) -> dict[str, str]:
    """A build step's environment: the reproducibility variables, then the recipe's builder.env
    (which wins; its SOURCE_DATE_EPOCH also sets KBUILD_BUILD_TIMESTAMP)."""
    env = {key: str(value) for key, value in recipe_env.items()}
    epoch = parse_epoch(env["SOURCE_DATE_EPOCH"]) if "SOURCE_DATE_EPOCH" in env else source_date_epoch(layout)
    return {**reproducible_env(epoch), **env}
