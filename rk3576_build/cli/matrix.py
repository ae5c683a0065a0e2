"""`rk3576-build matrix`: build each driver variant, verify each image on each board, one report.

The variants and boards come from the recipe's `matrix:` section (pipeline/matrix.py shows
its shape), a file holding such a section (--matrix-file), or the command line (--variant,
--board), the command line winning list by list.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rk3576_build.cli.base import Command, Context
from rk3576_build.core.errors import UserError


def matrix_section(path: Path) -> dict:
    """The `matrix:` section of a YAML file (or the whole file when it is the section itself)."""
    import yaml  # lazy: keeps --help fast

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"--matrix-file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"--matrix-file {path} is not YAML: {exc}") from None
    if isinstance(data, dict) and "matrix" in data:
        data = data["matrix"]
    if not isinstance(data, dict):
        raise UserError(f"--matrix-file {path}: expected a mapping with variants and boards (or a `matrix:` key)")
    return data


class MatrixCommand(Command):
    name = "matrix"
    help = "build each driver variant and verify it on each board; one report (JSON, JUnit, Markdown, HTML)"
    description = ("Build every driver variant in its own work directory (sharing the download and build "
                   "caches, so only the steps the driver touches build again), flash and verify each image "
                   "on each board (boards in parallel, one image at a time each) with the RKLLM check where "
                   "the recipe configures it, and write <root>/matrix/: matrix.json, junit.xml, summary.md "
                   "and index.html. Exit 0 when every variant passes on every board, 1 when one fails, "
                   "2 when a board could not be verified.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--variant", nargs=3, action="append", metavar=("VERSION", "URL", "SHA256"),
                            help="a driver tarball to try (repeat it); replaces the recipe's matrix.variants")
        parser.add_argument("--board", action="append", metavar="[NAME=]KIND",
                            help="virtual, console:PORT_OR_URL or place:LABGRID_PLACE (repeat it); replaces the "
                                 "recipe's matrix.boards")
        parser.add_argument("--matrix-file", type=Path, metavar="FILE",
                            help="a YAML file with the matrix section (instead of the recipe's)")
        parser.add_argument("--expected", metavar="LINE",
                            help="the version line every variant must print (default: matrix.expected, else "
                                 "verify.expected)")
        parser.add_argument("--no-rkllm", action="store_true", help="skip the RKLLM check")
        parser.add_argument("--root", type=Path, metavar="DIR",
                            help="where the variants' work dirs, the shared build cache and matrix/ go "
                                 "(default: the recipe's work directory with -matrix appended)")
        parser.add_argument("--history", type=Path, metavar="FILE.jsonl",
                            help="earlier runs to chart over time; this run is appended to it")
        parser.add_argument("--jobs", type=int, metavar="N",
                            help="variants built at once after the first, which fills the build cache "
                                 "(default 1: the boards verify one image while the next builds; more pays "
                                 "on a host with cores to spare)")

    def run(self, ctx: Context, args: argparse.Namespace) -> int:
        # lazy: keeps --help, init and verify fast (the matrix runs builds: doit, docker)
        from rk3576_build.pipeline.matrix import board_from_text, parse_matrix, run_matrix

        recipe = ctx.recipe()
        section = dict(matrix_section(args.matrix_file) if args.matrix_file else getattr(recipe, "matrix", None) or {})
        if args.variant:
            section["variants"] = [dict(zip(("version", "url", "sha256"), v, strict=True)) for v in args.variant]
        if args.board:
            section["boards"] = [board_from_text(text) for text in args.board]
        if args.expected:
            section["expected"] = args.expected
        if args.no_rkllm:
            section["rkllm"] = False
        if not section.get("variants") or not section.get("boards"):
            raise UserError("matrix: no variants or no boards: give --variant VERSION URL SHA256 (several) and "
                            "--board (virtual, console:/dev/ttyUSB0, place:NAME), or a matrix section "
                            "(--matrix-file FILE; its shape: `rk3576-build help matrix`, docs/recipes.md)")
        spec = parse_matrix(section, where=str(args.matrix_file or "matrix"))
        root = args.root or recipe.workdir.with_name(recipe.workdir.name + "-matrix")
        return run_matrix(recipe, spec, root, offline=recipe.offline, history=args.history, jobs=args.jobs).exit_code
