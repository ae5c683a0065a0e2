"""Conformance: the sample SDK and the probe against the recorded output of Rockchip's real framework.

`../shared/docs/real-framework/` (beside the repository) holds what the public
`device/rockchip` framework printed for `help` on a fresh tree, `module` (unknown),
`lunch` on a fresh tree and after `.chip` with standard input at end of file, and the
patterns its dispatcher collects from the hooks (`support-cmds`). These tests run the
sample SDK's build.sh (on the host, with bash) with the same commands and compare exit
status, command sets and the lines that matter, with paths, session names and line
numbers normalised; and they run the probe and the lunch/log parsing on the recorded
output itself. Where the sample differs on purpose, the test says so.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from helpers import REPO, SHARED, unavailable
from rk3576_build.build.buildsh import (
    PROBE_SCRIPT,
    Commands,
    choose_targets,
    first_errors,
    invocation,
    lunch_answer,
    not_run_reason,
    parse_lunch_menu,
    parse_probe,
    parse_usage,
)
from rk3576_build.config.recipe import load_recipe
from rk3576_build.demo.sample_sdk import write_sample_sdk

REAL = SHARED / "docs" / "real-framework"
RECIPE = REPO / "recipes" / "myd-lr3576-ubuntu.yaml"
WANTED = "rockchip_rk3576_myd_lr3576_defconfig"
RECORDED_SDK = "/home/user/sdk"
RECORDED_SESSION = "2026-01-01_00-00-00"
SESSION_RE = re.compile(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
MYIR_ONLY = {"u-boot", "module", "ubuntu"}
# On purpose: the sample's rk3576 directory has three more defconfigs than the recorded SDK's,
# so the project is tested where the wanted entry is neither first nor a unique substring.
SAMPLE_EXTRA_DEFCONFIGS = {f"bak_{WANTED}", "rockchip_rk3576_ipc_evb1_v10_defconfig",
                           "rockchip_rk3576_myd_lr3576_yocto_defconfig"}


@pytest.fixture(scope="module", autouse=True)
def recordings():
    if not REAL.is_dir():
        unavailable(f"{REAL} is absent: the recordings of the real framework live in ../shared beside the repository")


def recorded(name: str) -> str:
    return (REAL / name).read_text()


def dispatcher_patterns() -> list[str]:
    return [line.strip() for line in recorded("dispatcher-commands.txt").splitlines() if line.strip()]


def real_commands() -> Commands:
    """The probe's view of the recorded framework: its dispatcher list, the recorded chip dir."""
    return Commands(frozenset(dispatcher_patterns()), "support-cmds", frozenset({"rk3576"}))


# --- normalising ----------------------------------------------------------------------------------

def normalise(text: str, sdk: Path) -> list[str]:
    """Lines with the SDK path and session name as recorded, and line numbers as N (colours kept)."""
    text = text.replace(str(sdk.resolve()), RECORDED_SDK).replace(str(sdk), RECORDED_SDK)
    text = SESSION_RE.sub(RECORDED_SESSION, text)
    text = re.sub(r"\bline \d+", "line N", text)
    text = re.sub(r"\((\d+)\)(\x1b\[0m)?$", r"(N)\2", text, flags=re.M)
    return text.splitlines()


def without_helper_frames(lines: list[str]) -> list[str]:
    """Call stacks without the hook helper's own frames: the sample's build-helper has its own
    functions (the real one's are try_func/try_hook); the hook's frames and `source` stay."""
    return [line for line in lines if not re.search(r"^(\x1b\[31m)?\s+build-helper: (?!source\()", line)]


def usage_shape(lines: list[str]) -> list[str]:
    """Usage lines reduced to what precedes the tab (name and arguments): the descriptions are the
    sample's own words on purpose. Other lines (lists, banners, errors) stay as they are."""
    shaped = []
    for line in lines:
        plain = ANSI_RE.sub("", line)
        shaped.append(plain.split("\t")[0].strip() if "\t" in plain and not plain.startswith("\t") else line)
    return shaped


