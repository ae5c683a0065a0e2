"""build.sh in the builder container: the lunch menu by name, step commands, the sample SDK's steps."""

from __future__ import annotations

import gzip
import os
import tarfile

import pytest

from rk3576_build import container
from rk3576_build.demo.board_kit import ensure_kit
from rk3576_build.buildsh import lunch_answer, parse_lunch_menu, run_build_step, step_command
from rk3576_build.container import Mount, StepFailed
from rk3576_build.errors import UserError
from rk3576_build.demo.sample_sdk import write_sample_sdk

from test_container import builder_image  # noqa: F401  (the shared session fixture)

WANTED = "rockchip_rk3576_myd_lr3576_defconfig"
MENU = """\
Pick a defconfig:

1. rockchip_defconfig
2. rockchip_rk3576_myd_lr3576_debian_defconfig
3. x_rockchip_rk3576_myd_lr3576_defconfig
4. rockchip_rk3576_myd_lr3576_defconfig
5. rockchip_rk3576_myd_lr3576_defconfig_old

"""
PROMPT = "Which would you like? [1]: "
KIT_ENV = {"BOARD_KIT": "/opt/board-kit"}


# --- the menu and the commands (no engine) -----------------------------------------------

def test_menu_parsed_from_the_last_menu():
    assert parse_lunch_menu("noise\n1. not_a_menu_entry\n" + MENU + PROMPT) == [
        (1, "rockchip_defconfig"), (2, "rockchip_rk3576_myd_lr3576_debian_defconfig"),
        (3, "x_rockchip_rk3576_myd_lr3576_defconfig"), (4, WANTED), (5, f"{WANTED}_old")]
    assert parse_lunch_menu("no menu here") == []


def test_answer_is_the_exact_name_once_the_prompt_shows():
    assert lunch_answer(MENU, WANTED) is None, "no answer before the prompt"
    assert lunch_answer(MENU[:40], WANTED) is None
    assert lunch_answer(MENU + PROMPT, WANTED) == "4\n"
    assert lunch_answer(MENU + PROMPT, "rockchip_defconfig") == "1\n"
    coloured = MENU.replace(f"4. {WANTED}", f"\x1b[32m4. {WANTED}\x1b[0m").replace("\n", "\r\n")
    assert lunch_answer(coloured + PROMPT, WANTED) == "4\n", "terminal colours and CRs are ignored"


def test_name_not_offered_lists_the_entries():
    with pytest.raises(UserError) as err:
        lunch_answer(MENU + PROMPT, "rockchip_rk3576_myd_lr3576_ubuntu_defconfig")
    message = str(err.value)
    assert "rockchip_rk3576_myd_lr3576_ubuntu_defconfig" in message
    assert "2. rockchip_rk3576_myd_lr3576_debian_defconfig" in message and "4. " + WANTED in message
    assert "lunch.defconfig" in message


def test_step_commands():
    assert step_command("./build.sh lunch", defconfig=WANTED, lunch_mode="menu") == ["bash", "-c", "./build.sh lunch"]
    assert step_command("./build.sh lunch", defconfig=WANTED, lunch_mode="direct") == ["bash", "-c", f"./build.sh {WANTED}"]
    assert step_command("./build.sh kernel", defconfig=None, lunch_mode="menu") == ["bash", "-c", "./build.sh kernel"]
    with pytest.raises(UserError, match="lunch mode"):
        step_command("./build.sh lunch", defconfig=WANTED, lunch_mode="guess")
    with pytest.raises(UserError, match="lunch.defconfig"):
        step_command("./build.sh lunch", defconfig=None, lunch_mode="menu")
    with pytest.raises(UserError, match="not a defconfig name"):
        step_command("./build.sh lunch", defconfig="x; rm -rf /", lunch_mode="direct")


def test_sdk_without_build_sh_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no build.sh"):
        run_build_step(image="unused", sdk_dir=tmp_path, step="lunch", command="./build.sh lunch", privileged=False,
                       env={}, mounts=[], log_path=tmp_path / "l.log", defconfig=WANTED)


# --- the sample SDK's build.sh in the builder container ------------------------------------

