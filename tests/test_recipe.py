"""Recipe loading: the shipped recipes, exact validation messages, local overrides, variables, docs."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import pytest
import yaml

from helpers import REPO, rk
from rk3576_build.config.model import Recipe, RecipeError, StepSpec
from rk3576_build.config.recipe import load_recipe
from rk3576_build.config.schema import SCHEMA, documented_keys, schema_table
from rk3576_build.core.errors import UserError

SHA = "188306a3eba7ca48c186fe2a39acf232dec8536484581e54e9b96c3f65677eba"

BASE = {
    "name": "x",
    "sdk": {"url": "sdk.tar.gz"},
    "driver": {"version": "0.9.8", "url": "https://example.invalid/rknpu.tar.bz2"},
    "lunch": {"defconfig": "rockchip_rk3576_myd_lr3576_defconfig"},
    "steps": [
        {"name": "lunch", "command": "./build.sh lunch", "depends": ["sdk"]},
        {"name": "u-boot", "command": "./build.sh u-boot", "depends": ["sdk", "lunch"]},
        {"name": "kernel", "command": "./build.sh kernel", "depends": ["sdk", "driver", "patches", "lunch"]},
    ],
    "artifacts": ["output/update/Image/update.img"],
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No variable from the developer's shell leaks into what the recipes expand to."""
    for name in list(os.environ):
        if name.startswith(("MYIR_", "DEMO_", "RK3576_")) or name in ("BOARD_KIT", "FOO", "BAR"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").mkdir()


def write(data, name="x.yaml", text: str | None = None) -> str:
    """Write a recipe under ./recipes and return its path as a user would type it."""
    path = Path("recipes") / name
    path.write_text(text if text is not None else yaml.safe_dump(data, sort_keys=False))
    return str(path)


def recipe_with(change) -> dict:
    data = copy.deepcopy(BASE)
    change(data)
    return data


def errors_of(path, **kwargs) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, **kwargs)
    assert info.value.exit_code == 2
    return str(info.value)


# --------------------------------------------------------------------------- shipped recipes


def test_real_recipe_loads_without_myir_sdk():
    recipe = load_recipe(REPO / "recipes" / "myd-lr3576-ubuntu.yaml")
    assert recipe.name == "myd-lr3576-ubuntu"
    assert recipe.sdk.url == ""  # ${MYIR_SDK:-}: the fetch step explains, not the loader
    assert recipe.sdk.filename == "MYD-LR3576-Distribution-L6.1.75-V1.1.0.tar.gz"
    assert recipe.driver.version == "0.9.8" and recipe.driver.sha256 == SHA
    assert recipe.workdir == REPO / "build" / "myd-lr3576-ubuntu"
    assert recipe.builder.dockerfile == REPO / "Dockerfile.builder"
    assert recipe.patches.dir == REPO / "patches" / "myd-lr3576-ubuntu"
    assert recipe.lock_file == REPO / "recipes" / "myd-lr3576-ubuntu.lock.yaml"
    assert [s.name for s in recipe.steps] == ["lunch", "u-boot", "kernel", "module", "ubuntu", "updateimg"]
    assert recipe.step("kernel").depends == ("sdk", "driver", "patches", "lunch")
    assert recipe.step("ubuntu").privileged is True
    assert recipe.verify.expected == "RKNPU driver: v0.9.8"
    assert recipe.verify.console == "/dev/ttyUSB0" and recipe.verify.login_timeout == 300
    assert recipe.flash.method == "upgrade_tool" and recipe.offline is False


def test_real_recipe_takes_the_sdk_from_the_environment(monkeypatch):
    monkeypatch.setenv("MYIR_SDK", "/srv/MYD-LR3576-Distribution-L6.1.75-V1.1.0.tar.gz")
    recipe = load_recipe(REPO / "recipes" / "myd-lr3576-ubuntu.yaml")
    assert recipe.sdk.url == "/srv/MYD-LR3576-Distribution-L6.1.75-V1.1.0.tar.gz"


