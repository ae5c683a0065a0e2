"""Lock-file pins (the sha256 a source without one got on its first clean fetch) and the sha256 a fetch wants."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from rk3576_build.core.errors import UserError
from rk3576_build.core.files import atomic_write

LOCK_HEADER = (
    "# Written by rk3576-build: the sha256 of each source the recipe fetches without one.\n"
    "# Commit this file so every build gets exactly the same inputs.\n"
    "# To accept a changed file, delete its entry under `sources:` and fetch again.\n"
)
SHA_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Wanted:
    """The sha256 a source must have and where it comes from (the recipe or a lock-file pin)."""

    name: str
    sha256: str | None
    pin_file: Path | None

    def origin(self) -> str:
        return f"pinned in {self.pin_file}" if self.pin_file else "the recipe's sha256"

    def mismatch(self, actual: str) -> str:
        text = f"sha256 mismatch: expected {self.sha256} ({self.origin()}), got {actual}"
        if self.pin_file is not None:
            text += (f" (the file changed since it was pinned; if the change is expected, delete the "
                     f"`{self.name}` entry from {self.pin_file} to pin the new file)")
        return text


def check_sha256(name: str, value: str) -> str:
    digest = str(value).strip().lower()
    if not SHA_RE.fullmatch(digest):
        raise UserError(f"{name}: sha256 must be 64 hex digits, got {value!r}")
    return digest


def _load_lock(lock_file: Path) -> dict:
    if not lock_file.exists():
        return {}
    try:
        data = yaml.safe_load(lock_file.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read the lock file {lock_file}: {exc}; fix or delete it") from None
    if not isinstance(data, dict) or not isinstance(data.get("sources", {}), dict):
        raise UserError(f"the lock file {lock_file} is not `sources: {{<name>: {{url, sha256, size}}}}`; "
                        "fix or delete it")
    return data


def read_pin(lock_file: Path, name: str, url: str) -> str | None:
    """The pinned sha256 of `name`, if pinned for this same URL."""
    entry = _load_lock(lock_file).get("sources", {}).get(name)
    if not isinstance(entry, dict) or entry.get("url") != url:
        return None       # no pin, or the recipe now points elsewhere: pin afresh
    digest = str(entry.get("sha256", "")).lower()
    if not SHA_RE.fullmatch(digest):
        raise UserError(f"{lock_file}: sources.{name}.sha256 is not a sha256 ({digest!r}); "
                        f"delete the `{name}` entry to pin it again")
    return digest


def write_pin(lock_file: Path, name: str, url: str, digest: str, size: int) -> None:
    data = _load_lock(lock_file)
    sources = data.setdefault("sources", {})
    sources[name] = {"url": url, "sha256": digest, "size": size}
    data["sources"] = dict(sorted(sources.items()))
    atomic_write(lock_file, LOCK_HEADER + yaml.safe_dump(data, sort_keys=False))
