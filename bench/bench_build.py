"""Bench: the orchestrated containerized build of the sample SDK vs plain `docker run` commands.

Both run the same six build.sh steps (lunch, u-boot, kernel, module, ubuntu,
updateimg) in the same builder image on a fresh copy of the sample SDK; the
orchestrated side goes through buildsh.run_build_step (menu answering, live
log streaming, uid mapping, cleanup), the baseline through a bash script.

    python3 bench/bench_build.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rk3576_build.build.buildsh import run_build_step  # noqa: E402
from rk3576_build.build.container import REDUCED_PRIVILEGES, Mount, ensure_builder_image  # noqa: E402
from rk3576_build.demo.board_kit import ensure_kit  # noqa: E402
from rk3576_build.demo.sample_sdk import write_sample_sdk  # noqa: E402

BASE = "rk3576-build/debian-base:bookworm"
DEFCONFIG = "rockchip_rk3576_myd_lr3576_defconfig"
STEPS = [("lunch", False), ("u-boot", False), ("kernel", False), ("module", False), ("ubuntu", True),
         ("updateimg", False)]


def orchestrated(image: str, sdk: Path, kit: Path, logs: Path) -> float:
    start = time.perf_counter()
    for index, (step, privileged) in enumerate(STEPS, start=1):
        run_build_step(image=image, sdk_dir=sdk, step=step, command=f"./build.sh {step}", privileged=privileged,
                       env={"BOARD_KIT": "/opt/board-kit"}, mounts=[Mount(kit, "/opt/board-kit", True)],
                       log_path=logs / f"{index:02d}-{step}.log", defconfig=DEFCONFIG, echo=None)
    return time.perf_counter() - start


def privileged_flags(image: str) -> list[str]:
    """--privileged where the engine grants it, else the same reduced set container.py falls back to."""
    if subprocess.run(["docker", "run", "--rm", "--privileged", image, "true"], capture_output=True).returncode == 0:
        return ["--privileged"]
    flags = [f"--cap-add={cap}" for cap in REDUCED_PRIVILEGES["cap_add"]]
    flags += [f"--security-opt={opt}" for opt in REDUCED_PRIVILEGES["security_opt"]]
    flags += [f"--device-cgroup-rule={rule}" for rule in REDUCED_PRIVILEGES["device_cgroup_rules"]]
    return flags


def shell_script(image: str, sdk: Path, kit: Path, privileged: list[str]) -> str:
    common = ["docker", "run", "--rm", "-v", f"{sdk}:/sdk", "-w", "/sdk", "-v", f"{kit}:/opt/board-kit:ro",
              "-v", "rk3576-build-ccache:/ccache", "-e", "CCACHE_DIR=/ccache", "-e", "BOARD_KIT=/opt/board-kit",
              "-e", f"BUILDER_UID={os.getuid()}", "-e", f"BUILDER_GID={os.getgid()}"]
    lines = ["set -e"]
    for step, needs_privileges in STEPS:
        flags = (privileged if needs_privileges else []) + (["-i"] if step == "lunch" else [])
        command = shlex.join([*common, *flags, image, "bash", "-c", f"./build.sh {step}"])
        lines.append(f"echo 7 | {command} >/dev/null 2>&1" if step == "lunch" else f"{command} >/dev/null 2>&1")
    return "\n".join(lines) + "\n"


def baseline(script: str) -> float:
    start = time.perf_counter()
    subprocess.run(["bash", "-c", script], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    kit = ensure_kit().root
    image = ensure_builder_image(REPO / "Dockerfile.builder", {"BASE": BASE}, log=lambda _line: None).tag
    privileged = privileged_flags(image)
    ours, plain = [], []
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        for round_ in range(args.rounds):
            for label, times in (("orchestrated", ours), ("baseline", plain)):
                sdk = write_sample_sdk(Path(tmp) / f"{label}-{round_}" / "sdk", driver_version="0.9.8")
                if label == "orchestrated":
                    times.append(orchestrated(image, sdk, kit, sdk.parent / "logs"))
                else:
                    times.append(baseline(shell_script(image, sdk, kit, privileged)))
                assert (sdk / "output" / "update" / "Image" / "update.img").is_file()
                shutil.rmtree(sdk.parent)
    o, b = statistics.median(ours), statistics.median(plain)
    best = min(ours) / min(plain)
    print(f"image: {image}; privileged step run with: {' '.join(privileged)}")
    print(f"six build.sh steps of the sample SDK, median of {args.rounds} rounds:")
    print(f"  orchestrated (run_build_step): {o:6.2f} s   runs: {', '.join(f'{t:.2f}' for t in ours)}")
    print(f"  plain docker run script:       {b:6.2f} s   runs: {', '.join(f'{t:.2f}' for t in plain)}")
    print(f"  overhead ratio: median {o / b:.2f}x ({(o - b) / len(STEPS) * 1000:+.0f} ms per step), "
          f"best-of {best:.2f}x ({(min(ours) - min(plain)) / len(STEPS) * 1000:+.0f} ms per step)")


if __name__ == "__main__":
    main()
