"""Rockchip's build.sh: which commands it has, how lunch selects the board, running a step, reading its log.

The facts modelled here are those of Rockchip's Linux SDK framework
(device/rockchip/common/scripts/build.sh): the commands it accepts are the patterns its
hooks (common/build-hooks/*.sh) answer to `support-cmds`, after it rewrites
`<chip>:<rest>` and `<name>_defconfig`; its usage text (lines `name[:cmds]<spaces>\\t<text>`)
does not list them all (`lunch`) and is only the fallback for a framework without hooks.
An unknown command prints `ERROR: Unhandled option: X` plus the usage and exits 0; the
lunch menu is answered by name, and the selection is recorded in output/defconfig and
output/.config.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rk3576_build.build.container import Mount, StepFailed, run_step
from rk3576_build.config.model import LUNCH_MODES
from rk3576_build.core.errors import UserError
from rk3576_build.core.text import plain

_log = logging.getLogger(__name__)

MENU_HEADER = "Pick a defconfig:"
# The menu's prompt, not its echo in the error trap's quoted command (`read -p "Which ..." INDEX`).
PROMPT_RE = re.compile(r"(?<!\")Which would you like\? \[\d*\]: ?")
ENTRY_RE = re.compile(r"^\s*(\d+)\.\s+(\S+)\s*$")
# A usage line: name (or a|b), then optional `[:cmds]`, `:x` or ` <arg>`, then a tab and a description.
USAGE_LINE_RE = re.compile(
    r"^[ \t]*(?P<names>[A-Za-z0-9*][\w.*+-]*(?:\|[A-Za-z0-9][\w.+-]*)*)(?:[\[:< ][^\t\n]*)?\t[ \t]*\S", re.M)
MIN_USAGE_NAMES = 3  # fewer parsed names: not the framework's usage, so no verdict
# Options build.sh handles itself, before asking the hooks (`clean:<module>` too).
BUILTIN_OPTIONS = frozenset({"help", "h", "-h", "--help", "usage", "?", "cleanall", "post-rootfs"})
# build.sh reads an option matching this as `defconfig:<option>`.
DEFCONFIG_OPTION_RE = re.compile(r"[0-9a-z_]*_defconfig")
PLAIN_NAME_RE = re.compile(r"[\w.+-]+")
PROBE_MARK = "@rk3576-build-probe"
# Run in the SDK's top directory inside the builder: `./build.sh help` (the usage text, the
# fallback), then, when the framework's build.sh (what ./build.sh links to, else the one at its
# usual place behind a vendor's wrapper) collects its commands from hooks (`support-cmds`),
# each hook asked as build.sh asks it (same environment variables, same order: the selected
# chip's own hooks, then common/build-hooks/, stopping at a failing one, words through xargs),
# and the chip directories build.sh rewrites `<chip>:<rest>` for. Nothing is built.
PROBE_SCRIPT = r"""
mark() { printf '%s %s\n' "$PROBE_MARK" "$*"; }
./build.sh help </dev/null
mark help-exit $?
build_sh=
for candidate in "$(realpath build.sh)" "$PWD/device/rockchip/common/scripts/build.sh"; do
	if grep -qs -e support-cmds "$candidate"; then
		build_sh="$(realpath "$candidate")"
		break
	fi
done
if [ -z "$build_sh" ]; then
	mark no-support-cmds
	exit 0
