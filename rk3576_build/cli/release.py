"""`rk3576-build release`: a signed release directory of the finished build (docs/release.md).

Runs the doit task `release` after `manifest` (the build is brought up to date first); the
recipe's release section gives the defaults of --key, --supplier and --trusted. What would
stop the release (no key, no supplier, an existing directory) is said before anything builds.
The release's path is the command's output.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rk3576_build.cli.base import Command, Context


class Release(Command):
    name = "release"
    help = "make a signed release of the build: images, SBOMs, provenance, notes (docs/release.md)"
    description = ("Make a release directory of the finished build (it is built first when not up to date): "
                   "update.img and the partition images, SHA256SUMS, CycloneDX and SPDX SBOMs, SLSA provenance, "
                   "RELEASE.md, each signed with an OpenSSH key (ssh-keygen -Y sign). The recipe's release "
                   "section gives the defaults. Prints the release's path.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", type=Path, metavar="DIR",
                            help="the release directory, new or empty (default: <workdir>/release)")
        parser.add_argument("--since", metavar="DIR|oci://REF",
                            help="a previous release (a directory, or a published one, pulled and verified "
                                 "first): RELEASE.md says what changed")
        parser.add_argument("--key", metavar="KEY",
                            help="OpenSSH private key, or the .pub of a key loaded with ssh-add "
                                 "(default: release.key)")
        parser.add_argument("--supplier", metavar="NAME",
                            help="the organisation that ships the firmware, named in the SBOMs "
                                 "(default: release.supplier; one of the two is required)")
        parser.add_argument("--trusted", action="append", metavar="KEYS",
                            help="public key line or .pub/allowed_signers file (repeatable): --since must be "
                                 "signed by it, and the release is checked against it (default: release.trusted)")

    def run(self, ctx: Context, args: argparse.Namespace) -> int:
        # lazy: keeps --help fast (doit, the release library, the lock's docker edge)
        from rk3576_build.pipeline.lock import lock_workdir
        from rk3576_build.pipeline.release_stage import ReleaseSettings
        from rk3576_build.pipeline.runner import run_doit

        recipe_tasks = ctx.recipe_tasks()
        layout = recipe_tasks.layout
        settings = ReleaseSettings.of(ctx.recipe(), key=args.key, supplier=args.supplier, trusted=args.trusted,
                                      out=args.out, since=args.since)
        settings.check(layout)  # before the build: a missing key must not wait for it
        recipe_tasks.release_settings = settings
        with lock_workdir(layout.lock):
            code = run_doit(recipe_tasks, "run", ["release"])
        if code == 0:
            print(settings.target(layout))
        return code
