"""The gates before the build steps (builder:probe, builder:check, kernel:preflight): every step waits
for them, `shell` opens without them, and a recipe can accept a finding with its reason (issues 18, 24).

Real parts: the CLI in a subprocess, Docker running build.sh's steps in the curated builder, the
sample SDK (with its driver switched off, or behind a vendor's build.sh wrapper), git for the kernel tree.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import yaml

from helpers import REPO, executed, rk_recipe, write_recipe
from rk3576_build.cli.shell import shell_inputs
from rk3576_build.config.model import RecipeError
from rk3576_build.config.recipe import load_recipe
from rk3576_build.demo.sample_sdk import make_sample_sdk_tarball, write_sample_sdk
from rk3576_build.pipeline.stages import Stages, write_stamp
from rk3576_build.pipeline.tasks import RecipeTasks

GATES = {"builder:probe", "builder:check", "kernel:preflight"}
REASON = "the vendor's build.sh wrapper runs vendor-pack; its help is the framework's"


def extending(tmp_path: Path, extra: dict, name: str = "r.yaml") -> Path:
    """A recipe that extends the shipped demo-upstream recipe with `extra` on top."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"extends": str(REPO / "recipes" / "demo-upstream.yaml"),
                                    "workdir": str(tmp_path / "work"), **extra}))
    return path


def errors_of(path: Path) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert info.value.exit_code == 2
    return str(info.value)


# --- no engine ----------------------------------------------------------------------------------

def test_accept_probe_is_validated_at_load_with_file_and_key_path(tmp_path):
    ok = load_recipe(extending(tmp_path, {"builder": {"accept_probe": {"lunch": "help omits it"}}}))
    assert ok.builder.accept_probe == {"lunch": "help omits it"}
    assert load_recipe(extending(tmp_path, {})).builder.accept_probe == {}

    path = extending(tmp_path, {"builder": {"accept_probe": {"lunh": "x"}}})
    assert errors_of(path) == (f"{path}: builder.accept_probe.lunh: no step named 'lunh'; the steps are: "
                               "lunch, uboot, kernel, modules, rootfs, updateimg (did you mean 'lunch'?)")
    path = extending(tmp_path, {"builder": {"accept_probe": {"lunch": " "}}})
    assert errors_of(path) == f"{path}: builder.accept_probe.lunch: expected a non-empty string"
    path = extending(tmp_path, {"builder": {"accept_probe": {"lunch": None}}})
    assert "builder.accept_probe.lunch: expected a string, got null" in errors_of(path)
    path = extending(tmp_path, {"builder": {"accept_probe": ["lunch"]}})
    assert errors_of(path) == f"{path}: builder.accept_probe: expected a mapping, got a list"

    # A raw command is not probed: there is nothing to accept.
    steps = yaml.safe_load((REPO / "recipes" / "demo-upstream.yaml").read_text())["steps"]
    steps.append({"name": "extra", "command": "make -C extra", "depends": ["sdk"]})
    path = extending(tmp_path, {"steps": steps, "builder": {"accept_probe": {"extra": "why"}}})
    assert errors_of(path) == (f"{path}: builder.accept_probe.extra: step 'extra' runs a shell command, not a "
                               "build.sh target: the probe does not check it, so there is nothing to accept")

    # Set in the local override: the error names that file.
    path = extending(tmp_path, {})
    local = path.with_name("r.local.yaml")
    local.write_text(yaml.safe_dump({"builder": {"accept_probe": {"nope": "why"}}}))
    assert errors_of(path).startswith(f"{local}: builder.accept_probe.nope: no step named 'nope'")