fi
mark framework "$build_sh"
export LC_ALL=C RK_SESSION=rk3576-build-probe RK_DEFAULT_TARGET=all
export RK_SCRIPTS_DIR="$(dirname "$build_sh")"
export RK_COMMON_DIR="$(realpath "$RK_SCRIPTS_DIR/..")"
export RK_SDK_DIR="$(realpath "$RK_COMMON_DIR/../../..")"
export RK_DEVICE_DIR="$RK_SDK_DIR/device/rockchip"
export RK_CHIPS_DIR="$RK_DEVICE_DIR/.chips" RK_CHIP_DIR="$RK_DEVICE_DIR/.chip"
export RK_DATA_DIR="$RK_COMMON_DIR/data" RK_TOOL_DIR="$RK_COMMON_DIR/tools"
export RK_IMAGE_DIR="$RK_COMMON_DIR/images" RK_KBUILD_DIR="$RK_COMMON_DIR/linux-kbuild"
export RK_CONFIG_IN="$RK_COMMON_DIR/configs/Config.in"
export RK_BUILD_HOOK_DIR="$RK_COMMON_DIR/build-hooks" RK_BUILD_HELPER="$RK_COMMON_DIR/build-hooks/build-helper"
export RK_POST_HOOK_DIR="$RK_COMMON_DIR/post-hooks" RK_POST_HELPER="$RK_COMMON_DIR/post-hooks/post-helper"
export RK_PARTITION_HELPER="$RK_SCRIPTS_DIR/partition-helper"
export RK_OUTDIR="$RK_SDK_DIR/output" RK_ROCKDEV_DIR="$RK_SDK_DIR/rockdev"
export RK_EXTRA_PART_OUTDIR="$RK_OUTDIR/extra-part" RK_SESSION_DIR="$RK_OUTDIR/sessions"
export RK_LOG_DIR="$RK_OUTDIR/sessions/$RK_SESSION" RK_LOG_BASE_DIR="$RK_OUTDIR/log"
export RK_FIRMWARE_DIR="$RK_OUTDIR/firmware" RK_SECURITY_FIRMWARE_DIR="$RK_OUTDIR/security-firmware"
export RK_CONFIG="$RK_OUTDIR/.config" RK_DEFCONFIG_LINK="$RK_OUTDIR/defconfig"
export RK_OWNER_UID="$(stat --format %u "$RK_SDK_DIR")"
# build.sh exports its log functions to the hooks.
rk_log() { local c="$1"; shift; echo -e "\e[${c}m$*\e[0m"; }
message() { rk_log 36 "$@"; }; notice() { rk_log 35 "$@"; }; warning() { rk_log 34 "$@"; }
error() { rk_log 91 "$@"; }; fatal() { rk_log 31 "$@"; }
export -f rk_log message notice warning error fatal
err="$(mktemp)"
for dir in "$RK_CHIP_DIR/build-hooks" "$RK_BUILD_HOOK_DIR"; do
	[ -d "$dir" ] || continue
	mapfile -t hooks < <(find "$dir" -maxdepth 1 -name "*.sh" | sort)
	for hook in "${hooks[@]}"; do
		words="$(set -o pipefail; "$hook" support-cmds all </dev/null 2>"$err" | xargs | tr "\n" " ")"
		status=$?
		mark hook "$status" "$hook"
		mark patterns "$words"
		sed "s/^/$PROBE_MARK stderr /" "$err"
		[ "$status" -eq 0 ] || break 2
	done
done
rm -f "$err"
for chip in $(ls "$RK_CHIPS_DIR" 2>/dev/null); do
	[ ! -d "$RK_CHIPS_DIR/$chip" ] || mark chip "$chip"