def test_demo_recipe_loads_and_follows_its_variables(monkeypatch):
    demo = REPO / "recipes" / "demo.yaml"
    recipe = load_recipe(demo)
    assert recipe.flash.method == "virtual"
    assert recipe.driver.url == f"file://{REPO}/recipes/../build/demo-sources/rknpu_driver_0.9.8_20241009.tar.bz2"
    assert recipe.builder.mounts[0].source is None  # ${BOARD_KIT:-} unset
    assert recipe.builder.mounts[0].read_only is True
    assert recipe.builder.env == {"BOARD_KIT": "/opt/board-kit"}

    monkeypatch.setenv("DEMO_DRIVER_VERSION", "0.9.6")
    monkeypatch.setenv("DEMO_SOURCES_URL", "http://127.0.0.1:8000")
    recipe = load_recipe(demo, variables={"BOARD_KIT": "/kit", "DEMO_SOURCES_URL": "http://ignored"})
    assert recipe.builder.mounts[0].source == Path("/kit")
    assert recipe.driver.version == "0.9.6"
    assert recipe.verify.expected == "RKNPU driver: v0.9.6"
    assert recipe.sdk.url == "http://127.0.0.1:8000/MYD-LR3576-Sample-SDK.tar.gz"  # the environment wins


def test_sections_are_plain_json_data():
    recipe = load_recipe(REPO / "recipes" / "myd-lr3576-ubuntu.yaml")
    assert recipe.section("driver") == {
        "name": "rknpu", "version": "0.9.8",
        "url": "https://github.com/airockchip/rknn-llm/raw/main/rknpu-driver/rknpu_driver_0.9.8_20241009.tar.bz2",
        "sha256": SHA, "filename": None, "source_dir": "drivers/rknpu", "dest": "drivers/rknpu"}
    assert recipe.section("patches") == {"dir": str(REPO / "patches" / "myd-lr3576-ubuntu")}
    assert recipe.section("steps")["steps"][2]["depends"] == ["sdk", "driver", "patches", "lunch"]
    assert recipe.section("artifacts") == {"artifacts": ["output/update/Image/update.img"]}
    everything = json.loads(json.dumps(recipe.to_dict()))
    assert everything["verify"]["expected"] == "RKNPU driver: v0.9.8"
    assert set(everything) >= set(SCHEMA.keys) | {"path", "lock_file"}
    with pytest.raises(ValueError):
        recipe.section("nope")


def test_unknown_step_names_the_known_ones():
    recipe = load_recipe(write(BASE))
    assert isinstance(recipe.step("kernel"), StepSpec)
    with pytest.raises(RecipeError) as info:
        recipe.step("kernal")
    assert str(info.value) == ("recipe x has no step 'kernal'; its steps are: lunch, u-boot, kernel "
                               "(did you mean 'kernel'?)")


def test_defaults_and_paths_relative_to_the_recipe(tmp_path):
    recipe = load_recipe(write(BASE))
    assert isinstance(recipe, Recipe) and recipe.path == Path("recipes/x.yaml")
    assert recipe.workdir == tmp_path / "build" / "x"
    assert recipe.builder.dockerfile == tmp_path / "Dockerfile.builder"
    assert recipe.builder.base == "ubuntu:22.04" and recipe.builder.ccache is True
    assert recipe.downloads is None and recipe.mirrors == () and recipe.patches.dir is None
    assert recipe.sdk.strip_components == 1 and recipe.sdk.kernel_dir == "kernel"
    assert recipe.driver.source_dir == recipe.driver.dest == "drivers/rknpu"
    assert recipe.lunch.mode == "auto" and recipe.lunch.chip == "rk3576" and recipe.flash.method == "upgrade_tool"
    assert recipe.verify.user == "root" and recipe.verify.password_env == "RK3576_CONSOLE_PASSWORD"
    assert recipe.verify.baud == 115200 and recipe.verify.command_timeout == 30
    assert recipe.lock_file == tmp_path / "recipes" / "x.lock.yaml" and recipe.local_file is None


def test_paths_mirrors_and_environment_overrides(monkeypatch, tmp_path):
    data = recipe_with(lambda d: d.update(workdir="w", downloads="~/dl", offline=False,
                                          mirrors=["https://mirror.example/files", "file:///srv/m", "../mirror"],
                                          patches={"dir": "../patches/x"}))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    recipe = load_recipe(write(data))
    assert recipe.workdir == tmp_path / "recipes" / "w"
    assert recipe.downloads == tmp_path / "home" / "dl"
    assert recipe.mirrors == ("https://mirror.example/files", "file:///srv/m", str(tmp_path / "mirror"))
    assert recipe.patches.dir == tmp_path / "patches" / "x"
    monkeypatch.setenv("RK3576_DL_DIR", "cache")
    monkeypatch.setenv("RK3576_OFFLINE", "1")
    recipe = load_recipe(write(data))
    assert recipe.downloads == tmp_path / "cache" and recipe.offline is True