@pytest.fixture
def sdk(tmp_path):
    return write_sample_sdk(tmp_path / "sdk", driver_version="0.9.8")


@pytest.fixture(scope="module")
def kit_mount():
    return Mount(ensure_kit().root, "/opt/board-kit", read_only=True)


def _step(image, sdk, step, tmp_path, *, privileged=False, mounts=(), env=None, defconfig=WANTED, mode="menu",
          command=None, echo=None):
    return run_build_step(image=image.tag, sdk_dir=sdk, step=step, command=command or f"./build.sh {step}",
                          privileged=privileged, env=env if env is not None else KIT_ENV, mounts=list(mounts),
                          log_path=tmp_path / "logs" / f"{step}.log", defconfig=defconfig, lunch_mode=mode,
                          echo=echo)


@pytest.mark.docker
def test_lunch_menu_answered_by_name(builder_image, sdk, tmp_path):
    _step(builder_image, sdk, "lunch", tmp_path)
    log = (tmp_path / "logs" / "lunch.log").read_text()
    menu = parse_lunch_menu(log)
    index = dict((name, i) for i, name in menu)[WANTED]
    assert index != 1 and menu[index - 2][1] == "rockchip_rk3576_myd_lr3576_debian_defconfig"
    assert (sdk / "output" / ".defconfig").read_text().strip() == WANTED
    assert "Press enter to continue." not in log


@pytest.mark.docker
def test_lunch_direct_mode(builder_image, sdk, tmp_path):
    _step(builder_image, sdk, "lunch", tmp_path, mode="direct", defconfig="rockchip_rk3576_myd_lr3576_debian_defconfig")
    assert (sdk / "output" / ".defconfig").read_text().strip() == "rockchip_rk3576_myd_lr3576_debian_defconfig"


@pytest.mark.docker
def test_lunch_name_not_offered_stops_the_step(builder_image, sdk, tmp_path):
    with pytest.raises(UserError) as err:
        _step(builder_image, sdk, "lunch", tmp_path, defconfig="rockchip_rk3576_myd_lr3576_ubuntu_defconfig")
    assert "7. " + WANTED in str(err.value) and "1. rockchip_defconfig" in str(err.value)
    assert not (sdk / "output" / ".defconfig").exists()
    assert not container.docker_client().containers.list(all=True, filters={"label": f"{container.STEP_LABEL}=lunch"})


@pytest.mark.docker
def test_steps_refuse_to_run_before_lunch(builder_image, sdk, tmp_path):
    with pytest.raises(StepFailed) as err:
        _step(builder_image, sdk, "u-boot", tmp_path)
    assert "run ./build.sh lunch first" in str(err.value) and err.value.exit_code == 1


@pytest.mark.docker
def test_unknown_step_exits_2_with_usage(builder_image, sdk, tmp_path):
    with pytest.raises(StepFailed) as err:
        _step(builder_image, sdk, "flash", tmp_path)
    assert err.value.exit_code == 2 and "Usage: build.sh" in str(err.value)


@pytest.mark.docker
def test_outputs_are_owned_by_the_caller(builder_image, sdk, tmp_path):
    for path in [sdk, *sdk.rglob("*")]:
        os.lchown(path, 4321, 4321)
    # run_build_step runs as the caller (root here), so go one level down to pick a uid.
    for step, argv in (("lunch", f"./build.sh {WANTED}"), ("u-boot", "./build.sh u-boot")):
        container.run_step(builder_image.tag, ["bash", "-c", argv], name=step, workdir="/sdk",
                           mounts=[Mount(sdk, "/sdk")], env={}, log_path=tmp_path / f"{step}.log",
                           uid=4321, gid=4321, echo=None)
    for name in ("MiniLoaderAll.bin", "uboot.img", "parameter.txt"):
        stat = (sdk / "rockdev" / name).stat()
        assert (stat.st_uid, stat.st_gid) == (4321, 4321)
    params = (sdk / "rockdev" / "parameter.txt").read_text()
    assert "0x00002000@0x00004000(uboot)" in params and "-@0x00078000(rootfs:grow)" in params


