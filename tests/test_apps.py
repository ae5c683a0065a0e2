"""Apps built into the image (build/apps.py): source under git with its patch series, the cross toolchain,
CMake and make in the real builder container, prebuilt files, the install tree the rootfs overlay takes."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import BASE_IMAGE, REPO
from rk3576_build.build import apps
from rk3576_build.build.container import Mount, StepFailed, run_step
from rk3576_build.core.errors import UserError
from rk3576_build.core.patches import list_patches

SAMPLE = REPO / "rk3576_build" / "demo" / "sample"
STANDIN = SAMPLE / "apps" / "multimodal_demo"
STANDIN_PATCHES = SAMPLE / "apps" / "patches" / "multimodal_demo"
SDK_WRAPPER = next((SAMPLE / "sdk" / "prebuilts").rglob("aarch64-none-linux-gnu-gcc"))


def elf_header(path: Path) -> tuple[int, int, int]:
    """(EI_CLASS, EI_DATA, e_machine) of an ELF file, as `file` reads them."""
    head = path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return head[4], head[5], int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")


def source_copy(tmp_path: Path) -> Path:
    """The demo's multimodal stand-in as a user's local source directory."""
    source = tmp_path / "source"
    shutil.copytree(STANDIN, source)
    return source


def write_patch(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    with (directory / "series").open("a") as series:
        series.write(name + "\n")
    return directory / name


BAD_HUNK = """\
Subject: [PATCH] raise the image size

--- a/src/main.cpp
+++ b/src/main.cpp
@@ -30,3 +30,3 @@
 #define IMAGE_WIDTH 392
-#define IMAGE_TOKEN_NUM 999
+#define IMAGE_TOKEN_NUM 256
 #define EMBED_SIZE 1536