def test_every_step_waits_for_the_gates_without_depending_on_them(tmp_path):
    tasks = {t["name"]: t for t in RecipeTasks(load_recipe(extending(tmp_path, {}))).all_tasks()}
    preflight = str(tmp_path / "work" / "state" / "kernel-preflight.json")
    steps = [name for name in tasks if name.startswith("step:")]
    assert steps == ["step:lunch", "step:uboot", "step:kernel", "step:modules", "step:rootfs", "step:updateimg"]
    for name in steps:
        assert tasks[name]["task_dep"] == ["kernel:preflight", "builder:check"], name
    # Only what the driver and patches go into reruns after preflight does (file_dep on its stamp).
    uses_driver = {name for name in steps if preflight in map(str, tasks[name]["file_dep"])}
    assert uses_driver == {"step:kernel", "step:modules"}

    # `shell` waits for no gate, directly or through what it waits for.
    producers = {str(target): t["name"] for t in tasks.values() for target in t.get("targets", [])}

    def closure(names) -> set[str]:
        seen: set[str] = set()
        todo = list(names)
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            todo += tasks[name].get("task_dep", []) + [producers[str(f)] for f in tasks[name].get("file_dep", [])
                                                       if str(f) in producers]
        return seen

    assert closure(shell_inputs()) == {"fetch:sdk", "unpack:sdk", "builder:image"}
    kernel = closure(shell_inputs(kernel=True))
    assert "kernel:patches" in kernel and not kernel & GATES


def test_acceptance_warnings_while_in_force(tmp_path):
    recipe = load_recipe(extending(tmp_path, {"builder": {"accept_probe": {"lunch": "help omits it"}, "accept": []},
                                              "preflight": {"accept": ["rknpu-not-enabled"]}}))
    stages = Stages(recipe)
    assert stages.acceptance_warnings() == [
        "builder.accept_probe: step lunch runs `lunch` without the probe's check (the recipe says: help omits it)"]
    layout = stages.layout
    # What the last check let through and the recipe still accepts is in force (the recipe no
    # longer accepts binfmt-aarch64, which demo-upstream does: the check reruns and refuses it).
    write_stamp(layout.accepted("preflight"), {"accepted": [
        {"id": "rknpu-not-enabled", "finding": "...", "setting": "preflight.accept", "reason": None}]})
    write_stamp(layout.accepted("check"), {"accepted": [
        {"id": "binfmt-aarch64", "finding": "...", "setting": "builder.accept", "reason": None}]})
    assert stages.acceptance_warnings()[1:] == [
        "preflight.accept: rknpu-not-enabled accepted by the recipe; the build may fail because of it"]
    # The probe found the command after all: it said so when it ran; no line on every run.
    write_stamp(layout.accepted("probe"), {"accepted": [], "not_needed": ["lunch"]})
    assert stages.acceptance_warnings() == [
        "preflight.accept: rknpu-not-enabled accepted by the recipe; the build may fail because of it"]


# --- with the engine ----------------------------------------------------------------------------

def no_step_ran(result, work: Path) -> None:
    assert not {t for t in executed(result.stdout) if t.startswith("step:")}, result.stdout
    assert not list((work / "logs").glob("0[1-9]-*.log")), "a step's log"
    assert not list((work / "state").glob("step-*.json")), "a step's stamp"


def shell(recipe: Path, *args: str):
    result = rk_recipe(recipe, "shell", *args)
    assert not executed(result.stdout) & GATES, result.stdout
    return result