def usage_keys(text: str) -> list[str]:
    return [line.split("\t")[0].strip() for line in ANSI_RE.sub("", text).splitlines()
            if "\t" in line and not line.startswith("\t")]


def sample(tmp_path: Path, name: str, *, flavor: str = "upstream", fresh: bool = True) -> Path:
    return write_sample_sdk(tmp_path / name, driver_version="0.9.8", flavor=flavor, fresh=fresh)


def run(sdk: Path, *args: str) -> subprocess.CompletedProcess:
    """The sample's build.sh as the recordings ran it: stdout and stderr merged, stdin at end of file."""
    return subprocess.run(["./build.sh", *args], cwd=sdk, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env={"PATH": "/usr/bin:/bin", "HOME": str(sdk)},
                          timeout=300)


def probe_on_host(sdk: Path) -> Commands:
    """The probe's own script (run in the builder by a real build), run here with the host's bash."""
    result = subprocess.run(["bash", "-c", PROBE_SCRIPT], cwd=sdk, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(sdk)}, timeout=300)
    found = parse_probe(result.stdout)
    assert found is not None, result.stdout[-3000:]
    return found


# --- the probe and the parsers on the recorded output ----------------------------------------------

def test_recorded_help_does_not_list_lunch():
    names = parse_usage(recorded("help.txt"))
    assert names is not None and "lunch" not in names
    assert {"chip", "defconfig", "*_defconfig", "uboot", "kernel", "modules", "rootfs", "updateimg"} <= names
    assert not MYIR_ONLY & names
    usage_only = parse_probe(recorded("help.txt"))  # what a probe reading help alone would decide
    assert usage_only.source == "usage" and not usage_only.accepts("lunch"), "why the hooks must be asked"


def test_probe_on_the_recorded_dispatcher_list():
    commands = real_commands()
    for target in ("lunch", f"rk3576:{WANTED}", "x_defconfig", WANTED, "uboot", "kernel", "modules", "rootfs",
                   "updateimg", "lunch:rockchip", "kernel:cmds"):
        assert commands.accepts(target), target
    for target in sorted(MYIR_ONLY) + ["clean", "rk3588:x_defconfig"]:
        assert not commands.accepts(target), target


def test_shipped_recipe_passes_the_probe_on_a_fresh_real_framework(tmp_path):
    commands = real_commands()
    recipe = load_recipe(RECIPE)
    chosen = choose_targets(recipe.steps, commands, recipe=RECIPE)
    assert chosen == {"lunch": "lunch", "u-boot": "uboot", "kernel": "kernel", "module": "modules",
                      "ubuntu": "rootfs", "updateimg": "updateimg"}
    lunch = invocation("lunch", None, sdk_dir=tmp_path, lunch=recipe.lunch)  # tmp_path: no .chip, a fresh tree
    assert lunch.command == f"./build.sh rk3576:{WANTED}"
    assert commands.accepts(lunch.command.split()[1]) and lunch.answer_menu == WANTED


def test_recorded_outputs_parsed():
    assert not_run_reason(recorded("unknown-command-module.txt")) == "Unhandled option: module"
    fresh = first_errors(recorded("lunch-fresh-tree.txt"))
    assert fresh[-1] == "No available defconfigs" and "cd: /home/user/sdk/device/rockchip/.chip" in fresh[0]
    assert not any("ERROR: Running" in line for line in fresh), "the trap is not the cause"
    menu_text = recorded("lunch-menu-after-chip.txt")
    menu = parse_lunch_menu(menu_text)
    assert menu == [(1, "rockchip_defconfig"), (2, "rockchip_rk3576_evb1_v10_defconfig"),
                    (3, "rockchip_rk3576_myd_lr3576_buildroot_defconfig"),
                    (4, "rockchip_rk3576_myd_lr3576_debian_defconfig"), (5, WANTED)]
    assert lunch_answer(menu_text, WANTED) is None, "no prompt without a terminal, so nothing is typed"
    prompted = menu_text.split("\x1b[31mERROR")[0] + "Which would you like? [1]: "
    assert lunch_answer(prompted, WANTED) == "5\n"