done
""".replace("$PROBE_MARK", PROBE_MARK)
# build.sh re-prompts after an invalid answer; never loop on it.
MAX_ANSWERS = 3
# Names one SDK spells differently from another (MYIR's guide vs upstream's usage), best first.
EQUIVALENTS = {
    "u-boot": ("uboot", "loader"), "uboot": ("u-boot", "loader"), "loader": ("uboot", "u-boot"),
    "module": ("modules",), "modules": ("module",),
    "ubuntu": ("rootfs", "debian"), "debian": ("rootfs", "ubuntu"), "rootfs": ("ubuntu", "debian", "buildroot"),
    "buildroot": ("rootfs",), "yocto": ("rootfs",),
    "update": ("updateimg",), "updateimg": ("update", "firmware"),
    "kernel-config": ("kconfig",), "kconfig": ("kernel-config",),
}
# Output that says build.sh did not run the command it was given (whatever its exit status).
NOT_RUN_RE = re.compile(r"Unhandled option:?.*|^[ \t]*Usage: build\.sh\b.*", re.M)
# The first lines of the real cause of a failure; the error trap starts at TRAP_RE.
ERROR_RE = re.compile(r"(?i:\berror:)|No such file|No available defconfigs|No prebuilt GCC toolchain"
                      r"|undefined!|^[ \t]*ERROR\b")
TRAP_RE = re.compile(r"^[ \t]*ERROR: Running .* failed!", re.M)
MAX_ERROR_LINES = 6
TAIL_LINES = 20


# --- the commands build.sh supports ----------------------------------------------------------

def parse_usage(text: str) -> frozenset[str] | None:
    """Command names in build.sh's usage text; None when it does not look like the framework's usage."""
    names: set[str] = set()
    for match in USAGE_LINE_RE.finditer(plain(text)):
        names.update(match.group("names").split("|"))
    return frozenset(names) if len(names) >= MIN_USAGE_NAMES else None


_POSIX_CLASSES = {"alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z", "lower": "a-z",
                  "space": r" \t\n\r\f\v", "blank": r" \t", "xdigit": "0-9A-Fa-f", "punct": r"!-/:-@\[-`{-~"}


def _bracket(pattern: str, start: int) -> tuple[str, int]:
    """The POSIX bracket expression at `start` as a Python class, and the index after it."""
    i, out = start + 1, ["["]
    if i < len(pattern) and pattern[i] == "^":
        out.append("^")
        i += 1
    first = True
    while i < len(pattern) and (first or pattern[i] != "]"):
        if pattern.startswith("[:", i) and ":]" in pattern[i + 2:]:
            end = pattern.index(":]", i + 2)
            out.append(_POSIX_CLASSES.get(pattern[i + 2:end], ""))
            i = end + 2
        else:
            out.append("\\" + pattern[i] if pattern[i] in "\\[]^" else pattern[i])
            i += 1
        first = False
    if i >= len(pattern):
        raise ValueError("unterminated bracket expression")
    return "".join(out) + "]", i + 1


@functools.cache
def option_regex(pattern: str) -> re.Pattern | None:
    """A hook's command pattern as build.sh matches it (`grep -q "^<pattern>$"`, a POSIX basic
    regular expression, GNU escapes included) as a Python regex; None when it cannot be read."""
    source, out, i = f"^{pattern}$", [], 0
    try:
        while i < len(source):
            char = source[i]
            if char == "\\" and i + 1 < len(source):
                nxt = source[i + 1]
                out.append(nxt if nxt in "(){}|+?" else re.escape(nxt))
                i += 2
                continue
            if char == "[":
                text, i = _bracket(source, i)
                out.append(text)
                continue
            if char == "^" and i == 0 or char == "$" and i == len(source) - 1:
                out.append(char)
            elif char == "*" and out and out[-1] not in ("^", "(", "|"):
                out.append(char)
            elif char == ".":
                out.append(char)
            else:
                out.append(re.escape(char))
            i += 1
        return re.compile("".join(out), re.S)
    except (ValueError, re.error):
        return None


@dataclass(frozen=True)
class Commands:
    """What an SDK's build.sh accepts.

    `source` "support-cmds": `names` are the patterns its hooks answer, matched as build.sh
    matches them (after its rewrites); "usage": the names its usage text lists (a framework
    without hooks). `chips`: the directories under device/rockchip/.chips/. Iterating gives
    the names, sorted.
    """

    names: frozenset[str]
    source: str = "usage"
    chips: frozenset[str] = field(default_factory=frozenset)

    def __iter__(self):
        return iter(sorted(self.names))

    def __len__(self) -> int:
        return len(self.names)

    def rewrite(self, option: str) -> str:
        """The option as build.sh checks it: `<chip>:<rest>` -> `chip:<chip>:<rest>`,
        `<name>_defconfig` -> `defconfig:<name>_defconfig`."""
        if option.split(":")[0] in self.chips:
            return f"chip:{option}"
        if DEFCONFIG_OPTION_RE.fullmatch(option):
            return f"defconfig:{option}"
        return option

    def accepts(self, target: str) -> bool:
        """Whether build.sh runs `target` rather than answering `Unhandled option`."""
        option = self.rewrite(target)
        base = option.split(":")[0]
        if self.source != "support-cmds":
            raw = target.split(":")[0]
            return base in self.names or raw in self.names or \
                (raw.endswith("_defconfig") and "*_defconfig" in self.names)
        if base in BUILTIN_OPTIONS or base == "clean" and ":" in option:
            return True
        for pattern in self.names:
            regex = option_regex(pattern)
            if pattern == base or regex is not None and regex.match(base):
                return True
        return False

    def plain_names(self) -> list[str]:
        """The names that are plain words (not patterns such as `[^:]*_defconfig` or `*_defconfig`)."""
        return sorted(name for name in self.names if PLAIN_NAME_RE.fullmatch(name))

    def describe(self) -> str:
        if self.source == "support-cmds":
            return f"build.sh accepts (its hooks' support-cmds): {', '.join(self)}"
        return f"build.sh help lists: {', '.join(self)}"


def as_commands(commands: Commands | Iterable[str]) -> Commands:
    """A Commands from a plain set of usage names (as parse_usage gives) or a Commands."""
    return commands if isinstance(commands, Commands) else Commands(frozenset(commands))


def parse_probe(text: str) -> Commands | None:
    """What the probe's output (PROBE_SCRIPT's log) says build.sh accepts: the hooks' patterns when
    build.sh collects them from hooks and one answered, else the usage names; None when neither."""
    text = plain(text)
    usage: list[str] = []
    patterns: list[str] = []
    chips: set[str] = set()
    marked = False
    for line in text.splitlines():
        if not line.startswith(PROBE_MARK + " "):
            if not marked:
                usage.append(line)
            continue
        marked = True
        kind, _, rest = line[len(PROBE_MARK) + 1:].partition(" ")
        if kind == "patterns":
            patterns.extend(word for word in rest.split() if word != "default")
        elif kind == "chip":
            chips.add(rest.strip())
        elif kind == "hook" and not rest.startswith("0 "):
            status, _, hook = rest.partition(" ")
            _log.warning("build.sh hook %s failed to answer support-cmds (exit %s): build.sh accepts only "
                         "the commands of the hooks before it", hook, status)
    if patterns:
        return Commands(frozenset(patterns), "support-cmds", frozenset(chips))
    names = parse_usage("\n".join(usage))
    return Commands(names, "usage", frozenset(chips)) if names is not None else None


def supports(commands: Commands | Iterable[str], target: str) -> bool:
    """Whether build.sh accepts `target` (`kernel:cmds` counts as `kernel`; see Commands.accepts)."""
    return as_commands(commands).accepts(target)


def closest(target: str, commands: Commands | Iterable[str], limit: int = 3) -> list[str]:
    """Supported names nearest to `target`: known equivalents first, then look-alikes."""
    names = as_commands(commands).plain_names()
    base = target.split(":")[0]
    found = [name for name in EQUIVALENTS.get(base, ()) if name in names]
    found += [name for name in difflib.get_close_matches(base, names, n=limit, cutoff=0.6) if name not in found]
    return found[:limit]


def choose_targets(steps: Sequence, commands: Commands | Iterable[str] | None, *, recipe: Path,
                   local_file: Path | None = None) -> dict[str, str]:
    """Step name -> the build.sh command it runs: the first of its targets that `commands` accepts.

    With nothing probed (`commands` None) each step takes its first target. Steps
    with a raw `command` are left out. A step none of whose targets is supported is
    a UserError naming every such step, its closest supported names and where to fix it.
    """
    commands = None if commands is None else as_commands(commands)
    chosen: dict[str, str] = {}
    problems: list[str] = []
    for index, step in enumerate(steps):
        if not step.targets:
            continue
        if commands is None:
            chosen[step.name] = step.targets[0]
            continue
        for target in step.targets:
            if supports(commands, target):
                chosen[step.name] = target
                break
        else:
            tried = " or ".join(f"`{t}`" for t in step.targets)
            near = list(dict.fromkeys(n for t in step.targets for n in closest(t, commands)))
            hint = f"closest supported: {', '.join(near)}" if near else "no similar command"
            problems.append(f"step {step.name} (steps[{index}].target): this SDK's build.sh has no {tried}; "
                            f"{hint}")
    if problems:
        assert commands is not None  # a problem is a target the probed commands lack
        local = local_file or recipe.with_name(recipe.stem + ".local.yaml")
        raise UserError(
            "\n".join(problems) + f"\n{commands.describe()}.\n"
            f"Add one of the supported names to the step's target list in {recipe} (or override "
            f"steps in {local}); no build step has run.")
    return chosen


# --- lunch -----------------------------------------------------------------------------------

def resolve_lunch_mode(mode: str, sdk_dir: Path) -> str:
    """`auto`: the chip form on a fresh tree (no device/rockchip/.chip), else the menu."""
    if mode != "auto":
        return mode
    return "menu" if (Path(sdk_dir) / "device" / "rockchip" / ".chip").exists() else "chip"


def lunch_command(mode: str, defconfig: str, chip: str) -> str:
    """The build.sh command line that selects `defconfig` in `mode` (not `auto`)."""
    commands = {
        "menu": "./build.sh lunch",
        "defconfig": f"./build.sh {defconfig}",
        "lunch-name": f"./build.sh lunch:{defconfig}",
        "chip": f"./build.sh {chip}:{defconfig}",
    }
    if mode not in commands:
        raise UserError(f"lunch mode {mode!r} is unknown: use one of {', '.join(LUNCH_MODES)}")
    return commands[mode]


def parse_lunch_menu(text: str) -> list[tuple[int, str]]:
    """(index, name) entries of the last "Pick a defconfig:" menu in `text`."""
    text = plain(text)
    start = text.rfind(MENU_HEADER)
    if start < 0:
        return []
    body = text[start + len(MENU_HEADER):]
    prompt = PROMPT_RE.search(body)
    if prompt:
        body = body[:prompt.start()]
    return [(int(m.group(1)), m.group(2)) for m in map(ENTRY_RE.match, body.splitlines()) if m]


def lunch_answer(text: str, defconfig: str) -> str | None:
    """The line to type at the menu's prompt for exactly `defconfig`; None until the prompt shows."""
    text = plain(text)
    if MENU_HEADER not in text or not PROMPT_RE.search(text[text.rfind(MENU_HEADER):]):
        return None
    entries = parse_lunch_menu(text)
    for index, name in entries:
        if name == defconfig:
            return f"{index}\n"
    offered = "\n".join(f"  {index}. {name}" for index, name in entries) or "  (no entries)"
    raise UserError(f"build.sh lunch does not offer {defconfig}; it offered:\n{offered}\n"
                    "Set lunch.defconfig in the recipe to one of these names.")


