"""Host checks: what Rockchip's build.sh needs from the build host, checked before a long step.

Two sources, run in ONE builder container: the project's own table of known
requirements (REQUIREMENTS, each a small POSIX-sh probe) and the SDK's own
`device/rockchip/common/scripts/check-*.sh`, run the way the framework runs them
(from the SDK root, with the selected `output/.config` exported). Requirements of
the host kernel itself (binfmt_misc for aarch64) are probed on the host.
"""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rk3576_build.build.container import Mount, StepFailed, run_step
from rk3576_build.config.rules import refuse_unknown_ids
from rk3576_build.core.errors import UserError

_log = logging.getLogger(__name__)

ALL, KERNEL, ROOTFS = "all steps", "kernel", "rootfs"
BUILDER, HOST = "builder", "host"
SDK_SCRIPTS = "device/rockchip/common/scripts"
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
PROBE_TIMEOUT = 300  # seconds for one SDK check script
_MARK = "@@rk3576-hostcheck@@"

_FIX_IMAGE = ("the builder image lacks it: add it to Dockerfile.builder, or name the package in "
              "the recipe's builder.build_args.EXTRA_PACKAGES")


@dataclass(frozen=True)
class Requirement:
    """A known host requirement: `probe` (POSIX sh) exits 0 when it is met; its output is the evidence."""

    id: str
    needed_by: str  # ALL, KERNEL or ROOTFS
    title: str
    probe: str
    fix: str
    where: str = BUILDER  # or HOST: probed on the machine that runs the tool


def _header(header: str, package: str) -> str:
    return ("command -v gcc >/dev/null || { echo 'gcc: not installed'; exit 1; }\n"
            f"if out=$(echo '#include <{header}>' | gcc -E -x c - -o /dev/null 2>&1); "
            f"then echo '{header}: found ({package})'; else echo \"$out\" | head -n 3; exit 1; fi")


