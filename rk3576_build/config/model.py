"""The recipe as the build uses it: frozen dataclasses, and the error a recipe that cannot be used raises."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rk3576_build.config.quoting import describe, did_you_mean, listed
from rk3576_build.core.errors import UserError
from rk3576_build.core.text import cut

INPUTS = ("sdk", "driver", "patches", "overlays")  # what a step may depend on besides earlier steps
LUNCH_MODES = ("auto", "menu", "defconfig", "lunch-name", "chip")  # how the lunch step selects it (build/buildsh.py)
FLASH_METHODS = ("upgrade_tool", "rkdeveloptool", "virtual")  # how update.img reaches the board (board/flash.py)
APP_BUILD_SYSTEMS = ("cmake", "make")  # how an app builds (build/apps.py)
APP_TOOLCHAINS = ("auto", "sdk", "builder")  # auto: the SDK's prebuilt cross compiler when it has one
APP_OVERLAY_PREFIX = "app-"  # an enabled app's install tree is the rootfs overlay `app-<name>`


class RecipeError(UserError):
    """A recipe that cannot be used; `errors` holds one `<file>: <key>: <problem>` line per problem."""

    def __init__(self, message: str, errors: list[str] | None = None):
        super().__init__(message)
        self.errors = errors if errors is not None else [message]


# --------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class _Spec:
    def to_dict(self) -> dict:
        """Plain, JSON-serialisable data (paths as strings, tuples as lists)."""
        return plain(self)


@dataclass(frozen=True)
class SdkSpec(_Spec):
    url: str
    sha256: str | None
    filename: str | None
    strip_components: int
    kernel_dir: str


@dataclass(frozen=True)
class DriverSpec(_Spec):
    name: str
    version: str
    url: str
    sha256: str | None
    filename: str | None
    source_dir: str
    dest: str


@dataclass(frozen=True)
class PatchesSpec(_Spec):
    dir: Path | None


@dataclass(frozen=True)
class PreflightSpec(_Spec):
    accept: tuple[str, ...]


@dataclass(frozen=True)
class Mount(_Spec):
    """A host directory bind-mounted into a build container (the recipe's builder.mounts, and the tool's own)."""

    source: Path | None  # None when it expanded to "" (e.g. an unset ${BOARD_KIT:-})
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class BuilderSpec(_Spec):
    dockerfile: Path
    base: str
    build_args: dict[str, str]
    mounts: tuple[Mount, ...]
    env: dict[str, str]
    ccache: bool
    accept: tuple[str, ...]
    accept_probe: dict[str, str] = dataclasses.field(default_factory=dict)  # step name -> the recipe's reason


@dataclass(frozen=True)
class LunchSpec(_Spec):
    defconfig: str
    chip: str
    mode: str


@dataclass(frozen=True)
class Product(_Spec):
    path: str
    unchanged_ok: bool


# `command: ./build.sh <word>` (the old spelling) is the same as `target: <word>`.
_BUILDSH_COMMAND = re.compile(r"^\s*\./build\.sh\s+([A-Za-z0-9][\w.+:-]*)\s*$")


@dataclass(frozen=True)
class StepSpec(_Spec):
    name: str
    description: str
    target: tuple[str, ...]
    command: str | None
    privileged: bool
    depends: tuple[str, ...]
    produces: tuple[Product, ...]

    @property
    def targets(self) -> tuple[str, ...]:
        """The build.sh commands this step may run, first supported one wins; () for a raw command."""
        if self.target:
            return self.target
        match = _BUILDSH_COMMAND.match(self.command or "")
        return (match.group(1),) if match else ()

    @property
    def is_lunch(self) -> bool:
        return "lunch" in self.targets


@dataclass(frozen=True)
class VerifySpec(_Spec):
    expected: str
    console: str
    baud: int
    user: str
    password_env: str
    login_timeout: float
    command_timeout: float
    place: str | None
    rkllm: dict  # the RKLLM check's settings (board/rkllm.py); it runs when rkllm.model is set
    multimodal: dict = dataclasses.field(default_factory=dict)  # the multimodal check's (board/multimodal.py)


@dataclass(frozen=True)
class OverlaySpec(_Spec):
    source: Path  # a host directory whose tree goes into the root filesystem
    name: str


@dataclass(frozen=True)
class AppSourceSpec(_Spec):
    """Where an app's source comes from: exactly one of a tarball (url, sha256), a git repository pinned to a
    commit, or a local directory (config/recipe.py checks that one is set)."""

    url: str | None
    sha256: str | None
    filename: str | None
    strip_components: int
    git: str | None  # a URL, or a local clone's path (made absolute, relative to the recipe)
    commit: str | None
    dir: Path | None

    @property
    def kind(self) -> str:
        """One of "url", "git", "dir"."""
        return "url" if self.url else "git" if self.git else "dir"


@dataclass(frozen=True)
class AppFileSpec(_Spec):
    """A prebuilt input of an app: a local file or directory, or a URL pinned by sha256, and its rootfs path."""

    source: Path | None
    url: str | None
    sha256: str | None
    filename: str | None
    dest: str


@dataclass(frozen=True)
class AppSpec(_Spec):
    """One entry of the recipe's `apps:` mapping (its key is `name`)."""

    enabled: bool
    source: AppSourceSpec
    subdir: str
    patches: Path | None
    build: str
    options: dict[str, str]
    prefix: str
    toolchain: str
    sysroot: str | None
    files: tuple[AppFileSpec, ...]
    name: str = ""  # the key in `apps:`, filled in by the mapping

    @property
    def overlay_name(self) -> str:
        return f"{APP_OVERLAY_PREFIX}{self.name}"