# --------------------------------------------------------------------------- validation messages


def _set(path: str, value):
    """A change to BASE that sets the dotted `path` (list indexes as [n])."""
    def change(data):
        parts = [int(p) if p.isdigit() else p for p in re.split(r"\.|\[|\]\.?", path) if p != ""]
        target = data
        for part in parts[:-1]:
            target = target.setdefault(part, {}) if isinstance(part, str) else target[part]
        target[parts[-1]] = value
    return change


def _drop(section: str, key: str):
    return lambda data: data[section].pop(key)


CASES = [
    (_set("driver.sha256", "abc"), "driver.sha256: expected 64 hex digits, got 'abc'"),
    (_set("builder.dokerfile", "Dockerfile"), "builder.dokerfile: unknown key (did you mean 'dockerfile'?)"),
    (_set("colour", "blue"), "colour: unknown key; known keys: name, description, workdir, downloads, "
     "mirrors, offline, sdk, driver, patches, preflight, builder, lunch, steps, artifacts, rootfs_overlays, apps, "
     "verify, flash, cache, release"),
    (_set("steps[1].privileged", "yes please"), "steps[1].privileged: expected a boolean, got 'yes please'"),
    (_drop("lunch", "defconfig"), "lunch.defconfig: required key missing"),
    (lambda d: d.pop("artifacts"), "artifacts: required key missing"),
    (_set("sdk.url", "${FOO}/sdk.tar.gz"),
     "sdk.url: undefined variable ${FOO} (set it in the environment or use ${FOO:-default})"),
    (_set("sdk.url", "${FOO"), "sdk.url: bad variable reference in '${FOO': use ${NAME} or "
     "${NAME:-default} (write $$ for a literal $)"),
    (_set("steps[2].depends", ["sdk", "drivr"]), "steps[2].depends[1]: unknown input 'drivr'; "
     "known: sdk, driver, patches, overlays, lunch, u-boot (did you mean 'driver'?)"),
    (_set("steps[0].depends", ["kernel"]), "steps[0].depends[0]: step 'kernel' is not defined before "
     "this step; a step may only depend on earlier steps"),
    (_set("steps[1].depends", ["u-boot"]), "steps[1].depends[0]: step 'u-boot' cannot depend on itself"),
    (_set("steps[2].name", "lunch"), "steps[2].name: duplicate step name 'lunch' (also steps[0])"),
    (_set("steps[1].name", "U Boot"), "steps[1].name: invalid step name 'U Boot': use lowercase letters, "
     "digits, '-' and '_', starting with a letter or digit"),
    (_set("steps[1].name", "driver"), "steps[1].name: 'driver' names an input (sdk, driver, patches, overlays); "
     "call the step something else"),
    (_drop("driver", "url"), "driver.url: required key missing"),
    (_set("driver.url", ""), "driver.url: expected a non-empty string"),
    (_set("driver.version", "0.9"), "driver.version: expected a version X.Y.Z in digits (like 0.9.8), got '0.9'"),
    (_set("lunch.defconfig", "rk3576"), "lunch.defconfig: expected a defconfig name ending in '_defconfig' "
     "(letters, digits, '_', '-', '.', '+'; it goes on build.sh's command line), got 'rk3576'"),
    (_set("lunch.defconfig", "x;rm -rf ~;_defconfig"), "lunch.defconfig: expected a defconfig name ending in "
     "'_defconfig' (letters, digits, '_', '-', '.', '+'; it goes on build.sh's command line), "
     "got 'x;rm -rf ~;_defconfig'"),
    (_set("lunch.chip", "rk3576 $(id)"), "lunch.chip: expected a chip name like 'rk3576' (lowercase letters, "
     "digits, '-', '_'), got 'rk3576 $(id)'"),
    (_set("lunch.mode", "tty"), "lunch.mode: expected one of 'auto', 'menu', 'defconfig', 'lunch-name', 'chip', "
     "got 'tty'"),
    (_set("steps[1].target", "u-boot; reboot"), "steps[1].target: expected a build.sh command like 'uboot' or "
     "'kernel:cmds' (letters, digits, '_', '-', '.', '+', ':'), got 'u-boot; reboot'"),
    (_set("steps[1].target", ["u-boot", "$x"]), "steps[1].target[1]: expected a build.sh command like 'uboot' or "
     "'kernel:cmds' (letters, digits, '_', '-', '.', '+', ':'), got '$x'"),
    (_set("steps[1].target", ["u-boot", "uboot"]), "steps[1]: set exactly one of target (the build.sh command, "
     "with alternatives: [u-boot, uboot]) and command (a shell command)"),
    (_set("steps[1].command", None), "steps[1]: set exactly one of target (the build.sh command, "
     "with alternatives: [u-boot, uboot]) and command (a shell command)"),
    (_set("steps[1].produces", ["rockdev/uboot.img", {"path": "rockdev/x.img", "unchanged": True}]),
     "steps[1].produces[1].unchanged: unknown key (did you mean 'unchanged_ok'?)"),
    (_set("steps[1].produces", ["../uboot.img"]),
     "steps[1].produces[0].path: expected a relative path inside the SDK without '..', got '../uboot.img'"),
    (_set("flash.method", "rkdevtool"), "flash.method: expected one of 'upgrade_tool', 'rkdeveloptool', "
     "'virtual', got 'rkdevtool' (did you mean 'rkdeveloptool'?)"),
    (_set("sdk.kernel_dir", "../kernel"), "sdk.kernel_dir: expected a relative path inside the SDK without "
     "'..', got '../kernel'"),
    (_set("driver.dest", "/drivers/rknpu"), "driver.dest: expected a relative path inside the kernel tree "
     "without '..', got '/drivers/rknpu'"),
    (_set("artifacts", []), "artifacts: expected a non-empty list"),
    (_set("sdk.strip_components", -1), "sdk.strip_components: expected an integer >= 0, got -1"),
    (_set("verify.login_timeout", 0), "verify.login_timeout: expected a number > 0, got 0"),
    (_set("sdk", "sdk.tar.gz"), "sdk: expected a mapping, got 'sdk.tar.gz'"),
    (_set("mirrors", "https://m"), "mirrors: expected a list, got 'https://m'"),
    (_set("builder.env", {"JOBS": 8}), "builder.env.JOBS: expected a string, got 8 (quote it)"),
    (_set("builder.env", {"RK_KERNEL_CFG": "x_defconfig"}), "builder.env.RK_KERNEL_CFG: RK_KERNEL_CFG is refused: "
     "Rockchip's build.sh treats RK_* variables in its environment as custom overrides and stops to ask "
     "(`read -t 10 -p \"Press enter to continue.\"`), which fails at once without a terminal and ends the build. "
     "Put the setting in the SDK's defconfig (device/rockchip/.chips/<chip>/<name>_defconfig, or "
     "`./build.sh menuconfig`) instead"),
    (_set("builder.mounts", [{"source": "/kit", "target": "opt/kit"}]),
     "builder.mounts[0].target: expected an absolute path inside the container, got 'opt/kit'"),
    (_set("name", "my recipe"), "name: invalid name 'my recipe': use letters, digits, '.', '-' and '_' "
     "(it names the work directory)"),
]