def _menu_responder(defconfig: str) -> Callable[[str], str | None]:
    """Answers each new prompt once (bounded), by name."""
    answered = 0

    def respond(text: str) -> str | None:
        nonlocal answered
        prompts = len(PROMPT_RE.findall(text))
        if prompts <= answered:
            return None
        if answered >= MAX_ANSWERS:
            raise UserError(f"build.sh lunch keeps asking after {answered} answers for {defconfig}; "
                            "see the step log")
        answer = lunch_answer(text, defconfig)
        if answer is not None:
            answered = prompts
        return answer

    return respond


def read_selection(sdk_dir: Path) -> dict[str, str | None]:
    """What the SDK has selected: output/defconfig's link target and RK_DEFCONFIG in output/.config."""
    out = Path(sdk_dir) / "output"
    link = os.readlink(out / "defconfig") if (out / "defconfig").is_symlink() else None
    rk_defconfig = None
    if (out / ".config").is_file():
        match = re.search(r'^RK_DEFCONFIG="?([^"\n]*)"?\s*$', (out / ".config").read_text(errors="replace"), re.M)
        rk_defconfig = match.group(1) if match else None
    return {"link": link, "rk_defconfig": rk_defconfig}


def check_selection(sdk_dir: Path, defconfig: str) -> None:
    """UserError unless the SDK's recorded selection is `defconfig` (each record that exists must agree)."""
    found = read_selection(sdk_dir)
    records = {"output/defconfig -> ": found["link"], "RK_DEFCONFIG in output/.config: ": found["rk_defconfig"]}
    present = {label: value for label, value in records.items() if value}
    if not present:
        raise UserError(f"lunch selected nothing: no output/defconfig link and no RK_DEFCONFIG in "
                        f"output/.config under {sdk_dir} (the recipe asks for {defconfig})")
    wrong = {label: value for label, value in present.items() if Path(value).name != defconfig}
    if wrong:
        said = "; ".join(f"{label}{value}" for label, value in wrong.items())
        raise UserError(f"lunch selected the wrong defconfig: {said}; the recipe asks for {defconfig} "
                        "(lunch.defconfig). Check lunch.mode and the step log.")