# From domain.md, "The real Rockchip Linux SDK build framework" (host checks).
REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement(
        id="python3", needed_by=ALL,
        title="python3 >= 3.6 runs (kernel/scripts/mkbootimg, the framework's helpers)",
        probe="command -v python3 >/dev/null || { echo 'python3: not installed'; exit 1; }\n"
              "python3 -c 'import sys; print(\"python3\", sys.version.split()[0]); "
              "sys.exit(sys.version_info < (3, 6))' 2>&1 || { echo 'older than 3.6'; exit 1; }",
        fix=f"install python3 and python-is-python3: {_FIX_IMAGE}"),
    Requirement(
        id="libc6-dev", needed_by=ALL,
        title="the host C compiler builds against libc headers (kconfig's conf.c includes locale.h)",
        probe="command -v gcc >/dev/null || { echo 'gcc: not installed'; exit 1; }\n"
              "d=$(mktemp -d); printf '#include <locale.h>\\nint main(void){return 0;}\\n' > \"$d/t.c\"\n"
              "if gcc -o \"$d/t\" \"$d/t.c\" > \"$d/err\" 2>&1; then\n"
              "  echo 'gcc builds a program that includes locale.h'; rm -rf \"$d\"; exit 0\n"
              "fi\nhead -n 3 \"$d/err\"; rm -rf \"$d\"; exit 1",
        fix=f"install gcc and libc6-dev (`./build.sh lunch` compiles kconfig with them): {_FIX_IMAGE}"),
    Requirement(
        id="lz4-favor-decspeed", needed_by=KERNEL,
        title="lz4 knows --favor-decSpeed (lz4 >= 1.9.4; the kernel step's check-kernel.sh requires it)",
        probe="command -v lz4 >/dev/null || { echo 'lz4: not installed'; exit 1; }\n"
              "v=$(lz4 --version 2>&1 | head -n 1)\n"
              "lz4 -h 2>&1 | grep -q favor-decSpeed && echo \"$v\" "
              "|| { echo \"$v: no --favor-decSpeed\"; exit 1; }",
        fix="use lz4 >= 1.9.4 in the builder: Debian bookworm's is; on an older base (Ubuntu 22.04 has "
            "1.9.3) Dockerfile.builder builds lz4 1.9.4 from its build args LZ4_SOURCE (default: the "
            "release tarball in the base's own apt archive) and LZ4_SOURCE_SHA256, unless the recipe's "
            "builder.build_args set LZ4_SOURCE empty; a custom Dockerfile must do the same"),
    Requirement(
        id="openssl-headers", needed_by=KERNEL, title="OpenSSL headers (openssl/ssl.h) for the kernel's host tools",
        probe=_header("openssl/ssl.h", "libssl-dev"),
        fix=f"install libssl-dev: {_FIX_IMAGE}"),
    Requirement(
        id="gmp-headers", needed_by=ROOTFS, title="GMP headers (gmp.h)",
        probe=_header("gmp.h", "libgmp-dev"),
        fix=f"install libgmp-dev: {_FIX_IMAGE}"),
    Requirement(
        id="mpc-headers", needed_by=ROOTFS, title="MPC headers (mpc.h)",
        probe=_header("mpc.h", "libmpc-dev"),
        fix=f"install libmpc-dev: {_FIX_IMAGE}"),
    Requirement(
        id="mke2fs-metadata-csum-seed", needed_by=ROOTFS,
        title="mke2fs does not enable metadata_csum_seed (the SDK's e2fsprogs cannot handle it)",
        probe="command -v mke2fs >/dev/null || { echo 'mke2fs: not installed'; exit 1; }\n"
              "v=$(mke2fs -V 2>&1 | head -n 1)\n"
              "if grep -nw metadata_csum_seed /etc/mke2fs.conf; then echo \"$v enables it\"; exit 1; fi\n"
              "echo \"$v: no metadata_csum_seed in /etc/mke2fs.conf\"",
        fix="remove metadata_csum_seed from /etc/mke2fs.conf in the builder image (Dockerfile.builder's "
            "builder/install-host-packages.sh does), or use e2fsprogs < 1.47; install e2fsprogs if "
            "mke2fs is missing"),
    Requirement(
        id="qemu-aarch64-static", needed_by=ROOTFS, title="qemu-aarch64-static >= 5 (arm64 rootfs chroot)",
        probe="command -v qemu-aarch64-static >/dev/null || { echo 'qemu-aarch64-static: not installed'; exit 1; }\n"
              "v=$(qemu-aarch64-static --version | head -n 1); echo \"$v\"\n"
              "m=$(echo \"$v\" | sed -n 's/.* version \\([0-9][0-9]*\\)\\..*/\\1/p')\n"
              "[ -n \"$m\" ] && [ \"$m\" -ge 5 ] || { echo 'older than 5'; exit 1; }",
        fix=f"install qemu-user-static >= 5 (Ubuntu 22.04 and Debian bookworm have it): {_FIX_IMAGE}"),
    Requirement(
        id="live-build", needed_by=ROOTFS, title="live-build and debootstrap (Debian/Ubuntu rootfs)",
        probe="ok=0; for t in lb debootstrap; do command -v $t >/dev/null && echo \"$t: $(command -v $t)\" "
              "|| { echo \"$t: not installed\"; ok=1; }; done; exit $ok",
        fix=f"install live-build and debootstrap: {_FIX_IMAGE}"),
    Requirement(
        id="binfmt-aarch64", needed_by=ROOTFS, where=HOST,
        title="the host kernel runs aarch64 binaries through binfmt_misc (the rootfs chroot needs it)",
        probe='d="$BINFMT_DIR"\n'
              '[ -e "$d/status" ] || { echo "binfmt_misc is not mounted at $d on this host"; exit 1; }\n'
              'for f in "$d"/*; do\n'
              '  [ -f "$f" ] || continue\n'
              '  if grep -Eq "^interpreter .*aarch64|^magic 7f454c46020101.{22}b700" "$f"; then\n'
              '    if grep -qx enabled "$f"; then echo "$f: enabled"; exit 0; fi\n'
              '    echo "$f: registered but disabled"; exit 1\n'
              '  fi\n'
              'done\n'
              'echo "no binfmt_misc entry for aarch64 in $d"; exit 1',
        fix="on the HOST (a container cannot register it unless privileged): install binfmt-support "
            "and qemu-user-static there and run `sudo update-binfmts --enable qemu-aarch64` "
            "(mount binfmt_misc first if needed: `sudo mount -t binfmt_misc binfmt_misc "
            "/proc/sys/fs/binfmt_misc`)"),
)

# The SDK's own scripts, by the step kind that needs them (check-sdk.sh: every step).
SDK_CHECK_KINDS = {"sdk": ALL, "kernel": KERNEL}
DEFAULT_ROOTFS_SYSTEMS = ("debian", "ubuntu")
# A rootfs target (build.sh command) -> the check-<system>.sh names that apply to it:
# MYIR's ubuntu step uses the Debian tooling; `rootfs` builds the selected system,
# unknown before lunch, so the Debian family is assumed.
ROOTFS_SCRIPT_NAMES = {"ubuntu": ("ubuntu", "debian"), "rootfs": DEFAULT_ROOTFS_SYSTEMS}