# --- the sample against the recordings --------------------------------------------------------------

def test_help_on_a_fresh_tree(tmp_path):
    real = recorded("help.txt")
    up = sample(tmp_path, "up")
    result = run(up, "help")
    assert result.returncode == 0  # as recorded (README: exit status 0)
    assert parse_usage(result.stdout) == parse_usage(real), "the same command names, lunch not among them"
    assert usage_keys(result.stdout) == usage_keys(real), "the same usage entries, arguments and order"
    assert usage_shape(normalise(result.stdout, up)) == usage_shape(real.splitlines()), \
        "the same lines (banner, defconfig list with ls's complaint, modules) but for the descriptions"

    myir = sample(tmp_path, "myir", flavor="myir")
    keys = usage_keys(run(myir, "help").stdout)
    # On purpose: the myir flavor adds MYIR's guide's names (whether MYIR's fork has them is unconfirmed).
    assert set(keys) - set(usage_keys(real)) == MYIR_ONLY
    assert [key for key in keys if key not in MYIR_ONLY] == usage_keys(real)


def test_unknown_command(tmp_path):
    real = recorded("unknown-command-module.txt")
    up = sample(tmp_path, "up")
    result = run(up, "module")
    assert result.returncode == 0  # as recorded: exit status alone cannot tell
    lines = normalise(result.stdout, up)
    assert lines[2] == real.splitlines()[2] == "\x1b[91mERROR: Unhandled option: module\x1b[0m"
    assert usage_shape(lines) == usage_shape(real.splitlines())
    for name in sorted(MYIR_ONLY - {"module"}):
        other = run(up, name)
        assert other.returncode == 0 and not_run_reason(other.stdout) == f"Unhandled option: {name}", name
    assert not (up / "output" / "sessions").exists(), "no session: nothing ran"


def test_lunch_on_a_fresh_tree(tmp_path):
    real = recorded("lunch-fresh-tree.txt")
    up = sample(tmp_path, "up")
    result = run(up, "lunch")
    assert result.returncode == 1  # as recorded
    # Every line, colours included, but the hook helper's inner frames (see without_helper_frames).
    assert without_helper_frames(normalise(result.stdout, up)) == without_helper_frames(normalise(real, up))


def test_lunch_menu_after_chip_with_stdin_at_eof(tmp_path):
    real = normalise(recorded("lunch-menu-after-chip.txt"), tmp_path)
    up = sample(tmp_path, "up", fresh=False)
    result = run(up, "lunch")
    assert result.returncode == 1  # as recorded: the menu, then read fails at end of file
    lines = without_helper_frames(normalise(result.stdout, up))
    real = without_helper_frames(real)
    entry = re.compile(r"^(\d+)\. (\S+)$")
    ours = [entry.match(line).groups() for line in lines if entry.match(line)]
    theirs = [entry.match(line).groups() for line in real if entry.match(line)]
    assert [int(index) for index, _ in ours] == list(range(1, len(ours) + 1))
    # On purpose: the sample offers SAMPLE_EXTRA_DEFCONFIGS too; the rest in the same order.
    assert [name for _, name in ours if name not in SAMPLE_EXTRA_DEFCONFIGS] == [name for _, name in theirs]
    assert [line for line in lines if not entry.match(line)] == [line for line in real if not entry.match(line)]


def test_dispatcher_commands_collected_from_the_hooks(tmp_path):
    real = set(dispatcher_patterns())
    up = probe_on_host(sample(tmp_path, "up"))
    assert up.source == "support-cmds" and up.chips == {"rk3576", "rk3588"}
    assert set(up) == real, "the sample's hooks answer exactly the recorded dispatcher list"
    myir = probe_on_host(sample(tmp_path, "myir", flavor="myir"))
    # On purpose: the myir flavor's extra hook adds MYIR's names on top of upstream's.
    assert set(myir) == real | MYIR_ONLY