# --- reading a step's log ----------------------------------------------------------------------

def not_run_reason(text: str) -> str | None:
    """The line saying build.sh did not run its command (`Unhandled option`, its usage banner), if any."""
    match = NOT_RUN_RE.search(plain(text))
    return match.group(0).strip() if match else None


def first_errors(text: str, limit: int = MAX_ERROR_LINES) -> list[str]:
    """The first lines that name the real cause: compiler errors, missing files, ERROR lines before the trap."""
    text = plain(text)
    trap = TRAP_RE.search(text)
    cause = text[:trap.start()] if trap else text
    found: list[str] = []
    for line in cause.splitlines():
        line = line.rstrip()
        if ERROR_RE.search(line) and line not in found:
            found.append(line)
            if len(found) == limit:
                break
    return found


def failure_message(step: str, command: str, code: int, elapsed: float, log_path: Path) -> str:
    text = Path(log_path).read_text(errors="replace")
    errors = first_errors(text)
    if errors:
        shown = "first errors"
    else:
        errors, shown = plain(text).splitlines()[-TAIL_LINES:], "last lines"
    body = "\n".join(f"  {line}" for line in errors)
    return (f"build step {step} (`{command}`) failed with exit code {code} after {elapsed:.1f}s; "
            f"{shown}:\n{body}\nFull log: {log_path}")