@pytest.mark.parametrize("change, message", CASES, ids=[m.split(":")[0] for _, m in CASES])
def test_each_problem_has_its_exact_message(change, message):
    assert errors_of(write(recipe_with(change))) == f"recipes/x.yaml: {message}"


def test_a_password_in_the_recipe_is_refused_without_echoing_it():
    text = errors_of(write(recipe_with(_set("verify.password", "hunter2"))))
    assert text == ("recipes/x.yaml: verify.password: passwords never go in a recipe; export the "
                    "variable named by verify.password_env, or verify prompts")
    assert "hunter2" not in text


def test_all_problems_are_reported_at_once():
    def change(data):
        data["driver"]["sha256"] = "abc"
        data["builder"] = {"dokerfile": "D"}
        data["lunch"].pop("defconfig")
    text = errors_of(write(recipe_with(change)))
    assert text == ("recipe recipes/x.yaml has 3 errors:\n"
                    "  recipes/x.yaml: driver.sha256: expected 64 hex digits, got 'abc'\n"
                    "  recipes/x.yaml: builder.dokerfile: unknown key (did you mean 'dockerfile'?)\n"
                    "  recipes/x.yaml: lunch.defconfig: required key missing")


def test_file_level_problems():
    assert errors_of(write(None, text="name: x\nsdk: [a\n")) == (
        "recipes/x.yaml: line 3, column 1: invalid YAML: did not find expected ',' or ']'")
    assert errors_of(write(None, text="name: x\nname: y\n")) == (
        "recipes/x.yaml: line 2, column 1: invalid YAML: duplicate key 'name'")
    assert errors_of(write(None, text="- a\n- b\n")) == "recipes/x.yaml: expected a mapping of recipe keys, got a list"
    assert errors_of(write(None, text="")) == (
        "recipes/x.yaml: the file is empty; a recipe needs at least name, sdk, driver, lunch, steps "
        "and artifacts (see docs/recipes.md)")


