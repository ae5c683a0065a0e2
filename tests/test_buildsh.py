"""build.sh: its usage parsed into commands, targets chosen or refused, lunch, reading logs and selections."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from helpers import REPO
from rk3576_build.build.buildsh import (
    PROBE_MARK,
    PROBE_SCRIPT,
    Commands,
    Invocation,
    check_selection,
    choose_targets,
    closest,
    first_errors,
    invocation,
    lunch_answer,
    lunch_command,
    not_run_reason,
    option_regex,
    parse_lunch_menu,
    parse_probe,
    parse_usage,
    probe_commands,
    read_selection,
    resolve_lunch_mode,
    run_build_step,
    supports,
)
from rk3576_build.build.container import Mount, StepFailed
from rk3576_build.config.model import LunchSpec
from rk3576_build.config.recipe import load_recipe
from rk3576_build.core.errors import UserError
from rk3576_build.demo.board_kit import ensure_kit
from rk3576_build.demo.sample_sdk import write_sample_sdk

WANTED = "rockchip_rk3576_myd_lr3576_defconfig"
RECIPE = Path("recipes/myd-lr3576-ubuntu.yaml")

# Usage text shaped like the framework's (`name[:cmds]<spaces>\t<description>`), with the
# defconfig list indented by a tab and no tab after it, as `./build.sh help` prints it. This
# one lists `lunch`, as a framework without hooks may: it is what the usage fallback reads.
# (The real framework's help does not list lunch: test_conformance checks that.)
UPSTREAM_USAGE = (
    "Usage: build.sh [OPTIONS]\n"
    "Available options:\n"
    "chip[:<chip>[:<config>]]          \tchoose chip\n"
    "defconfig[:<config>]              \tchoose defconfig\n"
    " *_defconfig                      \tswitch to specified defconfig\n"
    "    available defconfigs:\n"
    "\trockchip_defconfig\n"
    f"\t{WANTED}\n"
    "lunch                             \tlunch defconfig\n"
    "loader[:cmds]                     \tbuild loader\n"
    "uboot[:cmds]                      \tbuild u-boot\n"
    "kernel[:cmds]                     \tbuild kernel\n"
    "modules[:cmds]                    \tbuild kernel modules\n"
    "rootfs[:<rootfs type>]            \tbuild default rootfs\n"
    "buildroot                         \tbuild buildroot rootfs\n"
    "debian                            \tbuild debian rootfs\n"
    "updateimg                         \tbuild update image\n"
    "kernel-config|kconfig             \tmodify kernel defconfig\n"
    "clean[:module[:module]]...        \tcleanup modules\n"
    "post-rootfs <rootfs dir>          \ttrigger post-rootfs hook scripts\n"
    "help                              \tusage\n"
    "\n"
    "Default option is 'all'.\n"
)
MYIR_USAGE = UPSTREAM_USAGE.replace(
    "lunch      ", "u-boot                            \tbuild u-boot (MYIR)\n"
                   "module                            \tbuild modules (MYIR)\n"
                   "ubuntu                            \tbuild ubuntu rootfs (MYIR)\n"
                   "lunch      ")
UNHANDLED = "\x1b[31mERROR: Unhandled option: module\x1b[0m\n" + UPSTREAM_USAGE


# What hooks answer to `support-cmds` (upstream's shape; test_conformance uses the recorded list).
HOOK_PATTERNS = ("chip defconfig lunch [^:]*_defconfig config kernel-config kconfig kernel modules loader uboot "
                 "rootfs buildroot debian yocto recovery firmware updateimg all save shell").split()


def real_steps():
    return load_recipe(REPO / "recipes" / "myd-lr3576-ubuntu.yaml").steps


def probe_output(patterns_by_hook: dict[str, str], chips=("rk3576",), usage: str = "", failing: str = "") -> str:
    """Text shaped like PROBE_SCRIPT's log: help's output, then each hook's answer and the chips."""
    lines = [usage, f"{PROBE_MARK} help-exit 0"]
    for hook, words in patterns_by_hook.items():
        status = 1 if hook == failing else 0
        lines += [f"{PROBE_MARK} hook {status} /sdk/device/rockchip/common/build-hooks/{hook}",
                  f"{PROBE_MARK} patterns {words} "]
    lines += [f"{PROBE_MARK} chip {chip}" for chip in chips]
    return "\n".join(lines) + "\n"