@pytest.mark.docker
def test_preflight_stops_the_run_before_any_step_and_shell_still_opens(tmp_path, sources):
    """CONFIG_ROCKCHIP_RKNPU unset: no step runs, not even the rootfs (which does not depend on the driver)."""
    url, checksums, _ = sources
    tarball = make_sample_sdk_tarball(tmp_path / "rknpu-off.tar.gz", driver_version="0.9.7", flavor="upstream",
                                      fresh=True, rknpu_config=False)
    recipe = write_recipe(tmp_path / "off" / "r.yaml", url, checksums, base="demo-upstream.yaml",
                          change=lambda data: data["sdk"].update(url=str(tarball)))
    work = recipe.parent / "work"

    for args in (["step:rootfs"], []):  # the rootfs step alone, then the whole build
        result = rk_recipe(recipe, "run", *args)
        assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
        assert "kernel:preflight: preflight: the kernel build would fail or leave out the driver" in result.stderr
        assert "[rknpu-not-enabled]" in result.stderr and "Traceback" not in result.stderr
        assert "kernel:preflight" in executed(result.stdout)
        no_step_ran(result, work)

    opened = shell(recipe, "-c", "test -x ./build.sh && echo shell-ok")
    assert opened.returncode == 0, opened.stderr[-3000:]
    assert "shell-ok" in opened.stdout.splitlines()
    assert ("warning: kernel:preflight failed: finding(s) rknpu-not-enabled; the shell is open anyway"
            in opened.stderr.splitlines()), opened.stderr
    # --kernel: the kernel tree as the kernel step sees it (driver overlaid), still without preflight.
    kernel = shell(recipe, "--kernel", "-c",
                   "grep -Eq 'define DRIVER_PATCHLEVEL\\s+8' kernel/drivers/rknpu/include/rknpu_drv.h && echo overlaid")
    assert kernel.returncode == 0 and "overlaid" in kernel.stdout, kernel.stderr[-3000:]

    # Accepted (preflight.accept): the gate passes, says so on every later run, and records it.
    def accepted(data):
        data["sdk"]["url"] = str(tarball)
        data["preflight"] = {"accept": ["rknpu-not-enabled"]}

    write_recipe(recipe, url, checksums, base="demo-upstream.yaml", change=accepted)
    passed = rk_recipe(recipe, "run", "kernel:preflight")
    assert passed.returncode == 0, passed.stderr[-3000:]
    assert "preflight finding accepted by the recipe" in passed.stderr
    again = rk_recipe(recipe, "run", "kernel:preflight")
    assert again.returncode == 0 and executed(again.stdout) == set()
    assert ("warning: preflight.accept: rknpu-not-enabled accepted by the recipe; the build may fail because of it"
            in again.stderr.splitlines()), again.stderr
    [record] = json.loads((work / "state" / "accepted-preflight.json").read_text())["accepted"]
    assert record["id"] == "rknpu-not-enabled" and record["setting"] == "preflight.accept"
    assert "CONFIG_ROCKCHIP_RKNPU" in record["finding"]  # what the manifest's `accepted` lists
    assert "failed" not in shell(recipe, "-c", "true").stderr


def vendor_sdk(tmp_path: Path) -> Path:
    """The sample SDK behind a vendor's build.sh wrapper that runs one command more than the help lists."""
    sdk = write_sample_sdk(tmp_path / "vendor" / "Vendor-SDK", driver_version="0.9.7", flavor="upstream", fresh=True)
    (sdk / "build.sh").unlink()
    (sdk / "build.sh").write_text(
        "#!/bin/bash\n"
        "# The vendor's command, which the framework's help does not list.\n"
        'if [ "$1" = vendor-pack ]; then\n'
        "    mkdir -p output && date +%s%N > output/vendor-pack.txt && echo 'vendor-pack: packed'; exit 0\n"
        "fi\n"
        'exec "$(dirname "$0")/device/rockchip/common/scripts/build.sh" "$@"\n')
    (sdk / "build.sh").chmod(0o755)
    out = tmp_path / "vendor-sdk.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(sdk, arcname=sdk.name)
    return out


