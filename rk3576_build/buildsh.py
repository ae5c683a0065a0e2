"""Rockchip's build.sh: which commands it has, how lunch selects the board, running a step, reading its log.

The facts modelled here are those of Rockchip's Linux SDK framework
(device/rockchip/common/scripts/build.sh): usage lines `name[:cmds]<spaces>\\t<text>`,
an unknown command printing `ERROR: Unhandled option: X` plus the usage and exiting 0,
a lunch menu answered by name, and the selection recorded in output/defconfig and
output/.config.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from .container import Mount, StepFailed, run_step
from .errors import UserError

_log = logging.getLogger(__name__)

# Terminal escapes: CSI (colours, cursor), OSC (titles), charset selection, other 2-byte ones.
ANSI_RE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()][0-9A-Za-z]|[@-Z\\-_])")
MENU_HEADER = "Pick a defconfig:"
PROMPT_RE = re.compile(r"Which would you like\? \[\d*\]: ?")
ENTRY_RE = re.compile(r"^\s*(\d+)\.\s+(\S+)\s*$")
# A usage line: name (or a|b), then optional `[:cmds]`, `:x` or ` <arg>`, then a tab and a description.
USAGE_LINE_RE = re.compile(
    r"^[ \t]*(?P<names>[A-Za-z0-9*][\w.*+-]*(?:\|[A-Za-z0-9][\w.+-]*)*)(?:[\[:< ][^\t\n]*)?\t[ \t]*\S", re.M)
MIN_USAGE_NAMES = 3  # fewer parsed names: not the framework's usage, so no verdict
HELP_COMMAND = "./build.sh help"
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


def strip_ansi(text: str) -> str:
    return ANSI_RE.sub("", text)


def plain(text: str) -> str:
    """Text without escapes and with plain newlines (a terminal's CR LF and lone CRs become LF)."""
    return strip_ansi(text).replace("\r\n", "\n").replace("\r", "\n")


# --- the commands build.sh supports ----------------------------------------------------------

def parse_usage(text: str) -> frozenset[str] | None:
    """Command names in build.sh's usage text; None when it does not look like the framework's usage."""
    names: set[str] = set()
    for match in USAGE_LINE_RE.finditer(plain(text)):
        names.update(match.group("names").split("|"))
    return frozenset(names) if len(names) >= MIN_USAGE_NAMES else None


def supports(commands: Iterable[str], target: str) -> bool:
    """Whether a command list has `target` (`kernel:cmds` counts as `kernel`; `x_defconfig` as `*_defconfig`)."""
    commands = set(commands)
    base = target.split(":")[0]
    return base in commands or (base.endswith("_defconfig") and "*_defconfig" in commands)


def closest(target: str, commands: Iterable[str], limit: int = 3) -> list[str]:
    """Supported names nearest to `target`: known equivalents first, then look-alikes."""
    names = sorted(c for c in commands if "*" not in c)
    base = target.split(":")[0]
    found = [name for name in EQUIVALENTS.get(base, ()) if name in names]
    found += [name for name in difflib.get_close_matches(base, names, n=limit, cutoff=0.6) if name not in found]
    return found[:limit]


def choose_targets(steps: Sequence, commands: frozenset[str] | None, *, recipe: Path,
                   local_file: Path | None = None) -> dict[str, str]:
    """Step name -> the build.sh command it runs: the first of its targets that `commands` has.

    With no parsed usage (`commands` None) each step takes its first target. Steps
    with a raw `command` are left out. A step none of whose targets is supported is
    a UserError naming every such step, its closest supported names and where to fix it.
    """
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
        local = local_file or recipe.with_name(recipe.stem + ".local.yaml")
        raise UserError(
            "\n".join(problems) + f"\nbuild.sh help lists: {', '.join(sorted(commands or ()))}.\n"
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
        raise UserError(f"lunch mode {mode!r} is unknown: use one of auto, {', '.join(commands)}")
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
        answer = lunch.defconfig if mode in ("menu", "lunch-name") else None
        return Invocation(lunch_command(mode, lunch.defconfig, lunch.chip), answer, lunch.defconfig)
    if target:
        return Invocation(f"./build.sh {target}")
    if not (command or "").strip():
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
                   log_path: Path, echo=_log.info) -> frozenset[str] | None:
    """Run `./build.sh help` in the builder and parse its usage; None when it cannot be parsed."""
    real, inside = _sdk_mount(sdk_dir)
    try:
        run_step(image, ["bash", "-c", HELP_COMMAND], name="probe", workdir=inside,
                 mounts=[Mount(real, inside), *mounts], env=env, log_path=log_path, echo=echo)
    except StepFailed:
        pass  # some build.sh versions exit non-zero after their usage: the text is what counts
    return parse_usage(Path(log_path).read_text(errors="replace"))