# --- the probe --------------------------------------------------------------------------------

def test_usage_lines_become_the_command_set():
    commands = parse_usage(UPSTREAM_USAGE)
    assert commands == {"chip", "defconfig", "*_defconfig", "lunch", "loader", "uboot", "kernel", "modules",
                        "rootfs", "buildroot", "debian", "updateimg", "kernel-config", "kconfig", "clean",
                        "post-rootfs", "help"}
    assert WANTED not in commands and "available" not in commands, "the defconfig list is not a command"
    coloured = UPSTREAM_USAGE.replace("lunch ", "\x1b[32mlunch\x1b[0m ").replace("\n", "\r\n")
    assert parse_usage(coloured) == commands, "terminal colours and CRs are ignored"
    assert {"u-boot", "module", "ubuntu"} <= parse_usage(MYIR_USAGE)


def test_unreadable_usage_gives_no_verdict():
    assert parse_usage("") is None
    assert parse_usage("usage: build.sh [-ovj]\n-o   -Generate ota package\n-j   -Build jobs\n") is None
    steps = real_steps()
    chosen = choose_targets(steps, None, recipe=RECIPE)
    assert chosen == {"lunch": "lunch", "u-boot": "u-boot", "kernel": "kernel", "module": "module",
                      "ubuntu": "ubuntu", "updateimg": "updateimg"}, "the first target of each step"


def test_real_recipe_works_with_either_spelling():
    steps = real_steps()
    upstream = choose_targets(steps, parse_usage(UPSTREAM_USAGE), recipe=RECIPE)
    assert upstream == {"lunch": "lunch", "u-boot": "uboot", "kernel": "kernel", "module": "modules",
                        "ubuntu": "rootfs", "updateimg": "updateimg"}
    myir = choose_targets(steps, parse_usage(MYIR_USAGE), recipe=RECIPE)
    assert myir == {"lunch": "lunch", "u-boot": "u-boot", "kernel": "kernel", "module": "module",
                    "ubuntu": "ubuntu", "updateimg": "updateimg"}


def test_unsupported_target_names_step_command_suggestions_and_where(tmp_path):
    data = (REPO / "recipes" / "myd-lr3576-ubuntu.yaml").read_text()
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(data.replace("target: [module, modules]", "target: module")
                           .replace("target: [u-boot, uboot]", "target: u-boot")
                           .replace("patches:\n  dir: ../patches/myd-lr3576-ubuntu\n", ""))
    steps = load_recipe(recipe_file).steps
    with pytest.raises(UserError) as err:
        choose_targets(steps, parse_usage(UPSTREAM_USAGE), recipe=recipe_file)
    message = str(err.value)
    assert "step u-boot (steps[1].target): this SDK's build.sh has no `u-boot`; closest supported: uboot, loader" \
        in message
    assert "step module (steps[3].target): this SDK's build.sh has no `module`; closest supported: modules" \
        in message
    assert str(recipe_file) in message and str(tmp_path / "r.local.yaml") in message
    assert "no build step has run" in message
    assert "ubuntu" not in message.split("build.sh help lists")[0], "ubuntu has rootfs as its alternative"


def test_closest_names():
    commands = parse_usage(UPSTREAM_USAGE)
    assert closest("ubuntu", commands) == ["rootfs", "debian"]
    assert closest("u-boot", commands)[:2] == ["uboot", "loader"]
    assert closest("kernal", commands) == ["kernel"]
    assert closest("flash", commands) == []