"""


# --------------------------------------------------------------------------- without Docker

def test_the_source_is_copied_committed_and_patched_one_commit_per_patch_leaving_the_original_alone(tmp_path):
    source = source_copy(tmp_path)
    original = (source / "src" / "main.cpp").read_text()
    build = apps.AppBuild(name="mm", source_dir=source, patches=tuple(list_patches(STANDIN_PATCHES)))
    done = apps.prepare_source(build, tmp_path / "work")
    again = apps.prepare_source(build, tmp_path / "work2")

    assert (source / "src" / "main.cpp").read_text() == original
    assert "#define EMBED_SIZE 2048" in (tmp_path / "work" / "src" / "main.cpp").read_text()
    log = subprocess.run(["git", "-C", str(tmp_path / "work"), "log", "--format=%s"], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert log == ["Apply 0001-embed-size-2048.patch: multimodal demo stand-in: EMBED_SIZE 2048 for its 3B "
                   "stand-in encoder", "Source of app mm"]
    assert [p["file"] for p in done["patches"]] == ["0001-embed-size-2048.patch"]
    assert done == again  # fixed identity and dates: the same source and patches give the same shas


def test_a_patch_that_does_not_apply_names_the_patch_the_file_and_the_hunk(tmp_path):
    source = source_copy(tmp_path)
    patch = write_patch(tmp_path / "patches", "0001-raise-the-image-size.patch", BAD_HUNK)
    build = apps.AppBuild(name="mm", source_dir=source, patches=(patch,))

    with pytest.raises(UserError) as caught:
        apps.prepare_source(build, tmp_path / "work")
    message = str(caught.value)
    assert "\n" not in message
    assert "patch 0001-raise-the-image-size.patch does not apply to the source of app mm" in message
    assert "src/main.cpp, hunk @@ -30,3 +30,3 @@ does not match" in message
    assert "patch failed: src/main.cpp:30" in message


def test_a_patch_for_a_file_the_source_lacks_names_that_file(tmp_path):
    source = source_copy(tmp_path)
    patch = write_patch(tmp_path / "patches", "0001-other.patch",
                        "--- a/src/image_enc.cc\n+++ b/src/image_enc.cc\n@@ -1 +1 @@\n-a\n+b\n")
    with pytest.raises(UserError, match=r"patch 0001-other\.patch .*: src/image_enc\.cc is not in the tree"):
        apps.prepare_source(apps.AppBuild(name="mm", source_dir=source, patches=(patch,)), tmp_path / "work")


def test_a_missing_toolchain_or_sysroot_is_one_line_before_anything_runs(tmp_path):
    sdk = tmp_path / "sdk"
    (sdk / "prebuilts").mkdir(parents=True)
    build = apps.AppBuild(name="mm", source_dir=source_copy(tmp_path), toolchain="sdk")
    with pytest.raises(UserError) as caught:
        apps.build_app(build, image="no-such-image", app_dir=tmp_path / "app", sdk_dir=sdk, log_path=tmp_path / "log")
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"app mm: no prebuilt C++ cross compiler in {sdk}/prebuilts/gcc/")
    assert not (tmp_path / "app" / "src").exists()  # stopped before copying the source

    build = apps.AppBuild(name="mm", source_dir=source_copy(tmp_path / "2"), sysroot="buildroot/output/host/sysroot")
    with pytest.raises(UserError) as caught:
        apps.build_app(build, image="no-such-image", app_dir=tmp_path / "app", sdk_dir=sdk, log_path=tmp_path / "log")
    assert str(caught.value) == (f"app mm: sysroot {sdk}/buildroot/output/host/sysroot does not exist: build the SDK "
                                 "step that makes it first, or fix the app's sysroot")


def test_the_sdk_toolchain_is_found_linux_first_and_a_bare_metal_or_dangling_one_is_skipped(tmp_path):
    sdk = tmp_path / "sdk"
    for name, prefix in (("gcc-arm-10.3-aarch64-none-elf", "aarch64-none-elf-"),
                         ("gcc-arm-10.3-aarch64-none-linux-gnu", "aarch64-none-linux-gnu-"),
                         ("broken", "aarch64-broken-linux-gnu-")):
        bin_dir = sdk / "prebuilts" / "gcc" / "linux-x86" / "aarch64" / name / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / f"{prefix}g++").symlink_to("missing-target" if name == "broken" else SDK_WRAPPER)
        (bin_dir / f"{prefix}gcc").symlink_to(SDK_WRAPPER)
    found = apps.find_toolchain(sdk, "auto")
    assert (found.origin, Path(found.cxx).name, Path(found.cc).name) == \
        ("sdk", "aarch64-none-linux-gnu-g++", "aarch64-none-linux-gnu-gcc")
    assert apps.find_toolchain(sdk, "builder") == apps.Toolchain("aarch64-linux-gnu-gcc", "aarch64-linux-gnu-g++",
                                                                 "builder")
    assert apps.find_toolchain(None, "auto").origin == "builder"


def test_files_are_copied_once_and_again_only_when_they_change(tmp_path):
    model = tmp_path / "model.rkllm"
    model.write_bytes(b"x" * 3_000_000)
    libs = tmp_path / "lib"
    (libs / "sub").mkdir(parents=True)
    (libs / "sub" / "librt.so").write_bytes(b"lib")
    files = [apps.FileInput(model, "/opt/models/m.rkllm"), apps.FileInput(libs, "/usr/lib/rt")]
    staged = tmp_path / "files"

    first = apps.stage_files(files, staged)
    inode = (staged / "opt/models/m.rkllm").stat().st_ino
    second = apps.stage_files(files, staged)
    inode_after_second = (staged / "opt/models/m.rkllm").stat().st_ino
    model.write_bytes(b"y" * 3_000_000)
    third = apps.stage_files(files[:1], staged)

    assert [(e["dest"], e["copied"]) for e in first] == [("/opt/models/m.rkllm", True),
                                                         ("/usr/lib/rt/sub/librt.so", True)]
    assert [e["copied"] for e in second] == [False, False]
    assert inode_after_second == inode  # not written again
    assert [e["copied"] for e in third] == [True]
    assert (staged / "opt/models/m.rkllm").read_bytes()[:1] == b"y"
    assert not (staged / "usr").exists()  # no longer listed: gone
    with pytest.raises(UserError, match=r"files\[0\]\.dest must be an absolute path in the rootfs"):
        apps.stage_files([apps.FileInput(model, "opt/x")], staged, app="mm")


def test_an_installed_elf_for_another_machine_is_refused(tmp_path):
    root = tmp_path / "root"
    (root / "usr" / "bin").mkdir(parents=True)
    shutil.copyfile(shutil.which("true") or "/bin/true", root / "usr" / "bin" / "tool")
    with pytest.raises(UserError, match=r"^app mm: /usr/bin/tool is an ELF file for x86-64, not aarch64"):
        apps.check_elves(root, app="mm")


# --------------------------------------------------------------------------- in the builder

@pytest.mark.docker
def test_a_cmake_app_is_cross_compiled_in_the_builder_patched_and_installed_with_its_files(tmp_path, builder_image):
    model = tmp_path / "extra.bin"
    model.write_bytes(b"\0" * 1024)
    build = apps.AppBuild(name="multimodal-demo", source_dir=source_copy(tmp_path), prefix="/opt/mm",
                          patches=tuple(list_patches(STANDIN_PATCHES)), options={"RUNTIME_VERSION": "1.3.0"},
                          files=(apps.FileInput(model, "/opt/mm/share/extra.bin"),))
    lines: list[str] = []
    result = apps.build_app(build, image=builder_image.tag, app_dir=tmp_path / "app", sdk_dir=None,
                            log_path=tmp_path / "app.log", echo=lines.append)

    program = result.root / "opt" / "mm" / "bin" / "demo"
    assert elf_header(program) == (2, 1, 183)  # ELFCLASS64, little endian, EM_AARCH64
    assert sorted(p.relative_to(result.root).as_posix() for p in result.root.rglob("*") if p.is_file()) == [
        "opt/mm/bin/demo", "opt/mm/share/extra.bin", "opt/mm/share/multimodal-demo/demo.pgm",
        "opt/mm/share/multimodal-demo/standin-vision.rknn", "opt/mm/share/multimodal-demo/standin-vl.rkllm"]
    assert result.record["toolchain"]["origin"] == "builder"
    assert "aarch64-linux-gnu-g++" in result.record["toolchain"]["version"]
    assert result.overlay_name == "app-multimodal-demo"
    log = (tmp_path / "app.log").read_text()
    configure = next(line for line in log.splitlines() if line.startswith("+ cmake -S "))
    for setting in ("-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=aarch64",
                    "-DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++", "-DCMAKE_INSTALL_PREFIX=/opt/mm",
                    "-DRUNTIME_VERSION=1.3.0"):
        assert setting in configure.split()
    assert any(line.startswith("[app-multimodal-demo ") for line in lines)

    # The program behaves like rknn-llm's demo: run it under qemu-user in the builder.
    run_log = tmp_path / "run.log"
    with pytest.raises(StepFailed):
        run_step(builder_image.tag, ["qemu-aarch64-static", str(program), "a", "b"], name="run", workdir="/",
                 mounts=[Mount(result.root, str(result.root), read_only=True)], env={}, log_path=run_log,
                 echo=None, ccache_volume=None)
    assert f"Usage: {program} image_path encoder_model_path llm_model_path" in run_log.read_text()
    share = result.root / "opt" / "mm" / "share" / "multimodal-demo"
    script = (f"printf '0\\nexit\\n' | RKLLM_LOG_LEVEL=1 RKLLM_STANDIN_DRIVER_VERSION=0.9.8 qemu-aarch64-static "
              f"{program} {share}/demo.pgm {share}/standin-vision.rknn {share}/standin-vl.rkllm 8 1024 2")
    run_step(builder_image.tag, ["sh", "-c", script], name="run", workdir="/",
             mounts=[Mount(result.root, str(result.root), read_only=True)], env={}, log_path=run_log,
             echo=None, ccache_volume=None)
    text = run_log.read_text()
    for expected in ("rkllm-runtime version: 1.3.0", "rkllm init success", "main: LLM Model loaded in",
                     "main: ImgEnc Model loaded in", "main: ImgEnc Model inference took", "robot: The picture shows",
                     "Peak Memory Usage (GB)"):
        assert expected in text


@pytest.mark.docker
def test_the_sdk_prebuilt_toolchain_is_used_when_the_sdk_has_one(tmp_path, builder_image):
    sdk = tmp_path / "sdk"
    bin_dir = sdk / "prebuilts" / "gcc" / "linux-x86" / "aarch64" / "gcc-arm-10.3-aarch64-none-linux-gnu" / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("gcc", "g++"):
        shutil.copy(SDK_WRAPPER, bin_dir / f"aarch64-none-linux-gnu-{tool}")
    source = tmp_path / "hello"
    source.mkdir()
    (source / "Makefile").write_text("hello: hello.c\n\t$(CC) -static -o $@ $<\ninstall: hello\n"
                                     "\tinstall -D -m 0755 hello $(DESTDIR)$(PREFIX)/bin/hello\n")
    (source / "hello.c").write_text('#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n')
    result = apps.build_app(apps.AppBuild(name="hello", source_dir=source, build="make"), image=builder_image.tag,
                            app_dir=tmp_path / "app", sdk_dir=sdk, log_path=tmp_path / "app.log", echo=None)

    assert elf_header(result.root / "usr" / "bin" / "hello")[2] == 183
    assert result.record["toolchain"]["origin"] == "sdk"
    assert result.record["toolchain"]["cc"] == str(bin_dir / "aarch64-none-linux-gnu-gcc")


@pytest.mark.docker
def test_a_builder_without_the_cross_compiler_is_one_line(tmp_path):
    build = apps.AppBuild(name="mm", source_dir=source_copy(tmp_path))
    with pytest.raises(UserError) as caught:  # the bare base image: no cross compiler, no cmake
        apps.build_app(build, image=BASE_IMAGE, app_dir=tmp_path / "app", sdk_dir=None,
                       log_path=tmp_path / "app.log", echo=None)
    assert str(caught.value) == (f"app mm: the builder image {BASE_IMAGE} has no aarch64-linux-gnu-gcc: add "
                                 "g++-aarch64-linux-gnu to it (builder/install-host-packages.sh lists it; rebuild "
                                 "the builder) or use an SDK with a prebuilt toolchain")


@pytest.mark.docker
def test_a_compile_error_shows_the_compiler_error_first(tmp_path, builder_image):
    source = source_copy(tmp_path)
    main = source / "src" / "main.cpp"
    main.write_text(main.read_text().replace("int main(int argc", "int main(int argc, undeclared_type x", 1))
    with pytest.raises(StepFailed) as caught:
        apps.build_app(apps.AppBuild(name="mm", source_dir=source), image=builder_image.tag,
                       app_dir=tmp_path / "app", sdk_dir=None, log_path=tmp_path / "app.log", echo=None)
    message = str(caught.value)
    assert message.startswith("build step app-mm (`cmake build of .`) failed with exit code")
    assert "first errors:" in message and "error:" in message and "undeclared_type" in message


def test_the_signature_changes_with_a_patch_an_option_or_a_file_and_not_otherwise(tmp_path):
    model = tmp_path / "model.rkllm"
    model.write_bytes(b"m" * 1000)
    patch = write_patch(tmp_path / "patches", "0001-x.patch", BAD_HUNK)
    build = apps.AppBuild(name="mm", source_dir=STANDIN, patches=(patch,), files=(apps.FileInput(model, "/m"),))

    def sign(b: apps.AppBuild) -> dict:
        return apps.signature(b, source_id="tree-1", sdk_dir=None, builder="hash-1")

    first = sign(build)
    assert sign(build) == first
    assert sign(dataclasses.replace(build, options={"RUNTIME_VERSION": "1.3.0"})) != first
    patch.write_text(BAD_HUNK.replace("256", "255"))
    second = sign(build)
    assert second["patches"] != first["patches"] and second["files"] == first["files"]
    model.write_bytes(b"n" * 1001)
    assert sign(build)["files"] != second["files"]
    assert apps.signature(build, source_id="tree-2", sdk_dir=None, builder="hash-1") != sign(build)