@pytest.mark.docker
def test_rk_variables_never_reach_build_sh(builder_image, sdk, tmp_path):
    _step(builder_image, sdk, "lunch", tmp_path, mode="direct")
    echoed: list[str] = []
    _step(builder_image, sdk, "u-boot", tmp_path, env={"RK_KERNEL_DTS_NAME": "x", **KIT_ENV}, echo=echoed.append)
    assert "Press enter to continue." not in (tmp_path / "logs" / "u-boot.log").read_text()
    assert any("RK_KERNEL_DTS_NAME" in line for line in echoed)
    # The check can fail: set inside the container, build.sh does pause.
    _step(builder_image, sdk, "u-boot", tmp_path, command="RK_KERNEL_DTS_NAME=x ./build.sh u-boot")
    assert "Press enter to continue." in (tmp_path / "logs" / "u-boot.log").read_text()


@pytest.mark.docker
def test_full_build_of_the_sample_sdk(builder_image, sdk, tmp_path, kit_mount):
    kit = [kit_mount]
    _step(builder_image, sdk, "lunch", tmp_path)
    _step(builder_image, sdk, "u-boot", tmp_path)
    _step(builder_image, sdk, "kernel", tmp_path, mounts=kit)
    ko = (sdk / "output" / "modules" / "rknpu.ko").read_bytes()
    assert ko[:4] == b"\x7fELF" and int.from_bytes(ko[18:20], "little") == 183, "an arm64 (EM_AARCH64) module"
    assert b"RKNPU driver" in ko
    assert (sdk / "rockdev" / "boot.img").read_bytes() == ensure_kit().vmlinuz.read_bytes()
    assert not (sdk / "kernel" / "drivers" / "rknpu" / "rknpu_drv.o").exists(), "the kernel tree stays clean"
    _step(builder_image, sdk, "module", tmp_path)
    with gzip.open(sdk / "rockdev" / "modules.img") as fh:
        assert b"extra/rknpu.ko" in fh.read()

    with pytest.raises(StepFailed) as err:
        _step(builder_image, sdk, "ubuntu", tmp_path, mounts=kit)
    assert "privileged" in str(err.value)
    assert not (sdk / "rockdev" / "rootfs.img").exists()
    _step(builder_image, sdk, "ubuntu", tmp_path, mounts=kit, privileged=True)
    assert (sdk / "rockdev" / "rootfs.img").read_bytes()[:2] == b"\x1f\x8b"

    _step(builder_image, sdk, "updateimg", tmp_path)
    image = sdk / "output" / "update" / "Image" / "update.img"
    with tarfile.open(image) as tar:
        assert sorted(tar.getnames()) == sorted(["parameter.txt", "MiniLoaderAll.bin", "uboot.img", "boot.img",
                                                 "rootfs.img", "modules.img"])
    assert (sdk / "output" / "update" / "update.img").resolve() == image.resolve()
    assert (sdk / "rockdev" / "update.img").resolve() == image.resolve()


@pytest.mark.docker
def test_kernel_step_fails_on_a_broken_driver_header(builder_image, sdk, tmp_path, kit_mount):
    _step(builder_image, sdk, "lunch", tmp_path, mode="direct")
    header = sdk / "kernel" / "drivers" / "rknpu" / "include" / "rknpu_drv.h"
    header.write_text(header.read_text().replace("#define DRIVER_MAJOR 0", "#define DRIVER_MAJOR"))
    with pytest.raises(StepFailed) as err:
        _step(builder_image, sdk, "kernel", tmp_path, mounts=[kit_mount])
    assert "error" in str(err.value) and err.value.exit_code != 0
    assert "rknpu_drv" in (tmp_path / "logs" / "kernel.log").read_text()
    assert not (sdk / "rockdev" / "boot.img").exists()


@pytest.mark.docker
def test_kernel_step_without_kit_says_so(builder_image, sdk, tmp_path):
    _step(builder_image, sdk, "lunch", tmp_path, mode="direct")
    with pytest.raises(StepFailed, match="no board kit"):
        _step(builder_image, sdk, "kernel", tmp_path, env={})