def test_hook_patterns_decide_with_build_shs_rewrites():
    commands = Commands(frozenset(HOOK_PATTERNS), "support-cmds", frozenset({"rk3576", "rk3588"}))
    for accepted in ("lunch", "lunch:rockchip", f"rk3576:{WANTED}", "rk3588", WANTED, "x_defconfig",
                     "kernel:cmds", "modules", "uboot", "rootfs:debian", "help", "cleanall", "clean:kernel",
                     "Upper_defconfig"):  # not rewritten (uppercase), but [^:]*_defconfig matches it
        assert commands.accepts(accepted), accepted
    for refused in ("u-boot", "module", "ubuntu", "clean", "rk3566:x_defconfig", "kernel-6.1", ""):
        assert not commands.accepts(refused), refused
    assert commands.rewrite(f"rk3576:{WANTED}") == f"chip:rk3576:{WANTED}"
    assert commands.rewrite(WANTED) == f"defconfig:{WANTED}" and commands.rewrite("Up_defconfig") == "Up_defconfig"
    assert Commands(frozenset({"uboot"}), "support-cmds").accepts("rk3576:x") is False, "no such chip dir: no chip"
    assert sorted(commands) == sorted(HOOK_PATTERNS), "iterating gives the names (the probe stamp stores them)"


def test_patterns_are_posix_basic_regexes():
    """build.sh matches `grep -q "^<pattern>$"`: a basic regex, where + ? | ( ) { } are literal."""
    def matches(pattern, option):
        return option_regex(pattern).match(option) is not None

    assert matches("[^:]*_defconfig", "rockchip_defconfig") and not matches("[^:]*_defconfig", "defconfig")
    assert matches("kernel-[0-9.]*", "kernel-6.1") and not matches("kernel-[0-9.]*", "kernel-x")
    assert matches("a+b", "a+b") and not matches("a+b", "aab")
    assert matches("a\\+b", "aab"), "GNU's \\+ is one-or-more"
    assert matches("x|y", "x|y") and not matches("x|y", "x")
    assert matches("*x", "*x"), "a leading * is literal"
    assert matches("a.c", "abc") and not matches("a.c", "abcd"), "anchored at both ends"
    assert matches("[[:digit:]]*", "123") and not matches("[[:digit:]]*", "12a")
    assert option_regex("[abc") is None
    assert not Commands(frozenset({"[abc"}), "support-cmds").accepts("a"), "an unreadable pattern accepts nothing"


def test_probe_output_hooks_first_usage_as_fallback(caplog):
    hooks = {"00-config.sh": "chip defconfig lunch [^:]*_defconfig", "70-loader.sh": "loader uboot"}
    found = parse_probe(probe_output(hooks, usage=UPSTREAM_USAGE.replace("lunch ", "linch ")))
    assert found.source == "support-cmds" and found.chips == {"rk3576"}
    assert set(found) == {"chip", "defconfig", "lunch", "[^:]*_defconfig", "loader", "uboot"}
    assert found.accepts("lunch") and not found.accepts("kernel"), "the hooks decide, not the usage text"

    failing = parse_probe(probe_output({**hooks, "10-kernel.sh": ""}, failing="10-kernel.sh"))
    assert set(failing) == set(found) and "10-kernel.sh failed to answer support-cmds" in caplog.text

    no_hooks = (UPSTREAM_USAGE + f"{PROBE_MARK} help-exit 0\n{PROBE_MARK} no-support-cmds\n")
    usage = parse_probe(no_hooks)
    assert usage.source == "usage" and set(usage) == parse_usage(UPSTREAM_USAGE)
    silent = parse_probe(probe_output({"00-config.sh": ""}, usage=UPSTREAM_USAGE))
    assert silent.source == "usage", "hooks that answer nothing: the usage text"
    assert parse_probe(f"usage: build.sh [-ovj]\n{PROBE_MARK} help-exit 1\n") is None


def _probe_here(sdk: Path) -> tuple[str, object]:
    """PROBE_SCRIPT (what the builder runs) run with the host's bash, and what it concludes."""
    result = subprocess.run(["bash", "-c", PROBE_SCRIPT], cwd=sdk, stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, env={"PATH": "/usr/bin:/bin", "HOME": str(sdk)}, timeout=300)
    return result.stdout, parse_probe(result.stdout)