@dataclass(frozen=True)
class HostProblem:
    """A requirement (or SDK check script) that failed, with what it printed."""

    id: str
    needed_by: str
    title: str
    evidence: str
    fix: str


def known_ids() -> set[str]:
    """Ids `enforce` accepts in `accepted` (the table's, plus any `sdk-check-*`)."""
    return {req.id for req in REQUIREMENTS}


def _needed(needed_by: str, needs_rootfs: bool) -> bool:
    return needed_by != ROOTFS or needs_rootfs


def sdk_check_scripts(sdk_dir: Path | None, *, needs_rootfs: bool,
                      rootfs_systems: Sequence[str] = DEFAULT_ROOTFS_SYSTEMS) -> list[tuple[str, str]]:
    """(script name, needed_by) of the SDK's host check scripts that exist and apply.

    `rootfs_systems` are the rootfs targets the build runs (`debian`, `ubuntu`, `rootfs`, ...).
    """
    if sdk_dir is None:
        return []
    kinds = dict(SDK_CHECK_KINDS)
    if needs_rootfs:
        kinds.update({name: ROOTFS for system in rootfs_systems
                      for name in ROOTFS_SCRIPT_NAMES.get(system, (system,))})
    scripts = Path(sdk_dir) / SDK_SCRIPTS
    return [(f"check-{kind}.sh", needed_by) for kind, needed_by in kinds.items()
            if (scripts / f"check-{kind}.sh").is_file()]


def probe_script(requirements: Iterable[Requirement], sdk_dir: Path | None,
                 scripts: Sequence[tuple[str, str]]) -> str:
    """One POSIX-sh script running every probe, each framed by begin/end marker lines."""
    parts = ["exec 2>&1 </dev/null"]

    def framed(probe_id: str, body: str) -> None:
        parts.append(f"echo '{_MARK} begin {probe_id}'\n( {body}\n)\necho \"{_MARK} end {probe_id} $?\"")

    for req in requirements:
        framed(req.id, req.probe)
    if scripts:
        root = shlex.quote(str(sdk_dir))
        for name, _ in scripts:
            path = shlex.quote(f"{SDK_SCRIPTS}/{name}")
            # As build.sh runs them: from the SDK root, with the selected config exported.
            framed(f"sdk:{name}",
                   f"cd {root} || exit 1\n"
                   f"if [ -r output/.config ]; then set -a; . ./output/.config; set +a; fi\n"
                   f"if [ -x {path} ]; then timeout {PROBE_TIMEOUT} {path}; "
                   f"else timeout {PROBE_TIMEOUT} bash {path}; fi")
    parts.append("exit 0")
    return "\n".join(parts) + "\n"


_LINE_RE = re.compile(rf"^{re.escape(_MARK)} (begin|end) (\S+)(?: (\d+))?$")


def parse_report(text: str) -> dict[str, tuple[int | None, str]]:
    """probe id -> (exit status or None if it never finished, its output) from a probe run's log."""
    results: dict[str, tuple[int | None, str]] = {}
    current = None
    lines: list[str] = []
    for line in text.splitlines():
        match = _LINE_RE.match(line.rstrip("\r"))
        if not match:
            if current is not None:
                lines.append(line.rstrip("\r"))
            continue
        kind, probe_id, code = match.groups()
        if kind == "begin":
            current, lines = probe_id, []
            results[probe_id] = (None, "")
        elif probe_id == current:
            results[probe_id] = (int(code), "\n".join(lines).strip())
            current = None
    if current is not None:
        results[current] = (None, "\n".join(lines).strip())
    return results


def _problems(results: dict[str, tuple[int | None, str]], requirements: Sequence[Requirement],
              scripts: Sequence[tuple[str, str]], log_path: Path | None) -> list[HostProblem]:
    problems = []
    for req in requirements:
        code, output = results.get(req.id, (None, ""))
        if code != 0:
            evidence = output or "(no output)"
            if code is None:
                evidence += f" (the probe did not finish; see {log_path})"
            problems.append(HostProblem(req.id, req.needed_by, req.title, evidence, req.fix))
    for name, needed_by in scripts:
        code, output = results.get(f"sdk:{name}", (None, ""))
        if code != 0:
            status = "did not finish" if code is None else f"exited {code}"
            if code == 124:
                status = f"timed out after {PROBE_TIMEOUT}s"
            problems.append(HostProblem(
                f"sdk-{name.removesuffix('.sh')}", needed_by,
                f"the SDK's own host check {SDK_SCRIPTS}/{name} failed ({status})",
                output or "(no output)",
                "do what the script's message above says, in the builder image (Dockerfile.builder, "
                "builder.build_args.EXTRA_PACKAGES) or on the host, then run again"))
    return problems