# --- running in the builder --------------------------------------------------------------------

@dataclass(frozen=True)
class Invocation:
    """What one step runs: its command line, the defconfig to answer a lunch menu with, the one to read back."""

    command: str
    answer_menu: str | None = None
    expect_defconfig: str | None = None


def invocation(target: str | None, command: str | None, *, sdk_dir: Path, lunch) -> Invocation:
    """The step's command: `./build.sh <target>`, lunch in its mode (`lunch`: a LunchSpec), or a raw command."""
    if target == "lunch":
        mode = resolve_lunch_mode(lunch.mode, sdk_dir)
        # Every mode may show the menu: build.sh picks a defconfig by substring (`<chip>:<name>`
        # and `<name>_defconfig` too, as `defconfig:<name>`), so another name containing it
        # (a bak_ copy) brings the menu up. Answered by name; nothing is typed without one.
        return Invocation(lunch_command(mode, lunch.defconfig, lunch.chip), lunch.defconfig, lunch.defconfig)
    if target:
        return Invocation(f"./build.sh {target}")
    if command is None or not command.strip():
        raise UserError("a build step has no target and no command: set one in the recipe")
    return Invocation(command)


def _sdk_mount(sdk_dir: Path) -> tuple[Path, str]:
    """The SDK's real path, mounted at the same path in the container so recorded paths hold on the host."""
    sdk_dir = Path(sdk_dir)
    if not (sdk_dir / "build.sh").exists():
        raise UserError(f"{sdk_dir} has no build.sh: is it the SDK's top directory (check sdk.strip_components)?")
    real = sdk_dir.resolve()
    return real, str(real)


def run_build_step(*, image: str, sdk_dir: Path, step: str, run: Invocation, privileged: bool,
                   env: Mapping[str, str], mounts: Sequence[Mount], log_path: Path, echo=_log.info) -> float:
    """Run one step in the SDK; return elapsed seconds.

    Fails (UserError/StepFailed) on a non-zero exit with the log's first real errors, when
    the output says build.sh did not run the command, and when lunch read back another
    defconfig than the one asked for.
    """
    real, inside = _sdk_mount(sdk_dir)
    responder = _menu_responder(run.answer_menu) if run.answer_menu else None
    try:
        elapsed = run_step(image, ["bash", "-c", run.command], name=step, workdir=inside,
                           mounts=[Mount(real, inside), *mounts], env=env, log_path=log_path,
                           privileged=privileged, responder=responder, echo=echo)
    except StepFailed as exc:
        raise StepFailed(failure_message(step, run.command, exc.exit_code, exc.elapsed, log_path),
                         exit_code=exc.exit_code, log_path=log_path, elapsed=exc.elapsed) from None
    reason = not_run_reason(Path(log_path).read_text(errors="replace"))
    if reason:
        raise UserError(f"build step {step}: build.sh did not run `{run.command}` although it exited 0; "
                        f"it said: {reason}\nFull log: {log_path}")
    if run.expect_defconfig:
        check_selection(real, run.expect_defconfig)
    return elapsed


def probe_commands(*, image: str, sdk_dir: Path, env: Mapping[str, str], mounts: Sequence[Mount],
                   log_path: Path, echo=_log.info) -> Commands | None:
    """What the SDK's build.sh accepts, asked in the builder (PROBE_SCRIPT); None when neither its
    hooks nor its usage text say."""
    real, inside = _sdk_mount(sdk_dir)
    try:
        run_step(image, ["bash", "-c", PROBE_SCRIPT], name="probe", workdir=inside,
                 mounts=[Mount(real, inside), *mounts], env=env, log_path=log_path, echo=echo)
    except StepFailed:
        pass  # some build.sh versions exit non-zero after their usage: the text is what counts
    return parse_probe(Path(log_path).read_text(errors="replace"))