def test_probe_script_behind_a_wrapper_and_without_hooks(tmp_path):
    """A vendor's build.sh wrapper still reaches the framework's hooks; a build.sh without them is read by
    its usage lines; neither is asked to build anything."""
    sdk = write_sample_sdk(tmp_path / "wrapped", driver_version="0.9.8", flavor="upstream", fresh=True)
    (sdk / "build.sh").unlink()
    (sdk / "build.sh").write_text('#!/bin/bash\n[ "$1" != vendor-pack ] || exit 0\n'
                                  'exec "$(dirname "$0")/device/rockchip/common/scripts/build.sh" "$@"\n')
    (sdk / "build.sh").chmod(0o755)
    output, found = _probe_here(sdk)
    assert found.source == "support-cmds" and found.accepts("lunch") and not found.accepts("vendor-pack")
    assert f"{PROBE_MARK} framework {sdk.resolve()}/device/rockchip/common/scripts/build.sh" in output
    assert not (sdk / "output" / "sessions").exists() and not (sdk / "output" / ".config").exists(), "nothing ran"

    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "build.sh").write_text("#!/bin/bash\ncat <<'EOF'\n" + UPSTREAM_USAGE + "EOF\n")
    (bare / "build.sh").chmod(0o755)
    output, found = _probe_here(bare)
    assert f"{PROBE_MARK} no-support-cmds" in output
    assert found.source == "usage" and set(found) == parse_usage(UPSTREAM_USAGE)


def test_real_recipe_on_hook_patterns():
    """Upstream's hooks (no u-boot/module/ubuntu): the recipe's alternatives; lunch accepted though unlisted."""
    commands = Commands(frozenset(HOOK_PATTERNS), "support-cmds", frozenset({"rk3576"}))
    chosen = choose_targets(real_steps(), commands, recipe=RECIPE)
    assert chosen == {"lunch": "lunch", "u-boot": "uboot", "kernel": "kernel", "module": "modules",
                      "ubuntu": "rootfs", "updateimg": "updateimg"}
    assert closest("u-boot", commands)[:2] == ["uboot", "loader"], "patterns are no suggestions"
    assert "[^:]*_defconfig" not in closest("x_defconfig", commands)
    only_lunch_missing = Commands(frozenset(set(HOOK_PATTERNS) - {"lunch"}), "support-cmds")
    with pytest.raises(UserError) as err:
        choose_targets(real_steps(), only_lunch_missing, recipe=RECIPE)
    assert "step lunch (steps[0].target): this SDK's build.sh has no `lunch`" in str(err.value)
    assert "build.sh accepts (its hooks' support-cmds): " in str(err.value)
    assert supports(parse_usage(UPSTREAM_USAGE), "x_defconfig"), "a plain set of usage names still works"


# --- a step's output ------------------------------------------------------------------------------

def test_unhandled_option_and_usage_mean_not_run():
    assert not_run_reason(UNHANDLED) == "Unhandled option: module"
    assert not_run_reason("building...\n" + UPSTREAM_USAGE).startswith("Usage: build.sh")
    assert not_run_reason("Running mk-kernel.sh - build_kernel succeeded.\n") is None
    assert not_run_reason("usage: mkimage [-x] ...\n") is None, "another tool's usage is not build.sh's"


TRAPPED_LOG = """\
Running mk-kernel.sh - build_kernel
  CC      drivers/rknpu/rknpu_drv.o
drivers/rknpu/rknpu_devfreq.c:237:28: error: 'rockchip_opp_set_low_length' undeclared here (not in a function)
  237 |         .set_soc_info = rockchip_opp_set_low_length,
make[3]: *** [scripts/Makefile.build:250: drivers/rknpu/rknpu_devfreq.o] Error 1
\x1b[31mERROR: Running /sdk/device/rockchip/common/scripts/mk-kernel.sh - build_kernel failed!\x1b[0m
\x1b[31mERROR: exit code 2 from line 38:\x1b[0m
\x1b[31m    make -C kernel ARCH=arm64 rockchip_linux_defconfig\x1b[0m
\x1b[31mERROR: call stack:\x1b[0m
    mk-kernel.sh: build_kernel(38)
    build.sh: run_hooks(120)
"""


