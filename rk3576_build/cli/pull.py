"""`rk3576-build pull REF DIR --trusted KEYS`: fetch a published release and verify it (docs/release.md).

The directory appears only when every blob and signature checked out; exit 1 (nothing written)
when something does not verify.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rk3576_build.cli.base import Command, Context
from rk3576_build.core import logs

log = logs.get(__name__)


class Pull(Command):
    name = "pull"
    help = "fetch a published release into a new directory and verify it (exit 1: nothing written)"
    description = ("Fetch a release published with `publish` (oci://HOST/REPO:TAG or @sha256:...) into a new "
                   "directory: the signed SHA256SUMS first, every blob against it, then the whole directory "
                   "with verify-release. Prints the directory and the signer.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("reference", metavar="REF", help="oci://HOST/REPO:TAG or oci://HOST/REPO@sha256:...")
        parser.add_argument("dest", type=Path, metavar="DIR", help="a new (or empty) directory")
        parser.add_argument("--trusted", action="append", required=True, metavar="KEYS",
                            help="the signer: a public key line or a .pub/allowed_signers file (repeatable)")

    def run(self, ctx: Context, args: argparse.Namespace) -> int:
        # lazy: keeps --help fast (the release library, the registry client)
        from rk3576_build.core import signing
        from rk3576_build.release import publish

        pulled = publish.pull(args.reference, args.dest, signing.load_trusted(args.trusted), echo=log.info)
        print(f"{pulled.path}: verified, signed by {pulled.signer}")
        return 0
