"""The `release` stage: a signed release directory from a finished build (release/bundle.py does the work).

Its settings are the recipe's `release:` section with the `release` command's options on top
(ReleaseSettings); `check()` says what is missing in one line before any build runs. A previous
release given as an `oci://` reference is pulled (and verified) into the work directory first.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rk3576_build.config.layout import Layout
from rk3576_build.config.model import Recipe
from rk3576_build.core import signing
from rk3576_build.core.errors import UserError
from rk3576_build.release import bundle, publish, sbom

_log = logging.getLogger(__name__)

OCI_SCHEMES = ("oci://", "oci+http://")


def is_reference(text: str | None) -> bool:
    """Is `text` a registry reference (oci://...) rather than a directory?"""
    return bool(text) and str(text).startswith(OCI_SCHEMES)


@dataclass(frozen=True)
class ReleaseSettings:
    """What a release is signed with and says: the recipe's release section, the command line on top."""

    key: Path | None = None
    supplier: str | None = None
    sdk_supplier: str | None = None
    trusted: tuple[str, ...] = ()  # public key lines
    out: Path | None = None        # None: the work directory's release/
    since: str | None = None       # a previous release: a directory or an oci:// reference

    @classmethod
    def of(cls, recipe: Recipe, *, key: str | Path | None = None, supplier: str | None = None,
           trusted: Sequence[str] | None = None, out: Path | None = None, since: str | None = None) -> ReleaseSettings:
        """The recipe's settings with what the command line gave (paths on it relative to the current directory)."""
        spec = recipe.release
        keys = (signing.load_trusted(list(trusted)) if trusted
                else signing.load_trusted(list(spec.trusted), base=recipe.path.parent))
        return cls(key=Path(key).expanduser().absolute() if key else spec.key,
                   supplier=supplier if supplier is not None else spec.supplier,
                   sdk_supplier=spec.sdk_supplier, trusted=tuple(keys),
                   out=Path(out).absolute() if out else None, since=since)

    def target(self, layout: Layout) -> Path:
        """Where the release goes."""
        return self.out or layout.release

    def check(self, layout: Layout) -> None:
        """UserError (one line) for what would stop the release, before anything is built."""
        if not self.key:
            raise UserError("no signing key: give --key KEY (an OpenSSH private key, or the .pub of a key "
                            "loaded with ssh-add) or set release.key in the recipe")
        if not self.key.is_file():
            raise UserError(f"signing key {self.key} not found: give a private key file, or the .pub of a "
                            "key loaded with ssh-add")
        if not (self.supplier or "").strip():
            raise UserError("no supplier: give --supplier NAME (the organisation that ships the firmware, "
                            "which the SBOMs must name) or set release.supplier in the recipe")
        out = self.target(layout)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UserError(f"release directory {out} already exists: give another --out or remove it")
        if self.since and is_reference(self.since):
            if not self.trusted:
                raise UserError(f"--since {self.since} is pulled and verified first: give the previous "
                                "release's signer with --trusted KEYS (or release.trusted in the recipe)")
        elif self.since and not (Path(self.since) / bundle.SUMS).is_file():
            raise UserError(f"--since {self.since} is not a release directory (no {bundle.SUMS})")


def make(recipe: Recipe, layout: Layout, settings: ReleaseSettings, *,
         echo: Callable[[str], None] = _log.info) -> Path:
    """Make the release of the build in `layout` (its manifest must be written); the release's path."""
    settings.check(layout)
    key, supplier = settings.key, (settings.supplier or "").strip()
    assert key is not None  # check() said so otherwise

    def release(since: Path | None) -> Path:
        return bundle.make_release(settings.target(layout), manifest_path=layout.manifest, sdk_dir=layout.sdk,
                                   key=key, supplier=supplier, images_dir=layout.image_dir, since=since,
                                   trusted=list(settings.trusted) or None,
                                   sdk_supplier=settings.sdk_supplier or sbom.DEFAULT_SDK_SUPPLIER, echo=echo)

    if not is_reference(settings.since):
        return release(Path(settings.since) if settings.since else None)
    layout.root.mkdir(parents=True, exist_ok=True)
    # Beside the build: a previous release of the real SDK is gigabytes, more than /tmp may hold.
    with tempfile.TemporaryDirectory(prefix=".release-since-", dir=layout.root) as tmp:
        previous = publish.pull(str(settings.since), Path(tmp) / "previous", list(settings.trusted), echo=echo)
        return release(previous.path)