@pytest.mark.docker
def test_a_wrong_probe_shell_and_its_documented_escape(tmp_path, sources):
    url, checksums, _ = sources
    tarball = vendor_sdk(tmp_path)

    def vendor_steps(data, accept=None):
        data["sdk"]["url"] = str(tarball)
        data["steps"] = [{"name": "pack", "target": "vendor-pack", "depends": ["sdk"],
                          "produces": ["output/vendor-pack.txt"]}]
        data["artifacts"] = ["output/vendor-pack.txt"]
        data.pop("rootfs_overlays")
        if accept:
            data["builder"]["accept_probe"] = accept

    recipe = write_recipe(tmp_path / "w" / "r.yaml", url, checksums, base="demo-upstream.yaml", change=vendor_steps)
    work = recipe.parent / "work"

    refused = rk_recipe(recipe, "run")
    assert refused.returncode == 2, refused.stdout[-3000:] + refused.stderr[-3000:]
    assert "step pack (steps[0].target): this SDK's build.sh has no `vendor-pack`" in refused.stderr
    assert "accept_probe:" in refused.stderr, "the error names the escape"
    no_step_ran(refused, work)
    probe_log = work / "logs" / "00-probe.log"
    probed = probe_log.stat().st_mtime_ns

    # The shell opens all the same, in the build's environment, and says why the build would not run.
    opened = shell(recipe, "-c", "./build.sh vendor-pack && cat /proc/self/status | grep -q . && echo shell-ok")
    assert opened.returncode == 0, opened.stderr[-3000:]
    assert "vendor-pack: packed" in opened.stdout and "shell-ok" in opened.stdout
    failed = [line for line in opened.stderr.splitlines() if "failed" in line]
    assert len(failed) == 1 and failed[0].startswith("warning: builder:probe failed: step pack (steps[0].target)")
    assert failed[0].endswith("; the shell is open anyway"), failed
    assert probe_log.stat().st_mtime_ns == probed, "the shell did not probe"
    status = shell(recipe, "-c", "exit 7")
    assert status.returncode == 7

    # Accepted with the recipe's reason: the run reaches the step, which runs its target unchecked.
    write_recipe(recipe, url, checksums, base="demo-upstream.yaml",
                 change=lambda data: vendor_steps(data, accept={"pack": REASON}))
    warning = f"warning: builder.accept_probe: step pack runs `vendor-pack` without the probe's check " \
              f"(the recipe says: {REASON})"
    built = rk_recipe(recipe, "run")
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert {"builder:probe", "step:pack", "manifest"} <= executed(built.stdout)
    assert warning in built.stderr.splitlines(), built.stderr
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["steps"][0]["command"] == "./build.sh vendor-pack"
    [accepted] = manifest["accepted"]
    assert accepted["gate"] == "builder:probe" and accepted["id"] == "pack" and accepted["reason"] == REASON
    assert accepted["setting"] == "builder.accept_probe.pack" and "vendor-pack" in accepted["finding"]
    assert not (work / "state" / "failed-probe.json").exists()

    # On every run while it is in force, even one that has nothing to do.
    again = rk_recipe(recipe, "run")
    assert again.returncode == 0 and executed(again.stdout) == set(), again.stdout
    assert [line for line in again.stderr.splitlines() if "accept_probe" in line] == [warning]
    # The probe passed: the shell names no failure any more.
    opened = shell(recipe, "-c", "true")
    assert opened.returncode == 0 and "failed" not in opened.stderr, opened.stderr


@pytest.mark.docker
def test_a_failed_host_check_stops_the_steps_and_shell_still_opens(tmp_path, sources):
    """An /etc/mke2fs.conf with metadata_csum_seed (e2fsprogs >= 1.47) in the builder fails the rootfs checks."""
    url, checksums, _ = sources
    conf = tmp_path / "mke2fs.conf"
    conf.write_text("[fs_types]\n\text4 = {\n\t\tfeatures = has_journal,extent,metadata_csum_seed,64bit\n\t}\n")
    recipe = write_recipe(tmp_path / "hc" / "r.yaml", url, checksums, base="demo-upstream.yaml",
                          change=lambda data: data["builder"]["mounts"].append(
                              {"source": str(conf), "target": "/etc/mke2fs.conf", "read_only": True}))
    work = recipe.parent / "work"

    result = rk_recipe(recipe, "run")
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[mke2fs-metadata-csum-seed]" in result.stderr and "accept: [" in result.stderr
    assert "builder:check" in executed(result.stdout)  # (the gates run in no set order; steps wait for both)
    no_step_ran(result, work)

    # The shell gets the steps' mounts: the same mke2fs.conf the check refused.
    opened = shell(recipe, "-c", "grep -c metadata_csum_seed /etc/mke2fs.conf")
    assert opened.returncode == 0 and "1" in opened.stdout.splitlines(), opened.stderr[-3000:]
    [line] = [line for line in opened.stderr.splitlines() if "failed" in line]
    assert line.startswith("warning: builder:check failed: host requirement(s) not met: ")
    assert "mke2fs-metadata-csum-seed" in line and line.endswith("; the shell is open anyway")