def test_first_errors_come_before_the_trap_and_without_colour():
    errors = first_errors(TRAPPED_LOG)
    assert errors == ["drivers/rknpu/rknpu_devfreq.c:237:28: error: 'rockchip_opp_set_low_length' undeclared "
                      "here (not in a function)"]
    kconfig = ("gcc -c conf.c\nconf.c:12:10: fatal error: locale.h: No such file or directory\n"
               "compilation terminated.\n\x1b[31mERROR: Running build.sh - lunch failed!\x1b[0m\n"
               "ERROR: exit code 2 from line 9:\n")
    assert first_errors(kconfig) == ["conf.c:12:10: fatal error: locale.h: No such file or directory"]
    assert first_errors("\x1b[31mERROR: No available defconfigs\x1b[0m\n") == ["ERROR: No available defconfigs"]
    assert first_errors("all good\n") == []


# --- lunch ------------------------------------------------------------------------------------------

# The framework's menu: `rockchip_defconfig` first, the rest in `ls` order; the wanted
# entry is neither first nor a unique substring (x_<wanted> contains it).
MENU = ("\x1b[36mPick a defconfig:\x1b[0m\n\n"
        "1. rockchip_defconfig\n"
        "2. rockchip_rk3576_evb1_v10_defconfig\n"
        f"3. {WANTED}\n"
        f"4. x_{WANTED}\n\n")
PROMPT = "Which would you like? [1]: "


def test_menu_answered_by_name_once_the_prompt_shows():
    assert parse_lunch_menu(MENU + PROMPT)[2] == (3, WANTED)
    assert lunch_answer(MENU, WANTED) is None, "no answer before the prompt"
    assert lunch_answer(MENU + PROMPT, WANTED) == "3\n"
    assert lunch_answer((MENU + PROMPT).replace("\n", "\r\n"), f"x_{WANTED}") == "4\n"
    with pytest.raises(UserError) as err:
        lunch_answer(MENU + PROMPT, "rockchip_rk3576_myd_lr3576_ubuntu_defconfig")
    assert f"3. {WANTED}" in str(err.value) and "lunch.defconfig" in str(err.value)


def test_lunch_commands_in_every_mode(tmp_path):
    assert lunch_command("menu", WANTED, "rk3576") == "./build.sh lunch"
    assert lunch_command("defconfig", WANTED, "rk3576") == f"./build.sh {WANTED}"
    assert lunch_command("lunch-name", WANTED, "rk3576") == f"./build.sh lunch:{WANTED}"
    assert lunch_command("chip", WANTED, "rk3576") == f"./build.sh rk3576:{WANTED}"
    assert resolve_lunch_mode("auto", tmp_path) == "chip", "a fresh tree has no device/rockchip/.chip"
    (tmp_path / "device" / "rockchip" / ".chips" / "rk3576").mkdir(parents=True)
    (tmp_path / "device" / "rockchip" / ".chip").symlink_to(".chips/rk3576")
    assert resolve_lunch_mode("auto", tmp_path) == "menu"
    assert resolve_lunch_mode("defconfig", tmp_path) == "defconfig"
    lunch = LunchSpec(defconfig=WANTED, chip="rk3576", mode="lunch-name")
    assert invocation("lunch", None, sdk_dir=tmp_path, lunch=lunch) == Invocation(
        f"./build.sh lunch:{WANTED}", answer_menu=WANTED, expect_defconfig=WANTED)
    # build.sh picks by substring in every form (<chip>:<name>, <name>_defconfig), so any may show the menu.
    for mode in ("chip", "defconfig", "menu"):
        run = invocation("lunch", None, sdk_dir=tmp_path, lunch=LunchSpec(defconfig=WANTED, chip="rk3576", mode=mode))
        assert run.answer_menu == WANTED and run.expect_defconfig == WANTED, mode
    assert invocation("uboot", None, sdk_dir=tmp_path, lunch=lunch) == Invocation("./build.sh uboot")
    assert invocation(None, "make -C x", sdk_dir=tmp_path, lunch=lunch) == Invocation("make -C x")


def _select(sdk: Path, link_to: str | None, rk_defconfig: str | None) -> None:
    out = sdk / "output"
    out.mkdir(parents=True, exist_ok=True)
    for path in (out / "defconfig", out / ".config"):
        if path.is_symlink() or path.exists():
            path.unlink()
    if link_to:
        (out / "defconfig").symlink_to(f"../device/rockchip/.chips/rk3576/{link_to}")
    if rk_defconfig:
        (out / ".config").write_text(f'RK_CHIP="rk3576"\nRK_DEFCONFIG="{sdk}/device/rockchip/.chips/rk3576/'
                                     f'{rk_defconfig}"\n')


