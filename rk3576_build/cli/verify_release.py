"""`rk3576-build verify-release DIR --trusted KEYS`: check a release's signatures and every file.

Exit 0 and the signer's fingerprint when everything verifies; exit 1 naming each file that does
not (changed, missing, unlisted, unsigned or signed by another key); 2 for a usage problem.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rk3576_build.cli.base import Command, Context


class VerifyRelease(Command):
    name = "verify-release"
    help = "check a release's signatures, every file's sha256 and that nothing else is there (exit 0 or 1)"
    description = ("Check a release directory: SHA256SUMS.sig, the SBOMs' and the provenance's signatures by a "
                   "trusted key, every listed file's sha256, and that no unlisted file sits beside them. Exit 0 "
                   "and the signer's fingerprint, or 1 naming every problem (docs/release.md).")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("release", type=Path, metavar="DIR", help="the release directory")
        parser.add_argument("--trusted", action="append", required=True, metavar="KEYS",
                            help="the signer: a public key line or a .pub/allowed_signers file (repeatable)")

    def run(self, ctx: Context | None, args: argparse.Namespace) -> int:
        # lazy: keeps --help fast (the release library)
        from rk3576_build.core import signing
        from rk3576_build.release import bundle

        signer = bundle.verify_release(args.release, signing.load_trusted(args.trusted))
        print(f"{args.release}: verified, signed by {signer}")
        return 0
