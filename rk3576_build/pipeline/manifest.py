"""The build manifest: what went into a build and what came out, with checksums (JSON).

Credentials never reach it: every URL in the recipe, inputs and steps loses its user name
and password (fetch.redact), whatever the recipe dict holds.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

from rk3576_build.core.errors import UserError
from rk3576_build.core.text import redact

SCHEMA_VERSION = 1
CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (images can be gigabytes)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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
    path = Path(path)
    data = {
        **manifest,
        "schema_version": SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it 0600; a manifest is for everyone to read
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