def test_selection_read_back(tmp_path):
    _select(tmp_path, WANTED, WANTED)
    assert read_selection(tmp_path)["rk_defconfig"] == f"{tmp_path}/device/rockchip/.chips/rk3576/{WANTED}"
    check_selection(tmp_path, WANTED)
    _select(tmp_path, "rockchip_defconfig", "rockchip_defconfig")
    with pytest.raises(UserError) as err:
        check_selection(tmp_path, WANTED)
    assert "rockchip_defconfig" in str(err.value) and WANTED in str(err.value)
    _select(tmp_path, WANTED, f"x_{WANTED}")
    with pytest.raises(UserError, match=f"RK_DEFCONFIG in output/.config: .*/x_{WANTED}"):
        check_selection(tmp_path, WANTED)
    _select(tmp_path, None, None)
    with pytest.raises(UserError, match="lunch selected nothing"):
        check_selection(tmp_path, WANTED)


def test_sdk_without_build_sh_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no build.sh"):
        run_build_step(image="unused", sdk_dir=tmp_path, step="lunch", run=Invocation("./build.sh lunch"),
                       privileged=False, env={}, mounts=[], log_path=tmp_path / "l.log")


# --- the sample SDK's build.sh (Rockchip's framework, both spellings) in the builder ------------------

KIT_ENV = {"BOARD_KIT": "/opt/board-kit"}
EVB = "rockchip_rk3576_evb1_v10_defconfig"


def sample_sdk(dest: Path, flavor: str, fresh: bool) -> Path:
    return write_sample_sdk(dest, driver_version="0.9.8", flavor=flavor, fresh=fresh)


@pytest.fixture(scope="module")
def kit_mount():
    return Mount(ensure_kit().root, "/opt/board-kit", read_only=True)


def _run(image, sdk: Path, step: str, run: Invocation, tmp_path: Path, mounts=(), env=None):
    return run_build_step(image=image.tag, sdk_dir=sdk, step=step, run=run, privileged=False,
                          env=KIT_ENV if env is None else env, mounts=list(mounts),
                          log_path=tmp_path / "logs" / f"{step}.log", echo=None)


def _lunch(image, sdk: Path, tmp_path: Path, mode: str, defconfig: str = WANTED):
    run = invocation("lunch", None, sdk_dir=sdk, lunch=LunchSpec(defconfig=defconfig, chip="rk3576", mode=mode))
    _run(image, sdk, "lunch", run, tmp_path)
    return run


@pytest.mark.docker
def test_probe_reads_both_spellings(builder_image, tmp_path):
    found = {}
    for flavor in ("upstream", "myir"):
        sdk = sample_sdk(tmp_path / flavor, flavor, fresh=True)
        found[flavor] = probe_commands(image=builder_image.tag, sdk_dir=sdk, env={}, mounts=[],
                                       log_path=tmp_path / f"{flavor}-probe.log", echo=None)
    assert found["upstream"].source == found["myir"].source == "support-cmds", "asked the hooks"
    assert found["upstream"].chips == {"rk3576", "rk3588"}
    for target in ("lunch", f"rk3576:{WANTED}", WANTED, "loader", "uboot", "kernel", "modules", "rootfs", "debian",
                   "updateimg"):
        assert found["upstream"].accepts(target), target
    assert not any(found["upstream"].accepts(t) for t in ("u-boot", "module", "ubuntu"))
    assert set(found["upstream"]) | {"u-boot", "module", "ubuntu"} == set(found["myir"])
    log = (tmp_path / "upstream-probe.log").read_text()
    assert "Usage: build.sh" in log and "lunch" not in log.split(PROBE_MARK)[0], "help is logged; no lunch in it"
    steps = real_steps()
    assert choose_targets(steps, found["upstream"], recipe=RECIPE)["module"] == "modules"
    assert choose_targets(steps, found["myir"], recipe=RECIPE)["module"] == "module"


