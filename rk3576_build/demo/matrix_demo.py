"""`rk3576-build demo --matrix 0.9.6,0.9.7,0.9.8`: the driver matrix on the virtual board.

The sample driver tarballs served on loopback are the variants, the QEMU board is the one
board, and the SDK guide's driver (0.9.8) is what every variant must reach: 0.9.6 fails
(the RKLLM runtime warns that it is too old), 0.9.7 fails the version check (the runtime
accepts it), 0.9.8 passes. Everything goes under the work directory (default
./build/demo-matrix): the variants' work dirs, the shared build cache, the report in matrix/.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rk3576_build.config.recipe import load
from rk3576_build.config.workspace import Options
from rk3576_build.core import logs
from rk3576_build.core.errors import UserError
from rk3576_build.demo.command import DRIVER_RELEASES, FLAVORS, driver_tarball_name, stage_sources
from rk3576_build.pipeline.matrix import parse_matrix, run_matrix

log = logs.get(__name__)

DEFAULT_WORKDIR = Path("build") / "demo-matrix"
REQUIRED = "0.9.8"  # what the SDK guide (RKLLM runtime 1.2.1) needs


def versions(text: str) -> list[str]:
    """`0.9.6,0.9.7,0.9.8` -> the versions, each one the demo has a sample tarball for."""
    chosen = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in DRIVER_RELEASES]
    if not chosen or unknown:
        raise UserError(f"--matrix {text!r}: give driver versions separated by commas, each one of "
                        f"{', '.join(sorted(DRIVER_RELEASES))}")
    return list(dict.fromkeys(chosen))


def run_demo_matrix(args, options: Options) -> int:
    """Prepare the kit and the sources, serve them, and run the matrix over the demo recipe."""
    chosen = versions(args.matrix)
    recipe_name, sdk_tarball = FLAVORS[getattr(args, "flavor", "myir")]
    workdir = (args.workdir or (Path(options.workdir) if options.workdir else DEFAULT_WORKDIR)).absolute()
    sources = (args.sources or workdir / "sources").absolute()
    lock_file, checksums, server, url = stage_sources(workdir, sources, sdk_tarball)
    try:
        recipe = load(dataclasses.replace(options, recipe=recipe_name, workdir=str(workdir)))
        recipe = dataclasses.replace(recipe, lock_file=lock_file)
        spec = parse_matrix({
            "expected": f"RKNPU driver: v{REQUIRED}",
            "variants": [{"version": v, "url": f"{url}/{driver_tarball_name(v)}",
                          "sha256": checksums[driver_tarball_name(v)]} for v in chosen],
            "boards": [{"name": "virtual", "virtual": True}],
        }, where="demo --matrix")
        log.info("demo: driver matrix %s on the virtual board, each must report v%s", ", ".join(chosen), REQUIRED)
        run = run_matrix(recipe, spec, workdir, offline=recipe.offline, echo=logs.get("rk3576_build.build").info)
    finally:
        server.shutdown()
    return run.exit_code
