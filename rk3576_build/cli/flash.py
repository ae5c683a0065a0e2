"""`rk3576-build flash`: put the built image on the board (the recipe's flash section fills the defaults).

The tools' progress goes to the log; what was flashed, in one line, is the command's output.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

from rk3576_build.cli.base import Command, Context, finish
from rk3576_build.core import logs
from rk3576_build.core.errors import UserError

log = logs.get(__name__)


class Flash(Command):
    name = "flash"
    help = "flash update.img to a board (upgrade_tool, rkdeveloptool, or the virtual board)"
    description = "Flash the built image to the board (or to the demo's virtual board)."

    def __init__(self, defaults: Mapping | None = None, *, sdk_dir: Path | None = None,
                 work_dir: Path | None = None):
        self.defaults = dict(defaults or {})  # the recipe's flash section
        self.sdk_dir = sdk_dir  # where the images are by default
        self.work_dir = work_dir  # where the virtual board lives by default

    def configure(self, ctx: Context) -> None:
        from rk3576_build.config.layout import Layout  # lazy: keeps --help fast (the recipe model)

        recipe = ctx.recipe()
        layout = Layout(recipe)
        self.defaults, self.sdk_dir, self.work_dir = recipe.section("flash"), layout.sdk, layout.root

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from rk3576_build.config.model import FLASH_METHODS  # lazy: keeps --help fast (dataclasses)

        method = self.defaults.get("method") or "upgrade_tool"
        parser.add_argument("--method", choices=FLASH_METHODS, default=method, help=f"how to flash (default: {method})")
        parser.add_argument("--image", type=Path, help="update.img (default: <sdk>/output/update/Image/update.img)")
        parser.add_argument("--image-dir", type=Path,
                            help="directory of partition images for rkdeveloptool (default: <sdk>/rockdev)")
        parser.add_argument("--board-dir", type=Path, help="virtual board directory (default: <workdir>/board)")
        parser.add_argument("--tool", help="path of upgrade_tool or rkdeveloptool")
        parser.add_argument("--partition", action="append", dest="partitions", metavar="NAME",
                            help="rkdeveloptool: write only this partition (repeatable), e.g. boot")

    def parse(self, argv: Sequence[str]) -> argparse.Namespace:
        from rk3576_build.config.model import FLASH_METHODS  # lazy: keeps --help fast (dataclasses)

        method = self.defaults.get("method", "upgrade_tool")
        if method not in FLASH_METHODS:
            raise UserError(f"recipe flash.method is {method!r}; choose one of {', '.join(FLASH_METHODS)}")
        return super().parse(argv)

    def run(self, ctx: Context | None, args: argparse.Namespace) -> int:
        # lazy: keeps --help fast
        from rk3576_build.board.flash import flash
        from rk3576_build.config.layout import BOARD_DIR, IMAGE_DIR, UPDATE_IMG

        sdk = self.sdk_dir
        done = flash(args.method,
                     update_img=args.image or (sdk / UPDATE_IMG if sdk else None),
                     image_dir=args.image_dir or (sdk / IMAGE_DIR if sdk else None),
                     board_dir=args.board_dir or (self.work_dir / BOARD_DIR if self.work_dir else None),
                     tool=args.tool or self.defaults.get("tool"),
                     partitions=args.partitions or self.defaults.get("partitions"),
                     echo=log.info)
        print(done)
        return 0


def main(argv: Sequence[str], defaults: Mapping | None = None, sdk_dir: Path | None = None,
         work_dir: Path | None = None) -> int:
    """`rk3576-build flash` over `defaults` (a flash section) instead of a recipe's; 0, or 2 on a user error."""
    logs.setup(0)
    command = Flash(defaults, sdk_dir=Path(sdk_dir) if sdk_dir else None,
                    work_dir=Path(work_dir) if work_dir else None)
    return finish(lambda: command.run(None, command.parse(argv)))
