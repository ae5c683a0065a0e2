"""The recipe's keys (SCHEMA: types, defaults, docs), the checks on single values, and the key table docs show."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from rk3576_build.config.combinators import (
    INVALID,
    REQUIRED,
    Bool,
    Choice,
    Computed,
    Int,
    Key,
    ListOf,
    MapOf,
    Nullable,
    Number,
    OneOrList,
    PathT,
    Section,
    Str,
    StrMap,
    StrOrSection,
    UrlOrPath,
    Walk,
)
from rk3576_build.config.model import (
    APP_BUILD_SYSTEMS,
    APP_TOOLCHAINS,
    FLASH_METHODS,
    INPUTS,
    LUNCH_MODES,
    AppFileSpec,
    AppSourceSpec,
    AppSpec,
    BuilderSpec,
    CacheSpec,
    DriverSpec,
    FlashSpec,
    LunchSpec,
    Mount,
    OverlaySpec,
    PatchesSpec,
    PreflightSpec,
    Product,
    ReleaseSpec,
    SdkSpec,
    StepSpec,
    VerifySpec,
)
from rk3576_build.config.quoting import describe, did_you_mean, listed
from rk3576_build.config.rules import refused_env_name

# Checks on single strings: each returns a problem or None.

def _matching(pattern: str, expected: str) -> Callable[[str], str | None]:
    """A check that a string matches `pattern` in full; else "expected <expected>, got <the value>"."""
    regex = re.compile(pattern)

    def check(v: str) -> str | None:
        return None if regex.fullmatch(v) else f"expected {expected}, got {describe(v)}"

    return check


_hex64 = _matching(r"[0-9a-fA-F]{64}", "64 hex digits")
_version = _matching(r"\d+\.\d+\.\d+", "a version X.Y.Z in digits (like 0.9.8)")
_defconfig = _matching(r"[A-Za-z0-9][A-Za-z0-9_.+-]*_defconfig",
                       "a defconfig name ending in '_defconfig' (letters, digits, '_', '-', '.', '+'; "
                       "it goes on build.sh's command line)")
_chip = _matching(r"[a-z0-9][a-z0-9_-]*", "a chip name like 'rk3576' (lowercase letters, digits, '-', '_')")
_app_name = _matching(r"[a-z0-9][a-z0-9._-]*", "an app name: lowercase letters, digits, '.', '-' and '_', "
                      "starting with a letter or digit (it names a directory and the overlay app-<name>)")
_commit = _matching(r"[0-9a-f]{40}", "a full commit id (40 lowercase hex digits)")
_buildsh_target = _matching(r"[A-Za-z0-9][A-Za-z0-9_.+-]*(:[A-Za-z0-9_.+:-]+)?",
                            "a build.sh command like 'uboot' or 'kernel:cmds' (letters, digits, "
                            "'_', '-', '.', '+', ':')")


def _step_name(v: str) -> str | None:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", v):
        return (f"invalid step name {describe(v)}: use lowercase letters, digits, '-' and '_', "
                "starting with a letter or digit")
    if v in INPUTS:
        return f"{describe(v)} names an input ({', '.join(INPUTS)}); call the step something else"
    return None


def _recipe_name(v: str) -> str | None:
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", v):
        return None
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
        return f"name {describe(v)} is too long: at most 100 characters (it names the work directory)"
    return f"invalid name {describe(v)}: use letters, digits, '.', '-' and '_' (it names the work directory)"


def _absolute(v: str) -> str | None:
    return None if v.startswith("/") else f"expected an absolute path inside the container, got {describe(v)}"


def _inside(where: str) -> Callable[[str], str | None]:
    """A relative path that stays inside `where` (no absolute path, no '..', not the root itself)."""

    def check(v: str) -> str | None:
        parts = PurePosixPath(v).parts
        if not parts or v.startswith("/") or ".." in parts or str(PurePosixPath(v)) == ".":
            return f"expected a relative path inside {where} without '..', got {describe(v)}"
        return None

    return check


def _rootfs_path(v: str) -> str | None:
    """An absolute path in the root filesystem, below / and without '..'."""
    pure = PurePosixPath(v)
    if not v.startswith("/") or ".." in pure.parts or pure == PurePosixPath("/"):
        return f"expected an absolute path in the root filesystem below /, without '..', got {describe(v)}"
    return None


def _subdir(v: str) -> str | None:
    """Empty (the top) or a relative path inside the source."""
    return _inside("the source")(v) if v else None


def _check_steps(items: list, raw: list, path: tuple, ctx: Walk) -> None:
    """Step names are unique and each `depends` entry is an input or an earlier step."""
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        data = raw[index] if isinstance(raw[index], dict) else {}
        name = item.name if item is not INVALID else data.get("name")
        if item is not INVALID and bool(item.target) == bool(item.command):
            ctx.fail(path + (index,), "set exactly one of target (the build.sh command, with "
                                      "alternatives: [u-boot, uboot]) and command (a shell command)")
        if isinstance(name, str) and name in seen:
            ctx.fail(path + (index, "name"), f"duplicate step name {describe(name)} (also steps[{seen[name]}])")
        depends = item.depends if item is not INVALID else data.get("depends")
        if isinstance(depends, (list, tuple)):
            known = list(INPUTS) + list(seen)
            later = _names(raw[index:])
            for d_index, dep in enumerate(depends):
                if not isinstance(dep, str) or dep in known:
                    continue
                where = path + (index, "depends", d_index)
                if dep == name:
                    ctx.fail(where, f"step {describe(dep)} cannot depend on itself")
                elif dep in later:
                    ctx.fail(where, f"step {describe(dep)} is not defined before this step; a step may only "
                                    "depend on earlier steps")
                else:
                    ctx.fail(where, f"unknown input {describe(dep)}; known: {listed(known)}"
                                    f"{did_you_mean(dep, known)}")
        if isinstance(name, str) and name not in seen:
            seen[name] = index


def _overlay_name(v: str) -> str | None:
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
        return None
    return (f"invalid overlay name {describe(v)}: use letters, digits, '.', '-' and '_' "
            "(it names a directory in the SDK)")


def _check_overlays(items: list, raw: list, path: tuple, ctx: Walk) -> None:
    """Overlay names (given, or the source directory's name) are valid and unique."""
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        if item is INVALID:
            continue
        name = item.name or item.source.name
        problem = None if item.name else _overlay_name(name)
        if problem:
            ctx.fail(path + (index, "source"), f"{problem}; set name")
        elif name in seen:
            ctx.fail(path + (index, "name"), f"duplicate overlay name {describe(name)} "
                                             f"(also rootfs_overlays[{seen[name]}]); "
                                             "set a different name")
        else:
            seen[name] = index


def _names(raw_steps: list) -> list[str]:
    return [s["name"] for s in raw_steps if isinstance(s, dict) and isinstance(s.get("name"), str)]


def _section(cls, **keys: Key) -> Section:
    return Section(keys, cls)


# What the RKLLM check uses where verify.rkllm leaves a key null (its settings and --rkllm-* options
# take them from here: board/rkllm.py, cli/verify.py).
RKLLM_DEFAULTS: dict[str, Any] = {
    "program": "/usr/bin/llm_demo",
    "args": "{model} {max_new_tokens} {max_context_len}",
    "max_new_tokens": 256,
    "max_context_len": 2048,
    "prompt": "0",
    "load_timeout": 120,
    "answer_timeout": 300,
}
_RK = RKLLM_DEFAULTS
# The multimodal check's (verify.multimodal; board/multimodal.py, --multimodal-* options): rknn-llm's image demo.
MULTIMODAL_DEFAULTS: dict[str, Any] = {
    **RKLLM_DEFAULTS,
    "program": "/usr/bin/demo",
    "args": "{image} {encoder} {model} {max_new_tokens} {max_context_len} {core_num} {platform}",
    "max_context_len": 4096,
    "prompt": "<image>What is in the image?",
    "core_num": 2,  # RK3576's NPU has two cores
}
_MM = MULTIMODAL_DEFAULTS


def _run_keys(defaults: dict[str, Any], what: str) -> dict[str, Key]:
    """The keys the text and the multimodal checks share (program, timeouts, thresholds), with their defaults."""
    d = defaults
    return dict(
        program=Key(Nullable(Str()), f"the {what} program on the board; null: {d['program']}", None),
        args=Key(Nullable(Str()), "its arguments with {model}, {max_new_tokens}, {max_context_len}"
                 + (", {image}, {encoder}, {core_num}, {platform}" if "core_num" in d else "")
                 + f"; null: '{d['args']}'", None),
        lib_dir=Key(Nullable(Str()), "LD_LIBRARY_PATH for librkllmrt.so on the board; null: unset", None),
        max_new_tokens=Key(Nullable(Int(1)), f"max_new_tokens; null: {d['max_new_tokens']}", None),
        max_context_len=Key(Nullable(Int(1)), f"max_context_len; null: {d['max_context_len']}", None),
        prompt=Key(Nullable(Str()), "the question typed at `user: `, or a preset's number; "
                   f"null: \"{d['prompt']}\"", None),
        freq_script=Key(Nullable(Str()), "script on the board run first to pin frequencies "
                        "(rknn-llm's fix_freq_rk3576.sh); null: none", None),
        min_generate_tokens_per_s=Key(Nullable(Number()), "fail below this generate speed; null: no limit", None),
        max_init_ms=Key(Nullable(Number()), "fail above this model init time (ms); null: no limit", None),
        max_peak_memory_gb=Key(Nullable(Number()), "fail above this peak memory (GB); null: no limit", None),
        load_timeout=Key(Nullable(Number()), f"seconds for the model to load; null: {d['load_timeout']}", None),
        answer_timeout=Key(Nullable(Number()), "seconds for the answer and its table; "
                           f"null: {d['answer_timeout']}", None),
    )


SCHEMA = _section(
    None,
    name=Key(Str(_recipe_name), "the recipe's name; names the default work directory"),
    description=Key(Str(), "one line shown by `list` and in the manifest", ""),
    workdir=Key(PathT(), "where the state, the logs, the SDK tree and doit's database live",
                Computed("../build/<name>")),
    downloads=Key(Nullable(PathT()), "download cache; null: the default cache "
                  "(~/.cache/rk3576-build/downloads); $RK3576_DL_DIR overrides", None),
    mirrors=Key(ListOf(Str(nonempty=True)), "premirrors: URL prefixes or directories tried "
                "before each download's own URL", []),
    offline=Key(Bool(), "never use the network; RK3576_OFFLINE=1 also turns it on", False),
    sdk=Key(_section(
        SdkSpec,
        url=Key(Str(), "the SDK tarball: a URL, file:// URL or local path; may be empty "
                "(the fetch step then says how to get MYIR's SDK)"),
        sha256=Key(Nullable(Str(_hex64)), "expected sha256 (64 hex digits); null: pinned on "
                   "first fetch in the lock file", None),
        filename=Key(Nullable(Str()), "name in the download cache; null: the URL's last part", None),
        strip_components=Key(Int(0), "leading directories stripped when unpacking", 1),
        kernel_dir=Key(Str(_inside("the SDK")), "the kernel tree, relative to the SDK root", "kernel"),
    ), "the vendor SDK source tarball"),
    driver=Key(_section(
        DriverSpec,
        name=Key(Str(nonempty=True), "the driver's name", "rknpu"),
        version=Key(Str(_version), "the driver version, X.Y.Z in digits; the expected console line uses it"),
        url=Key(Str(nonempty=True), "the driver tarball: a URL, file:// URL or local path"),
        sha256=Key(Nullable(Str(_hex64)), "expected sha256 (64 hex digits); null: pinned on "
                   "first fetch in the lock file", None),
        filename=Key(Nullable(Str()), "name in the download cache; null: the URL's last part", None),
        source_dir=Key(Str(_inside("the tarball")), "the driver's directory inside the tarball",
                       "drivers/rknpu"),
        dest=Key(Str(_inside("the kernel tree")), "where it goes in the kernel tree (replaced, "
                 "not merged)", "drivers/rknpu"),
    ), "the driver tarball overlaid onto the kernel tree"),
    patches=Key(_section(
        PatchesSpec,
        dir=Key(Nullable(PathT()), "directory of patches applied to the kernel tree after the "
                "overlay (its `series` file gives the order); null: no patches", None),
    ), "the patch series", {}),
    preflight=Key(_section(
        PreflightSpec,
        accept=Key(ListOf(Str(nonempty=True)), "ids of preflight findings to accept instead of "
                   "stopping the build", []),
    ), "kernel-tree checks before the long build", {}),
    builder=Key(_section(
        BuilderSpec,
        dockerfile=Key(PathT(), "the builder image's Dockerfile", "../Dockerfile.builder"),
        base=Key(Str(nonempty=True), "base image, passed as build arg BASE", "ubuntu:22.04"),
        build_args=Key(StrMap(), "more docker build args", {}),
        mounts=Key(ListOf(_section(
            Mount,
            source=Key(Nullable(PathT()), "host path; empty (an unset ${VAR:-}) -> null, which "
                       "the build refuses when it runs"),
            target=Key(Str(_absolute), "absolute path inside the container"),
            read_only=Key(Bool(), "mount read-only", False),
        )), "extra bind mounts into the container", []),
        env=Key(StrMap(refused_env_name), "environment of every build step; RK_* names are refused "
                "(build.sh stops on them): they belong in the SDK defconfig", {}),
        ccache=Key(Bool(), "share a compiler cache (a Docker volume) with every build step", True),
        accept=Key(ListOf(Str(nonempty=True)), "ids of host-check problems (builder:check) to accept "
                   "instead of stopping the build", []),
        accept_probe=Key(StrMap(value=Str(nonempty=True)), "step name -> why: the step runs its first target "
                         "although builder:probe found no sign build.sh accepts it (the finding accepted, "
                         "with a warning on every run)", {}),
    ), "the Docker image the build steps run in", {}),
    lunch=Key(_section(
        LunchSpec,
        defconfig=Key(Str(_defconfig), "the board defconfig the lunch step selects"),
        chip=Key(Str(_chip), "the chip whose defconfigs (device/rockchip/.chips/<chip>/) are offered; "
                 "used by the chip mode", "rk3576"),
        mode=Key(Choice(*LUNCH_MODES), "how the lunch step selects it: menu (answer `./build.sh "
                 "lunch` by name), defconfig (`./build.sh <defconfig>`), lunch-name (`./build.sh "
                 "lunch:<defconfig>`), chip (`./build.sh <chip>:<defconfig>`, for a fresh tree), "
                 "auto (chip when device/rockchip/.chip is missing, else menu)", "auto"),
    ), "how the board is selected"),
    steps=Key(ListOf(_section(
        StepSpec,
        name=Key(Str(_step_name), "unique step name: [a-z0-9][a-z0-9_-]*, not sdk/driver/patches/overlays"),
        description=Key(Str(), "shown by `list`", ""),
        target=Key(OneOrList(Str(_buildsh_target)), "the build.sh command, or alternatives of which "
                   "the first the SDK's build.sh supports runs", []),
        command=Key(Nullable(Str()), "a shell command run as is instead of a target "
                    "(`./build.sh <word>` counts as target <word>)", None),
        privileged=Key(Bool(), "run the container privileged (loop devices, binfmt)", False),
        depends=Key(ListOf(Str()), "inputs (sdk, driver, patches) and earlier steps whose change "
                    "reruns this step", []),
        produces=Key(ListOf(StrOrSection("path", _section(
            Product,
            path=Key(Str(_inside("the SDK")), "a file the step must write, relative to the SDK root"),
            unchanged_ok=Key(Bool(), "the file must exist afterwards but may stay unchanged", False),
        ))), "files the step must write (a path, or {path, unchanged_ok}); one not written "
             "fails the step, one missing later reruns it", []),
    ), nonempty=True, post=_check_steps), "the build steps, in order"),
    artifacts=Key(ListOf(Str(_inside("the SDK")), nonempty=True), "the build's outputs, relative "
                  "to the SDK root; recorded with checksums in the manifest"),
    rootfs_overlays=Key(ListOf(_section(
        OverlaySpec,
        source=Key(PathT(), "a host directory (relative to the recipe); its tree is copied into the root "
                   "filesystem as the SDK's RK_ROOTFS_OVERLAY_DIRS does"),
        name=Key(Nullable(Str(_overlay_name)), "the overlay's name in the SDK and the manifest; null: the "
                 "source directory's name", None),
    ), post=_check_overlays), "host directories baked into the root filesystem; a step lists `overlays` in "
       "`depends` to rerun when one changes", []),
    apps=Key(MapOf(_section(
        AppSpec,
        enabled=Key(Bool(), "build it and bake it in", True),
        source=Key(StrOrSection("dir", _section(
            AppSourceSpec,
            url=Key(Nullable(Str()), "a source tarball: a URL, file:// URL or local path (with sha256)", None),
            sha256=Key(Nullable(Str(_hex64)), "the tarball's sha256 (64 hex digits)", None),
            filename=Key(Nullable(Str()), "the tarball's name in the download cache; null: the URL's last part",
                         None),
            strip_components=Key(Int(0), "leading directories stripped when unpacking the tarball", 1),
            git=Key(Nullable(UrlOrPath()), "a git repository: a URL or a local clone (relative to the recipe)",
                    None),
            commit=Key(Nullable(Str(_commit)), "the commit of `git` to build (40 hex digits)", None),
            dir=Key(Nullable(PathT()), "a local source directory (relative to the recipe)", None),
        )), "where the source comes from: a directory (a path), or {url, sha256}, {git, commit} or {dir}"),
        subdir=Key(Str(_subdir), "the build system's top directory inside the source; empty: the top", ""),
        patches=Key(Nullable(PathT()), "a patch directory applied to the source (its `series` file gives the "
                    "order); null: none", None),
        build=Key(Choice(*APP_BUILD_SYSTEMS), "the build system", "cmake"),
        options=Key(StrMap(), "CMake cache settings (-DKEY=VALUE) or make variables (KEY=VALUE)", {}),
        prefix=Key(Str(_rootfs_path), "where it installs in the rootfs (CMAKE_INSTALL_PREFIX, make's PREFIX)",
                   "/usr"),
        toolchain=Key(Choice(*APP_TOOLCHAINS), "auto: the SDK's prebuilt cross compiler when the SDK has one, "
                      "else the builder's aarch64-linux-gnu; sdk or builder: that one", "auto"),
        sysroot=Key(Nullable(Str()), "a sysroot to build against, relative to the SDK root (or absolute); "
                    "null: the compiler's own", None),
        files=Key(ListOf(_section(
            AppFileSpec,
            source=Key(Nullable(PathT()), "a local file or directory (relative to the recipe)", None),
            url=Key(Nullable(Str()), "or a URL (with sha256), fetched into the download cache", None),
            sha256=Key(Nullable(Str(_hex64)), "the URL's sha256 (64 hex digits)", None),
            filename=Key(Nullable(Str()), "the URL's name in the download cache; null: its last part", None),
            dest=Key(Str(_rootfs_path), "where it goes in the rootfs (absolute)"),
        )), "prebuilt inputs (runtime libraries, models, pictures) copied into the install tree", []),
    ), _app_name), "programs cross-compiled in the builder and baked into the rootfs as the overlay app-<name>, "
       "by name (docs/apps.md)", {}),
    verify=Key(_section(
        VerifySpec,
        expected=Key(Str(nonempty=True), "the line `cat /sys/kernel/debug/rknpu/version` must print",
                     Computed("RKNPU driver: v<driver.version>")),
        console=Key(Str(nonempty=True), "serial device or pyserial URL (socket://, rfc2217://)",
                    "/dev/ttyUSB0"),
        baud=Key(Int(1), "baud rate", 115200),
        user=Key(Str(nonempty=True), "login user", "root"),
        password_env=Key(Str(nonempty=True), "environment variable holding the login password "
                         "(unset: verify prompts)", "RK3576_CONSOLE_PASSWORD"),
        login_timeout=Key(Number(), "seconds to wait for the login prompt after boot", 300),
        command_timeout=Key(Number(), "seconds to wait for a command's output", 30),
        place=Key(Nullable(Str(nonempty=True)), "labgrid place whose serial console (and power "
                  "switch) verify uses instead of verify.console; null: none", None),
        rkllm=Key(_section(
            None,
            model=Key(Nullable(Str()), "the .rkllm model's path on the board; set: verify runs the RKLLM "
                      "check; null: no check", None),
            **_run_keys(_RK, "demo"),
        ), "the RKLLM check: run the demo program, parse the runtime's lines and figures", {}),
        multimodal=Key(_section(
            None,
            model=Key(Nullable(Str()), "the multimodal .rkllm model's path on the board; set (or encoder or "
                      "image): verify runs the multimodal check; null: no check", None),
            **_run_keys(_MM, "multimodal demo"),
            encoder=Key(Nullable(Str()), "the vision encoder (.rknn) on the board", None),
            image=Key(Nullable(Str()), "the picture on the board the question is about", None),
            core_num=Key(Nullable(Int(1)), f"NPU cores for the image encoder; null: {_MM['core_num']}", None),
            platform=Key(Nullable(Str()), "the demo's 7th argument (release 1.3.0 needs rk3576; 1.2.1 takes six); "
                         "null: none", None),
            max_llm_load_ms=Key(Nullable(Number()), "fail above this LLM load time (ms); null: no limit", None),
            max_imgenc_load_ms=Key(Nullable(Number()), "fail above this image encoder load time (ms); "
                                   "null: no limit", None),
            max_imgenc_inference_ms=Key(Nullable(Number()), "fail above this image encoder inference time (ms); "
                                        "null: no limit", None),
        ), "the multimodal check: run rknn-llm's image demo, parse its times, the runtime's lines and figures "
           "(docs/apps.md)", {}),
    ), "the on-board check over the serial console", {}),
    flash=Key(_section(
        FlashSpec,
        method=Key(Choice(*FLASH_METHODS), "how update.img reaches "
                   "the board", "upgrade_tool"),
        tool=Key(Nullable(Str()), "path to the flashing tool; null: found on PATH", None),
    ), "flashing the board", {}),
    cache=Key(_section(
        CacheSpec,
        enabled=Key(Bool(), "use the build cache; --no-cache or RK3576_CACHE=0 turn it off for a run", True),
        mirrors=Key(ListOf(Str(nonempty=True)), "read-only caches asked first, in order: dir:PATH, a "
                    "directory (relative to the recipe) or oci://host[:port]/repository", []),
        store=Key(Nullable(Str(nonempty=True)), "the read-write cache, asked last; every step built "
                  "is stored there; null: none", None),
        trusted=Key(ListOf(Str(nonempty=True)), "signers whose entries are taken: OpenSSH public key "
                    "lines, or .pub/allowed_signers files (relative to the recipe)", []),
        signing_key=Key(Nullable(PathT()), "OpenSSH private key (or the .pub of a key in ssh-agent) that "
                        "signs every entry stored; its own entries are then trusted, unsigned ones in the "
                        "store refused; null: entries are stored unsigned", None),
        trust=Key(Choice("signed", "any"), "signed: a mirror's entry must be signed by a trusted key; "
                  "any: unsigned mirror entries are taken too (anyone who can write the mirror decides "
                  "what goes into the image)", "signed"),
    ), "the shared build cache of step products", {}),
    release=Key(_section(
        ReleaseSpec,
        key=Key(Nullable(PathT()), "OpenSSH private key (or the .pub of a key in ssh-agent) that signs the "
                "release; --key overrides; null: --key must be given", None),
        supplier=Key(Nullable(Str(nonempty=True)), "the organisation that ships the firmware: the SBOMs' "
                     "supplier (an NTIA minimum element) and the published artifact's vendor; --supplier "
                     "overrides; null: --supplier must be given", None),
        sdk_supplier=Key(Nullable(Str(nonempty=True)), "the supplier of the SDK, kernel, U-Boot and loader in "
                         "the SBOMs (e.g. the vendor of a repackaged SDK); null: Rockchip", None),
        trusted=Key(ListOf(Str(nonempty=True)), "signers a --since release must be signed by, and the new "
                    "release is checked against after signing: OpenSSH public key lines, or "
                    ".pub/allowed_signers files (relative to the recipe); --trusted replaces them", []),
    ), "signed releases (`rk3576-build release`, docs/release.md)", {}),
)


def schema_table() -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, description) for every key in SCHEMA, as docs/recipes.md lists them."""
    rows: list[tuple[str, str, str, str]] = []

    def walk(section: Section, prefix: str) -> None:
        for name, key in section.keys.items():
            dotted = prefix + name
            rows.append((dotted, key.type.text, _default_text(key.default), key.doc))
            inner = key.type.item if isinstance(key.type, (ListOf, MapOf)) else key.type
            inner = inner.section if isinstance(inner, StrOrSection) else inner
            if isinstance(inner, Section):
                below = {ListOf: "[].", MapOf: ".<name>."}.get(type(key.type), ".")
                walk(inner, dotted + below)

    walk(SCHEMA, "")
    return rows


def _default_text(default: Any) -> str:
    if default is REQUIRED:
        return "required"
    if isinstance(default, Computed):
        return default.text
    return json.dumps(default)


def documented_keys() -> set[str]:
    """Dotted key paths in SCHEMA, e.g. "sdk.url", "steps[].depends", "builder.mounts[].read_only"."""
    return {row[0] for row in schema_table()}



def section_keys(dotted: str) -> dict[str, Key]:
    """The keys of the mapping at `dotted` (e.g. "verify.rkllm") as SCHEMA declares them."""
    section = SCHEMA
    for name in dotted.split("."):
        inner = section.keys[name].type
        if not isinstance(inner, Section):
            raise KeyError(f"{dotted}: {name} is not a mapping")
        section = inner
    return section.keys