@pytest.mark.docker
def test_lunch_in_every_mode_fresh_and_after(builder_image, tmp_path):
    """The wanted entry is neither first nor a unique substring; each mode selects exactly it."""
    sdk = sample_sdk(tmp_path / "sdk", "upstream", fresh=True)
    assert not (sdk / "device" / "rockchip" / ".chip").exists()
    with pytest.raises(StepFailed) as err:  # a fresh tree has no defconfigs to offer
        _lunch(builder_image, sdk, tmp_path, "menu")
    assert "No available defconfigs" in str(err.value) and "call stack" not in str(err.value)

    run = _lunch(builder_image, sdk, tmp_path, "auto")
    assert run.command == f"./build.sh rk3576:{WANTED}"
    assert read_selection(sdk)["rk_defconfig"] == f"{sdk.resolve()}/device/rockchip/.chips/rk3576/{WANTED}", \
        "output/.config names the SDK's host path, not a container path"
    assert (sdk / "device" / "rockchip" / ".chip").exists()

    for mode in ("menu", "lunch-name", "defconfig"):
        _lunch(builder_image, sdk, tmp_path, "defconfig", EVB)  # select another one first
        assert Path(read_selection(sdk)["link"]).name == EVB
        run = _lunch(builder_image, sdk, tmp_path, mode)
        assert Path(read_selection(sdk)["link"]).name == WANTED, mode
        assert Path(read_selection(sdk)["rk_defconfig"]).name == WANTED, mode
    log = (tmp_path / "logs" / "lunch.log").read_bytes()
    assert b"\x1b" not in log and b"\r" not in log, "the step log is plain text"

    # The read-back catches a selection other than the one asked for, naming both.
    with pytest.raises(UserError) as err:
        _run(builder_image, sdk, "lunch", Invocation(f"./build.sh {EVB}", expect_defconfig=WANTED), tmp_path)
    assert EVB in str(err.value) and f"asks for {WANTED}" in str(err.value)


@pytest.mark.docker
def test_menu_shows_the_wanted_entry_neither_first_nor_alone(builder_image, tmp_path):
    sdk = sample_sdk(tmp_path / "sdk", "myir", fresh=False)
    _lunch(builder_image, sdk, tmp_path, "menu")
    menu = [name for _, name in parse_lunch_menu((tmp_path / "logs" / "lunch.log").read_text())]
    assert menu[0] == "rockchip_defconfig" and menu.index(WANTED) > 0
    assert [name for name in menu if WANTED in name] != [WANTED], "not a unique substring"
    assert Path(read_selection(sdk)["rk_defconfig"]).name == WANTED


@pytest.mark.docker
def test_unhandled_option_is_not_success(builder_image, tmp_path):
    sdk = sample_sdk(tmp_path / "sdk", "upstream", fresh=False)
    _lunch(builder_image, sdk, tmp_path, "defconfig")
    with pytest.raises(UserError) as err:
        _run(builder_image, sdk, "module", Invocation("./build.sh module"), tmp_path)
    assert "build.sh did not run `./build.sh module` although it exited 0" in str(err.value)
    assert "Unhandled option: module" in str(err.value)


@pytest.mark.docker
def test_failing_step_shows_the_compilers_error_line(builder_image, tmp_path, kit_mount):
    sdk = sample_sdk(tmp_path / "sdk", "myir", fresh=False)
    _lunch(builder_image, sdk, tmp_path, "auto")
    header = sdk / "kernel" / "drivers" / "rknpu" / "include" / "rknpu_drv.h"
    header.write_text(header.read_text().replace("#define DRIVER_MAJOR 0", "#define DRIVER_MAJOR"))
    with pytest.raises(StepFailed) as err:
        _run(builder_image, sdk, "kernel", Invocation("./build.sh kernel"), tmp_path, mounts=[kit_mount])
    message = str(err.value)
    first = message.splitlines()[1].strip()
    assert " error: " in first and "rknpu" in first, message
    assert "call stack" not in message and "\x1b" not in message
    assert str(tmp_path / "logs" / "kernel.log") in message and err.value.exit_code != 0