@dataclass(frozen=True)
class FlashSpec(_Spec):
    method: str
    tool: str | None


@dataclass(frozen=True)
class CacheSpec(_Spec):
    enabled: bool
    mirrors: tuple[str, ...]
    store: str | None
    trusted: tuple[str, ...] = ()   # public keys (or .pub files) whose signed entries are taken
    signing_key: Path | None = None  # signs what the store gets
    trust: str = "signed"           # "any": unsigned mirror entries are taken too


@dataclass(frozen=True)
class ReleaseSpec(_Spec):
    """What `rk3576-build release` signs with and says (pipeline/release_stage.py); its options override it."""

    key: Path | None = None           # the signing key: a private key, or the .pub of a key in ssh-agent
    supplier: str | None = None       # who ships the firmware (the SBOMs' supplier); required to release
    sdk_supplier: str | None = None   # the SDK's, kernel's, U-Boot's supplier in the SBOMs; None: Rockchip
    trusted: tuple[str, ...] = ()     # public keys (or .pub files) a --since release and this one must verify


@dataclass(frozen=True)
class Recipe(_Spec):
    path: Path  # the recipe file, as given
    name: str
    description: str
    workdir: Path
    downloads: Path | None
    mirrors: tuple[str, ...]
    offline: bool
    sdk: SdkSpec
    driver: DriverSpec
    patches: PatchesSpec
    preflight: PreflightSpec
    builder: BuilderSpec
    lunch: LunchSpec
    steps: tuple[StepSpec, ...]
    artifacts: tuple[str, ...]
    verify: VerifySpec
    flash: FlashSpec
    lock_file: Path
    local_file: Path | None = None  # the merged <stem>.local.yaml, if there was one
    cache: CacheSpec = CacheSpec(True, (), None)  # the shared build cache (build/cache/)
    rootfs_overlays: tuple[OverlaySpec, ...] = ()  # host trees baked into the rootfs (tasks.py)
    apps: dict[str, AppSpec] = dataclasses.field(default_factory=dict)  # programs built into the image (apps.py)
    release: ReleaseSpec = ReleaseSpec()  # signing and SBOM settings of `release` (pipeline/release_stage.py)
    # Fields the loader fills; every other field is a top-level recipe key (config/schema.py).
    DERIVED: ClassVar[frozenset[str]] = frozenset({"path", "lock_file", "local_file"})

    def section(self, name: str) -> dict:
        """Expanded data of one top-level key as a plain dict (non-mapping keys come as {name: value})."""
        if name in self.DERIVED or name not in {f.name for f in dataclasses.fields(self)}:
            raise ValueError(f"no recipe section {name!r}")
        value = plain(getattr(self, name))
        return value if isinstance(value, dict) else {name: value}

    @property
    def enabled_apps(self) -> tuple[AppSpec, ...]:
        """The apps that are built and baked in, in the recipe's order."""
        return tuple(app for app in self.apps.values() if app.enabled)

    def step(self, name: str) -> StepSpec:
        """The step called `name`; RecipeError naming the known steps otherwise."""
        for step in self.steps:
            if step.name == name:
                return step
        names = [s.name for s in self.steps]
        raise RecipeError(f"recipe {cut(self.name)} has no step {describe(name)}; its steps are: "
                          f"{listed(names)}{did_you_mean(name, names)}")


def plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value

