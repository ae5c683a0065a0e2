"""Rockchip's build.sh: answering its lunch menu by name, and running its steps in the builder container."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .container import Mount, run_step
from .errors import UserError

MENU_HEADER = "Pick a defconfig:"
PROMPT_RE = re.compile(r"Which would you like\? \[\d*\]: ?")
ENTRY_RE = re.compile(r"^\s*(\d+)\.\s+(\S+)\s*$")
DEFCONFIG_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")
# The lunch step runs on a terminal, where vendor scripts may colour their menu.
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LUNCH_MODES = ("menu", "direct")
SDK_TARGET = "/sdk"
# build.sh re-prompts after an invalid answer; never loop on it.
MAX_ANSWERS = 3


def parse_lunch_menu(text: str) -> list[tuple[int, str]]:
    """(index, name) entries of the last "Pick a defconfig:" menu in `text`."""
    text = ANSI_RE.sub("", text)
    start = text.rfind(MENU_HEADER)
    if start < 0:
        return []
    body = text[start + len(MENU_HEADER):]
    prompt = PROMPT_RE.search(body)
    if prompt:
        body = body[:prompt.start()]
    entries = []
    for line in body.splitlines():
        match = ENTRY_RE.match(line)
        if match:
            entries.append((int(match.group(1)), match.group(2)))
    return entries


def lunch_answer(text: str, defconfig: str) -> str | None:
    """The line to type at the menu's prompt for exactly `defconfig`; None until the prompt shows."""
    text = ANSI_RE.sub("", text)
    if MENU_HEADER not in text or not PROMPT_RE.search(text[text.rfind(MENU_HEADER):]):
        return None
    entries = parse_lunch_menu(text)
    for index, name in entries:
        if name == defconfig:
            return f"{index}\n"
    offered = "\n".join(f"  {index}. {name}" for index, name in entries) or "  (no entries)"
    raise UserError(f"build.sh lunch does not offer {defconfig}; it offered:\n{offered}\n"
                    "Set lunch.defconfig in the recipe to one of these names.")


def is_lunch(command: str) -> bool:
    words = command.split()
    return bool(words) and words[-1] == "lunch"


def step_command(step_command: str, *, defconfig: str | None, lunch_mode: str) -> list[str]:
    """The container command for a recipe step (the lunch step direct or by menu)."""
    if lunch_mode not in LUNCH_MODES:
        raise UserError(f"lunch mode {lunch_mode!r} is unknown: use one of {', '.join(LUNCH_MODES)}")
    if not step_command.strip():
        raise UserError("a build step has an empty command: set its command in the recipe")
    command = step_command
    if is_lunch(step_command):
        if not defconfig:
            raise UserError("the lunch step needs lunch.defconfig in the recipe "
                            "(e.g. rockchip_rk3576_myd_lr3576_defconfig)")
        if not DEFCONFIG_RE.match(defconfig):
            raise UserError(f"lunch.defconfig {defconfig!r} is not a defconfig name")
        if lunch_mode == "direct":
            # `./build.sh lunch` -> `./build.sh <name>_defconfig`, which newer SDKs accept.
            command = " ".join([*step_command.split()[:-1], shlex.quote(defconfig)])
    return ["bash", "-c", command]


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


def run_build_step(*, image: str, sdk_dir: Path, step: str, command: str, privileged: bool, env: Mapping[str, str],
                   mounts: Sequence[Mount], log_path: Path, defconfig: str | None = None, lunch_mode: str = "menu",
                   echo=print) -> float:
    """Run one build.sh step in the SDK (mounted at /sdk); return elapsed seconds."""
    sdk_dir = Path(sdk_dir)
    if not (sdk_dir / "build.sh").is_file():
        raise UserError(f"{sdk_dir} has no build.sh: is it the SDK's top directory (check sdk.strip_components)?")
    argv = step_command(command, defconfig=defconfig, lunch_mode=lunch_mode)
    responder = _menu_responder(defconfig) if is_lunch(command) and lunch_mode == "menu" else None
    return run_step(image, argv, name=step, workdir=SDK_TARGET,
                    mounts=[Mount(sdk_dir.resolve(), SDK_TARGET), *mounts], env=env, log_path=log_path,
                    privileged=privileged, responder=responder, echo=echo)