def test_missing_recipe_lists_the_shipped_ones(monkeypatch):
    monkeypatch.chdir(REPO)
    assert errors_of("recipes/nope.yaml") == (
        "recipe not found: recipes/nope.yaml; the shipped recipes are: "
        "recipes/demo-upstream.yaml, recipes/demo.yaml, recipes/myd-lr3576-ubuntu.yaml, recipes/rknn-llm-demos.yaml")


def test_recipe_error_is_a_user_error_with_exit_code_2():
    with pytest.raises(UserError) as info:
        load_recipe(write(recipe_with(_set("driver.sha256", "abc"))))
    assert isinstance(info.value, RecipeError) and info.value.exit_code == 2
    assert info.value.errors == ["recipes/x.yaml: driver.sha256: expected 64 hex digits, got 'abc'"]


def test_cli_exits_2_with_the_message_and_no_traceback(tmp_path):
    bad = write(recipe_with(_set("steps[1].privileged", "yes please")))
    result = rk("--recipe", bad, "list", cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "recipes/x.yaml: steps[1].privileged: expected a boolean, got 'yes please'" in result.stderr
    assert "Traceback" not in result.stderr


def test_long_values_and_names_are_cut_in_errors(tmp_path):
    """A 1 MB value and a 10 kB step name: every error line stays short, the exit code is still 2."""
    long_value, long_name = "1" * (1 << 20), "s" * 10_000

    def change(data):
        data["driver"]["version"] = long_value
        data["k" * (1 << 20)] = 1
        data["steps"][0]["name"] = long_name
        data["steps"][1]["depends"] = ["sdk", "lunch", "nope", long_name + "x"]
        data["steps"][2]["depends"] = ["sdk", "lunch", "nope"]
    bad = write(recipe_with(change))
    result = rk("--recipe", bad, "list", cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr[:2000]
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 8 and max(len(line) for line in lines) < 1000, max(lines, key=len)[:2000]
    assert (f"driver.version: expected a version X.Y.Z in digits (like 0.9.8), got {'1' * 72!r}... "
            f"({1 << 20} characters)") in result.stderr
    assert f"{'k' * 37}... ({1 << 20} characters): unknown key; known keys: name," in result.stderr
    known = [line for line in lines if "known: " in line]
    assert len(known) == 5 and all(line.count(f"{'s' * 37}... (10000 characters)") == 1 for line in known)
    assert f"unknown input {'s' * 72!r}... (10001 characters); known: " in result.stderr

    def accept(data):
        data["steps"][0].update(name=long_name, command="make defconfig")  # not build.sh: nothing to accept
        data["steps"][1]["depends"] = data["steps"][2]["depends"] = ["sdk", long_name]
        data["builder"] = {"accept_probe": {"nope": "why", long_name: "why"}}
    text = errors_of(write(recipe_with(accept)))
    assert max(len(line) for line in text.splitlines()) < 400, text[:2000]
    assert f"the steps are: {'s' * 37}... (10000 characters), u-boot, kernel" in text
    assert f"step {'s' * 72!r}... (10000 characters) runs a shell command" in text


def test_a_long_extends_or_name_is_cut_and_refused():
    for change, message in [
            (lambda d: d.update(extends="e" * (1 << 20)),
             f"extends: {'e' * 72!r}... ({1 << 20} characters): cannot read it: File name too long"),
            (_set("name", "n" * 101), f"name: name {'n' * 72!r}... (101 characters) is too long: at most 100 "
                                      "characters (it names the work directory)")]:
        assert errors_of(write(recipe_with(change))) == f"recipes/x.yaml: {message}"


# --------------------------------------------------------------------------- local override


def test_local_override_merges_on_top(tmp_path):
    path = write(BASE)
    (tmp_path / "recipes" / "x.local.yaml").write_text(
        "sdk:\n  url: /srv/sdk.tar.gz\n"          # a map merges: strip_components etc. stay
        "mirrors: [../m]\n"
        "artifacts: [rockdev/boot.img]\n"         # a list replaces
        "verify:\n  console: rfc2217://lab:4001\n")
    recipe = load_recipe(path)
    assert recipe.sdk.url == "/srv/sdk.tar.gz" and recipe.sdk.kernel_dir == "kernel"
    assert recipe.artifacts == ("rockdev/boot.img",)
    assert recipe.mirrors == (str(tmp_path / "m"),)
    assert recipe.verify.console == "rfc2217://lab:4001" and recipe.verify.user == "root"
    assert recipe.local_file == tmp_path / "recipes" / "x.local.yaml"
    assert recipe.step("kernel").depends == ("sdk", "driver", "patches", "lunch")


def test_errors_in_the_override_name_the_override(tmp_path):
    path = write(recipe_with(_set("driver.sha256", "abc")))
    (tmp_path / "recipes" / "x.local.yaml").write_text(
        "builder:\n  dokerfile: D\nsteps:\n  - name: lunch\n    command: ./build.sh lunch\n    privileged: 'yes'\n")
    assert errors_of(path) == (
        "recipe recipes/x.yaml has 3 errors:\n"
        "  recipes/x.yaml: driver.sha256: expected 64 hex digits, got 'abc'\n"
        "  recipes/x.local.yaml: builder.dokerfile: unknown key (did you mean 'dockerfile'?)\n"
        "  recipes/x.local.yaml: steps[0].privileged: expected a boolean, got 'yes'")
    (tmp_path / "recipes" / "x.local.yaml").write_text("sdk: {url: a\n")
    assert errors_of(path).startswith("recipes/x.local.yaml: line 2, column 1: invalid YAML: ")


def test_an_empty_override_changes_nothing(tmp_path):
    path = write(BASE)
    (tmp_path / "recipes" / "x.local.yaml").write_text("# nothing yet\n")
    assert load_recipe(path).to_dict()["sdk"] == load_recipe(path).section("sdk")
    assert load_recipe(path).sdk.url == "sdk.tar.gz"


# --------------------------------------------------------------------------- variables


def test_variable_expansion(monkeypatch, tmp_path):
    def change(data):
        data["sdk"]["url"] = "${MIRROR:-file://${RECIPE_DIR}/${SUB:-dl}}/sdk.tar.gz"
        data["sdk"]["strip_components"] = "${STRIP:-2}"
        data["driver"]["url"] = "${BAR}/rknpu.tar.bz2"
        data["steps"][2]["command"] = "echo $$HOME $PWD ${UNSET:-${ALSO_UNSET:-x}}; make -j${JOBS:-}"
        data["builder"] = {"build_args": {"A": "${BAR}"}, "ccache": "${CCACHE:-false}"}
        data["verify"] = {"login_timeout": "${T:-2.5}"}
    path = write(recipe_with(change))
    recipe = load_recipe(path, variables={"BAR": "http://from-variables"})
    assert recipe.sdk.url == f"file://{tmp_path}/recipes/dl/sdk.tar.gz"  # nested default, RECIPE_DIR
    assert recipe.sdk.strip_components == 2 and recipe.builder.ccache is False
    assert recipe.verify.login_timeout == 2.5
    assert recipe.driver.url == "http://from-variables/rknpu.tar.bz2"
    assert recipe.builder.build_args == {"A": "http://from-variables"}
    assert recipe.step("kernel").command == "echo $HOME $PWD x; make -j"  # $$ and a lone $ stay shell's

    monkeypatch.setenv("BAR", "http://from-env")          # the environment wins over variables
    monkeypatch.setenv("MIRROR", "https://m")
    monkeypatch.setenv("SUB", "${NOT_EXPANDED}")          # values are not expanded again
    monkeypatch.setenv("RECIPE_DIR", "/elsewhere")        # the built-in always wins
    monkeypatch.setenv("JOBS", "")                        # set but empty: ${JOBS:-} gives ""
    recipe = load_recipe(path, variables={"BAR": "http://from-variables"})
    assert recipe.driver.url == "http://from-env/rknpu.tar.bz2"
    assert recipe.sdk.url == "https://m/sdk.tar.gz"
    monkeypatch.delenv("MIRROR")
    assert load_recipe(path).sdk.url == f"file://{tmp_path}/recipes/${{NOT_EXPANDED}}/sdk.tar.gz"


def test_empty_variable_falls_back_to_the_default(monkeypatch):
    monkeypatch.setenv("FOO", "")
    path = write(recipe_with(_set("sdk.url", "${FOO:-fallback}|${FOO}|$$")))
    assert load_recipe(path).sdk.url == "fallback||$"


def test_a_wrongly_typed_variable_is_still_an_error(monkeypatch):
    monkeypatch.setenv("STRIP", "two")
    path = write(recipe_with(_set("sdk.strip_components", "${STRIP}")))
    assert errors_of(path) == "recipes/x.yaml: sdk.strip_components: expected an integer >= 0, got 'two'"


# --------------------------------------------------------------------------- docs


def _documented_rows() -> dict[str, tuple[str, str]]:
    """Rows of the `| key | type | default | description |` tables in docs/recipes.md."""
    rows: dict[str, tuple[str, str]] = {}
    in_keys_table = False
    for line in (REPO / "docs" / "recipes.md").read_text().splitlines():
        if not line.startswith("|"):
            in_keys_table = False
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[:4] == ["key", "type", "default", "description"]:
            in_keys_table = True
        elif in_keys_table and cells[0].startswith("`"):
            key = cells[0].strip("`")
            assert key not in rows, f"{key} documented twice"
            default = cells[2][1:-1] if cells[2].startswith("`") else cells[2]
            rows[key] = (cells[1], default)
    return rows


def test_docs_document_every_key_with_its_type_and_default():
    rows = _documented_rows()
    assert set(rows) == documented_keys()
    assert {"sdk.url", "steps[].depends", "builder.mounts[].read_only"} <= documented_keys()
    for key, type_text, default, _doc in schema_table():
        assert rows[key] == (type_text, default), key


def test_targets_alternatives_and_products():
    data = recipe_with(lambda d: d["steps"].extend([
        {"name": "module", "target": ["module", "modules"], "depends": ["kernel"],
         "produces": ["rockdev/modules.img", {"path": "kernel/modules.order", "unchanged_ok": True}]},
        {"name": "rootfs", "target": "rootfs"},
        {"name": "custom", "command": "make -C kernel savedefconfig"},
    ]))
    recipe = load_recipe(write(data))
    assert recipe.step("lunch").targets == ("lunch",) and recipe.step("lunch").is_lunch, "`./build.sh lunch`"
    assert recipe.step("lunch").target == () and recipe.step("lunch").command == "./build.sh lunch"
    module = recipe.step("module")
    assert module.targets == ("module", "modules") and module.command is None and not module.is_lunch
    assert [(p.path, p.unchanged_ok) for p in module.produces] == [("rockdev/modules.img", False),
                                                                   ("kernel/modules.order", True)]
    assert recipe.step("rootfs").targets == ("rootfs",)
    assert recipe.step("custom").targets == () and recipe.step("custom").command == "make -C kernel savedefconfig"


def test_metacharacters_are_refused_before_anything_is_fetched(tmp_path):
    data = recipe_with(_set("lunch.defconfig", "$(touch pwned)_defconfig"))
    data["sdk"]["url"] = f"file://{tmp_path}/never-read.tar.gz"
    result = rk("--recipe", write(data), "run", cwd=tmp_path)
    assert result.returncode == 2 and "lunch.defconfig" in result.stderr + result.stdout
    assert not (tmp_path / "build").exists() and not (tmp_path / "pwned").exists()
