"""`rk3576-build publish oci://HOST/REPO:TAG`: push a release as one OCI artifact (docs/release.md#publishing).

Prints the pinned reference (`oci://HOST/REPO@sha256:...`), which cannot move.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rk3576_build.cli.base import Command, Context
from rk3576_build.core import logs

log = logs.get(__name__)


class Publish(Command):
    name = "publish"
    help = "push a release to an OCI registry as one artifact; prints its pinned reference"
    description = ("Push a release directory to an OCI registry (oci://HOST[:PORT]/REPO:TAG) as one artifact: "
                   "the images as layers with their media types, the SBOMs, provenance and signatures beside "
                   "them, org.opencontainers.image.* annotations. Credentials: `docker login HOST`, or "
                   "RK3576_REGISTRY_USER/RK3576_REGISTRY_PASSWORD. Prints oci://HOST/REPO@sha256:...")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("target", metavar="oci://HOST/REPO:TAG", help="where to publish (a tag)")
        parser.add_argument("--release", type=Path, metavar="DIR",
                            help="the release directory (default: <workdir>/release)")
        parser.add_argument("--trusted", action="append", metavar="KEYS",
                            help="verify the release against this signer first (a public key line or .pub file; "
                                 "repeatable); without it, the release must be complete")
        parser.add_argument("--revision", metavar="REV",
                            help="org.opencontainers.image.revision (default: the kernel tree's commit)")
        parser.add_argument("--source", metavar="URL",
                            help="org.opencontainers.image.source (default: the SDK's URL, credentials removed)")

    def run(self, ctx: Context, args: argparse.Namespace) -> int:
        # lazy: keeps --help fast (the release library, the registry client)
        from rk3576_build.config.layout import Layout
        from rk3576_build.core import signing
        from rk3576_build.release import publish

        release = args.release or Layout(ctx.recipe()).release
        keys = signing.load_trusted(args.trusted) if args.trusted else None
        published = publish.publish(release, args.target, trusted=keys, revision=args.revision, source=args.source,
                                    echo=log.info)
        print(published.pinned)
        return 0
