"""Apps built into the image: one program cross-compiled in the builder container, installed into a tree
that the rootfs overlay mechanism (rootfs_overlays.py) bakes in.

An app's directory (`<apps root>/<name>/`) holds:

    src/     a copy of its source (an unpacked tarball or a git checkout, given as a path) under a
             repository of its own: the tree as given is the first commit, each patch one more
    build/   CMake's build directory (made afresh each time: a clean, reproducible build)
    files/   the recipe's prebuilt inputs (`files:`), each copied once and again only when it changes
    root/    what the image gets: the build's install tree (DESTDIR) plus links to files/
    app.json what was built: toolchain, compiler, sysroot, patch commits, files, time

The toolchain is the SDK's prebuilt one (prebuilts/gcc/linux-x86/aarch64/*/bin/aarch64-*-g++) when
the SDK has it, else the builder's aarch64-linux-gnu-g++; the SDK is mounted at its own path, so its
compilers and sysroot have the same paths inside the container as outside. CMake first, make second.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import re
import shlex
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from rk3576_build.build.buildsh import failure_message
from rk3576_build.build.container import Mount, StepFailed, run_step
from rk3576_build.config.model import APP_BUILD_SYSTEMS, APP_OVERLAY_PREFIX, APP_TOOLCHAINS
from rk3576_build.core.errors import UserError
from rk3576_build.core.files import sha256_file, write_json
from rk3576_build.core.patches import GitTree, apply_series

_log = logging.getLogger(__name__)

BUILD_SYSTEMS = APP_BUILD_SYSTEMS
TOOLCHAINS = APP_TOOLCHAINS
SDK_TOOLCHAIN_GLOB = "prebuilts/gcc/linux-x86/aarch64/*/bin/aarch64-*-g++"
BUILDER_CC, BUILDER_CXX = "aarch64-linux-gnu-gcc", "aarch64-linux-gnu-g++"
BUILDER_PACKAGE = "g++-aarch64-linux-gnu"
OVERLAY_PREFIX = APP_OVERLAY_PREFIX  # an app's root/ is the rootfs overlay `app-<name>`
MISSING_TOOL_EXIT = 97  # the build script's exit status when a tool it needs is not in the image
SAY = "rk3576-build-app:"  # the build script's own lines in the log
EM_AARCH64 = 183
_MACHINES = {3: "x86 (32-bit)", 40: "arm (32-bit)", 62: "x86-64", 183: "aarch64", 243: "riscv"}
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")


@dataclass(frozen=True)
class FileInput:
    """A prebuilt input: a local file or directory (a fetched file's path) and where it goes in the rootfs."""

    source: Path
    dest: str


@dataclass(frozen=True)
class AppBuild:
    """What to build: the pipeline makes one from the recipe's `apps:` entry and the fetched/unpacked source."""

    name: str
    source_dir: Path  # an unpacked tarball or a git checkout pinned to a commit
    subdir: str = ""  # the build system's top directory, relative to source_dir
    patches: tuple[Path, ...] = ()
    build: str = "cmake"  # cmake | make
    options: Mapping[str, str] = field(default_factory=dict)  # cmake: -DKEY=VALUE; make: KEY=VALUE
    prefix: str = "/usr"  # where it installs in the rootfs (CMAKE_INSTALL_PREFIX, make's PREFIX)
    files: tuple[FileInput, ...] = ()
    toolchain: str = "auto"  # auto: the SDK's prebuilt when it has one, else the builder's
    sysroot: str | None = None  # relative to the SDK root (or absolute); None: the compiler's own


@dataclass(frozen=True)
class Toolchain:
    """The cross compilers an app builds with; `origin` is "sdk" or "builder"."""

    cc: str
    cxx: str
    origin: str

    @property
    def cross_prefix(self) -> str:
        """`aarch64-none-linux-gnu-` style prefix (with its directory for the SDK's), for make's CROSS_COMPILE."""
        return self.cxx.removesuffix("g++")


@dataclass(frozen=True)
class AppResult:
    """A built app: `root` is the tree the image gets (the overlay's source)."""

    name: str
    root: Path
    record: dict

    @property
    def overlay_name(self) -> str:
        return overlay_name(self.name)


def overlay_name(app: str) -> str:
    """The rootfs overlay an app's root/ is baked in as."""
    return f"{OVERLAY_PREFIX}{app}"


# --------------------------------------------------------------------------- toolchain and sysroot

def sdk_toolchains(sdk_dir: Path) -> list[Toolchain]:
    """The SDK's prebuilt aarch64 C/C++ cross compilers (Linux ones first), each with its gcc beside its g++."""
    found = []
    for cxx in sorted(Path(sdk_dir).glob(SDK_TOOLCHAIN_GLOB)):
        cc = cxx.with_name(cxx.name.removesuffix("g++") + "gcc")
        if "-elf-" in cxx.name or not (cxx.exists() and cc.exists()):
            continue  # a bare-metal toolchain, or a dangling link
        found.append(Toolchain(cc=str(cc.absolute()), cxx=str(cxx.absolute()), origin="sdk"))
    return sorted(found, key=lambda t: "linux-gnu" not in Path(t.cxx).name)


def find_toolchain(sdk_dir: Path | None, choice: str = "auto", *, app: str = "") -> Toolchain:
    """The toolchain `choice` (auto | sdk | builder) names; UserError (one line) when the SDK has none."""
    where = f"app {app}: " if app else ""
    if choice not in TOOLCHAINS:
        raise UserError(f"{where}toolchain {choice!r} is not one of {', '.join(TOOLCHAINS)}")
    if choice != "builder" and sdk_dir is not None:
        prebuilt = sdk_toolchains(sdk_dir)
        if prebuilt:
            return prebuilt[0]
    if choice == "sdk":
        place = f"{sdk_dir}/{SDK_TOOLCHAIN_GLOB}" if sdk_dir is not None else "the SDK (no SDK is unpacked)"
        raise UserError(f"{where}no prebuilt C++ cross compiler in {place}: unpack the SDK with its prebuilts/, "
                        "or set the app's toolchain to builder (the builder's aarch64-linux-gnu-g++)")
    return Toolchain(cc=BUILDER_CC, cxx=BUILDER_CXX, origin="builder")


def find_sysroot(sdk_dir: Path | None, setting: str | None, *, app: str = "") -> Path | None:
    """The sysroot the app builds against: `setting` relative to the SDK root (or absolute); None: none."""
    if not setting:
        return None
    path = Path(setting)
    if not path.is_absolute():
        if sdk_dir is None:
            raise UserError(f"app {app}: sysroot {setting} is relative to the SDK, but no SDK is unpacked")
        path = Path(sdk_dir) / path
    if not path.is_dir():
        raise UserError(f"app {app}: sysroot {path} does not exist: build the SDK step that makes it first, "
                        "or fix the app's sysroot")
    return path.absolute()


# --------------------------------------------------------------------------- source and files

def prepare_source(build: AppBuild, dest: Path) -> dict:
    """Copy the source to `dest` (replacing an earlier copy), commit it, apply the patches; what was done."""
    source = Path(build.source_dir)
    if not source.is_dir():
        raise UserError(f"app {build.name}: source {source} is not a directory (fetch and unpack it first)")
    _clear(dest)
    shutil.copytree(source, dest, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    tree = GitTree(dest)
    baseline = tree.init_baseline(f"Source of app {build.name}\n\nThe tree as rk3576-build found it in {source}, "
                                  "before any patch.")
    commits = apply_series(tree, build.patches, what=f"the source of app {build.name}",
                           start=f"the source as given ({baseline[:12]})")
    top = _inside(dest, build.subdir, f"app {build.name}: subdir") if build.subdir else dest
    marker = "CMakeLists.txt" if build.build == "cmake" else "Makefile"
    if not (top / marker).is_file() and not (build.build == "make" and (top / "makefile").is_file()):
        raise UserError(f"app {build.name}: no {marker} in {source / build.subdir if build.subdir else source} "
                        f"(the {build.build} build's top directory): fix the app's subdir or build")
    return {"baseline": baseline,
            "patches": [{"file": Path(p).name, "commit": sha} for p, sha in zip(build.patches, commits, strict=True)]}


def stage_files(files: Sequence[FileInput], dest: Path, *, app: str = "") -> list[dict]:
    """Mirror the prebuilt inputs under `dest` (rootfs paths), copying a file only when its size or mtime
    changed (streamed, never read whole) and removing what is no longer listed; their entries."""
    wanted: dict[str, Path] = {}
    for index, item in enumerate(files):
        rel = _rootfs_rel(item.dest, f"app {app}: files[{index}].dest")
        source = Path(item.source)
        if source.is_dir():
            for path in sorted(p for p in source.rglob("*") if p.is_file()):
                wanted[f"{rel}/{path.relative_to(source).as_posix()}"] = path
        elif source.is_file():
            wanted[rel] = source
        else:
            raise UserError(f"app {app}: files[{index}].source {source} does not exist (a local path must exist "
                            "when the app builds; a URL is fetched first)")
    entries = []
    for rel, source in sorted(wanted.items()):
        target = dest / rel
        info = source.stat()
        try:
            have = target.stat()
            same = (have.st_size, have.st_mtime_ns) == (info.st_size, info.st_mtime_ns)
        except FileNotFoundError:
            same = False
        if not same:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.part")
            shutil.copyfile(source, partial)  # streams (copy_file_range/sendfile), never the whole file in memory
            shutil.copystat(source, partial)
            os.replace(partial, target)
        entries.append({"dest": "/" + rel, "source": str(source), "size": info.st_size, "copied": not same})
    for path in sorted(dest.rglob("*"), reverse=True) if dest.is_dir() else []:
        rel = path.relative_to(dest).as_posix()
        if path.is_file() and rel not in wanted:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return entries


def link_files(files_dir: Path, root: Path, *, app: str) -> None:
    """Put every staged file into `root` as a hard link (a copy where links are refused)."""
    for path in sorted(p for p in files_dir.rglob("*") if p.is_file()) if files_dir.is_dir() else []:
        rel = path.relative_to(files_dir)
        target = root / rel
        if target.exists() or target.is_symlink():
            raise UserError(f"app {app}: /{rel.as_posix()} comes from both the build's install and files:; "
                            "drop one of them")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            shutil.copy2(path, target)


# --------------------------------------------------------------------------- what a build depends on

def signature(build: AppBuild, *, source_id: str, sdk_dir: Path | None, builder: str) -> dict:
    """Everything an app's build depends on, JSON-able: equal signatures mean the app need not rebuild.

    `source_id` names the source's content (a tarball's sha256, a git commit, or for a local directory
    rootfs_overlays.digest(rootfs_overlays.scan(dir))); `builder` the builder image's configuration hash.
    Patches count by content, files by size and mtime (a model is never re-read to decide), the
    toolchain and sysroot as resolved (so an SDK that gains a prebuilt compiler rebuilds the app).
    """
    toolchain = find_toolchain(sdk_dir, build.toolchain, app=build.name)
    sysroot = find_sysroot(sdk_dir, build.sysroot, app=build.name)
    files = []
    for item in build.files:
        source = Path(item.source)
        members = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
        for path in members:
            info = path.stat() if path.exists() else None
            files.append({"dest": item.dest, "source": str(path),
                          "size": info.st_size if info else None, "mtime_ns": info.st_mtime_ns if info else None})
    return {"name": build.name, "source": source_id, "subdir": build.subdir, "build": build.build,
            "options": dict(sorted(build.options.items())), "prefix": build.prefix,
            "patches": [{"file": Path(p).name, "sha256": sha256_file(p)} for p in build.patches],
            "toolchain": {"origin": toolchain.origin, "cc": toolchain.cc, "cxx": toolchain.cxx},
            "sysroot": str(sysroot) if sysroot else None, "files": files, "builder": builder}


# --------------------------------------------------------------------------- the build

def build_script(build: AppBuild, toolchain: Toolchain, sysroot: Path | None, *, src: Path, build_dir: Path,
                 root: Path) -> str:
    """The bash script that configures, builds and installs the app inside the builder."""
    q = shlex.quote
    top = src / build.subdir if build.subdir else src
    tools = [toolchain.cc, toolchain.cxx, "cmake" if build.build == "cmake" else "make"]
    lines = [
        "set -eu",
        f"say() {{ printf '%s %s\\n' {q(SAY)} \"$*\"; }}",
        f"for tool in {' '.join(q(t) for t in tools)}; do",
        f"    command -v \"$tool\" >/dev/null 2>&1 || {{ say \"missing-tool $tool\"; exit {MISSING_TOOL_EXIT}; }}",
        "done",
        f"say \"compiler: $({q(toolchain.cxx)} --version | head -n 1)\"",
    ]
    if build.build == "cmake":
        configure = ["cmake", "-S", str(top), "-B", str(build_dir),
                     "-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=aarch64",
                     f"-DCMAKE_C_COMPILER={toolchain.cc}", f"-DCMAKE_CXX_COMPILER={toolchain.cxx}",
                     *([f"-DCMAKE_SYSROOT={sysroot}"] if sysroot else []),
                     "-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_INSTALL_PREFIX={build.prefix}",
                     *(f"-D{key}={value}" for key, value in build.options.items())]
        lines += [
            "launcher=",
            'if [ -n "${CCACHE_DIR:-}" ] && command -v ccache >/dev/null 2>&1; then',
            "    launcher='-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache'",
            "fi",
            "set -x  # the log shows each command as it runs",
            " ".join(q(a) for a in configure) + " $launcher",
            f"cmake --build {q(str(build_dir))} --parallel \"$(nproc)\"",
            f"DESTDIR={q(str(root))} cmake --install {q(str(build_dir))} --prefix {q(build.prefix)}",
        ]
    else:
        flags = f" --sysroot={sysroot}" if sysroot else ""
        common = [f"CC={toolchain.cc}{flags}", f"CXX={toolchain.cxx}{flags}",
                  f"CROSS_COMPILE={toolchain.cross_prefix}", "ARCH=arm64",
                  *(f"{key}={value}" for key, value in build.options.items())]
        lines += [
            "set -x  # the log shows each command as it runs",
            " ".join(q(a) for a in ["make", "-C", str(top), *common]) + " -j\"$(nproc)\"",
            " ".join(q(a) for a in ["make", "-C", str(top), *common, "install", f"DESTDIR={root}",
                                    f"PREFIX={build.prefix}", f"prefix={build.prefix}"]),
        ]
    return "\n".join(lines) + "\n"


def build_app(build: AppBuild, *, image: str, app_dir: Path, sdk_dir: Path | None, log_path: Path,
              env: Mapping[str, str] | None = None, mounts: Sequence[Mount] = (),
              echo: Callable[[str], None] | None = _log.info) -> AppResult:
    """Build `build` in the builder `image`: source and patches, toolchain, configure/build/install, files.

    `app_dir` is the app's own directory (see the module's docstring); `sdk_dir` the unpacked SDK (for
    its toolchain and sysroot; None: the builder's toolchain). Raises UserError/StepFailed with one
    clear message: a missing toolchain or sysroot, a patch that does not apply (file and hunk), a
    failed build (its first errors), an installed program that is not an aarch64 ELF.
    """
    if build.build not in BUILD_SYSTEMS:
        raise UserError(f"app {build.name}: build {build.build!r} is not one of {', '.join(BUILD_SYSTEMS)}")
    if not _NAME_RE.fullmatch(build.name):
        raise UserError(f"app name {build.name!r}: use [a-z0-9][a-z0-9._-]*")
    prefix = "/" + _rootfs_rel(build.prefix, f"app {build.name}: prefix")
    build = dataclasses.replace(build, prefix=prefix)
    toolchain = find_toolchain(sdk_dir, build.toolchain, app=build.name)
    sysroot = find_sysroot(sdk_dir, build.sysroot, app=build.name)
    app_dir = Path(app_dir).absolute()
    app_dir.mkdir(parents=True, exist_ok=True)
    src, build_dir, files_dir, root = (app_dir / n for n in ("src", "build", "files", "root"))
    started = time.monotonic()
    record: dict = {"name": build.name, "source": str(build.source_dir), "subdir": build.subdir,
                    "build": build.build, "prefix": prefix, "options": dict(build.options),
                    "toolchain": {"origin": toolchain.origin, "cc": toolchain.cc, "cxx": toolchain.cxx},
                    "sysroot": str(sysroot) if sysroot else None}
    record.update(prepare_source(build, src))
    record["files"] = stage_files(build.files, files_dir, app=build.name)
    for path in (build_dir, root):
        _clear(path)
        path.mkdir(parents=True)
    script = build_script(build, toolchain, sysroot, src=src, build_dir=build_dir, root=root)
    (app_dir / "build.sh").write_text(script)
    binds = [Mount(app_dir, str(app_dir))]
    if sdk_dir is not None:
        binds.append(Mount(Path(sdk_dir).resolve(), str(Path(sdk_dir).resolve()), read_only=True))
    step = f"app-{build.name}"
    try:
        run_step(image, ["bash", str(app_dir / "build.sh")], name=step, workdir=str(app_dir),
                 mounts=[*binds, *mounts], env=dict(env or {}), log_path=log_path, echo=echo)
    except StepFailed as exc:
        missing = re.search(rf"^{re.escape(SAY)} missing-tool (\S+)", _log_text(log_path), re.M)
        if exc.exit_code == MISSING_TOOL_EXIT and missing:
            raise UserError(_missing_tool(build.name, missing.group(1), toolchain, image)) from None
        raise StepFailed(failure_message(step, f"{build.build} build of {build.subdir or '.'}", exc.exit_code,
                                         exc.elapsed, log_path), exit_code=exc.exit_code, log_path=log_path,
                         elapsed=exc.elapsed) from None
    compiler = re.search(rf"^{re.escape(SAY)} compiler: (.*)$", _log_text(log_path), re.M)
    record["toolchain"]["version"] = compiler.group(1).strip() if compiler else None
    link_files(files_dir, root, app=build.name)
    check_elves(root, app=build.name)
    record["duration_s"] = round(time.monotonic() - started, 3)
    record["log"] = str(log_path)
    write_json(app_dir / "app.json", record)
    return AppResult(name=build.name, root=root, record=record)


def _missing_tool(app: str, tool: str, toolchain: Toolchain, image: str) -> str:
    if tool in (BUILDER_CC, BUILDER_CXX):
        return (f"app {app}: the builder image {image} has no {tool}: add {BUILDER_PACKAGE} to it "
                "(builder/install-host-packages.sh lists it; rebuild the builder) or use an SDK with a prebuilt "
                "toolchain")
    if toolchain.origin == "sdk" and tool in (toolchain.cc, toolchain.cxx):
        return f"app {app}: the SDK's compiler {tool} cannot be run in the builder (is it executable?)"
    return f"app {app}: the builder image {image} has no {tool}: add it to the builder image"


def _log_text(path: Path) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


# --------------------------------------------------------------------------- checks and paths

def elf_machine(path: Path) -> int | None:
    """An ELF file's e_machine (183 is aarch64); None when `path` is not an ELF file."""
    with Path(path).open("rb") as fh:
        head = fh.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    return int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")


def check_elves(root: Path, *, app: str) -> None:
    """Every ELF file under `root` is for aarch64; otherwise one UserError naming the first that is not."""
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        machine = elf_machine(path)
        if machine is not None and machine != EM_AARCH64:
            kind = _MACHINES.get(machine, f"machine {machine}")
            raise UserError(f"app {app}: /{path.relative_to(root).as_posix()} is an ELF file for {kind}, not "
                            "aarch64: the build used a host compiler (a hard-coded gcc/g++ in its build files?) "
                            "or files: gave a library for another machine")


def _rootfs_rel(path: str, what: str) -> str:
    """An absolute rootfs path as a relative one; UserError for a relative path, `..` or the root itself."""
    pure = PurePosixPath(path)
    if not path.startswith("/") or ".." in pure.parts or pure == PurePosixPath("/"):
        raise UserError(f"{what} must be an absolute path in the rootfs below /, without '..', got {path!r}")
    return pure.relative_to("/").as_posix()


def _inside(root: Path, rel: str, what: str) -> Path:
    parts = PurePosixPath(rel).parts
    if PurePosixPath(rel).is_absolute() or ".." in parts or ".git" in parts:
        raise UserError(f"{what} must be a relative path inside the source, got {rel!r}")
    return root / rel


def _clear(path: Path) -> None:
    """Remove `path`, a tree or file an earlier build made."""
    if not (path.exists() or path.is_symlink()):
        return
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