def check_host(*, needs_rootfs: bool, binfmt_dir: Path = BINFMT_DIR) -> list[HostProblem]:
    """Probe the requirements that live on the host itself (its kernel's binfmt_misc)."""
    wanted = [r for r in REQUIREMENTS if r.where == HOST and _needed(r.needed_by, needs_rootfs)]
    if not wanted:
        return []
    script = probe_script(wanted, None, ())
    run = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                         env={"BINFMT_DIR": str(binfmt_dir), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    return _problems(parse_report(run.stdout), wanted, (), None)


def check_builder(image: str, sdk_dir: Path | None, *, needs_rootfs: bool, log_path: Path,
                  mounts: Sequence = (), rootfs_systems: Sequence[str] = DEFAULT_ROOTFS_SYSTEMS,
                  binfmt_dir: Path = BINFMT_DIR) -> list[HostProblem]:
    """Run every applicable probe and SDK check script in one `image` container; return what failed.

    The SDK is mounted read-only at its own absolute path unless `mounts` already
    covers that path. Host-side requirements are probed here too (`check_host`).
    """
    wanted = [r for r in REQUIREMENTS if r.where == BUILDER and _needed(r.needed_by, needs_rootfs)]
    mounts = list(mounts)
    if sdk_dir is not None:
        sdk_dir = Path(sdk_dir).resolve()
        if not sdk_dir.is_dir():
            raise UserError(f"host check: SDK directory {sdk_dir} does not exist: unpack the SDK first")
        if not any(str(m.target) == str(sdk_dir) for m in mounts):
            mounts.append(Mount(sdk_dir, str(sdk_dir), read_only=True))
    scripts = sdk_check_scripts(sdk_dir, needs_rootfs=needs_rootfs, rootfs_systems=rootfs_systems)
    script = probe_script(wanted, sdk_dir, scripts)
    try:
        run_step(image, ["sh", "-c", script], name="builder:check", workdir="/", mounts=mounts, env={},
                 log_path=Path(log_path), ccache_volume=None, echo=None)
    except StepFailed as exc:
        raise UserError(f"host check: the probe script itself failed in {image} "
                        f"(exit code {exc.exit_code}); see {exc.log_path}") from exc
    results = parse_report(Path(log_path).read_text(errors="replace"))
    return (_problems(results, wanted, scripts, Path(log_path))
            + check_host(needs_rootfs=needs_rootfs, binfmt_dir=binfmt_dir))


def format_problems(problems: Iterable[HostProblem]) -> str:
    """Human-readable text: id, what needs it, what was seen and the fix, per problem."""
    blocks = []
    for p in problems:
        evidence = "\n".join(f"    {line}" for line in p.evidence.splitlines())
        blocks.append(f"[{p.id}] {p.title} (needed by: {p.needed_by})\n"
                      f"  seen:\n{evidence}\n"
                      f"  fix: {p.fix}")
    return "\n\n".join(blocks) if blocks else "host check: every requirement is met"


def enforce(problems: list[HostProblem], accepted: Collection[str] = ()) -> None:
    """Warn about accepted problems; raise a UserError listing every other one with its fix."""
    accepted = {accepted} if isinstance(accepted, str) else set(accepted)
    refuse_unknown_ids("host check: accept", accepted, known_ids(), also=" and sdk-check-<name>",
                       allowed=lambda a: a.startswith("sdk-check-"))
    taken = [p for p in problems if p.id in accepted]
    if taken:
        _log.warning(f"host problem(s) accepted by the recipe, the build may fail:\n"
                     f"{format_problems(taken)}")
    blocking = [p for p in problems if p.id not in accepted]
    if blocking:
        raise UserError(
            f"host check: the build host lacks {len(blocking)} requirement(s) of Rockchip's build.sh:\n\n"
            f"{format_problems(blocking)}\n\n"
            "Fix them and run again (a changed Dockerfile.builder or build args rebuild the builder image).")
