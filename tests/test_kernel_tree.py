"""kernel_tree: real git repos in small fake kernel trees, real sample driver trees."""

from __future__ import annotations

import difflib
import subprocess
import time
from pathlib import Path

import pytest

from rk3576_build.core.errors import UserError
from rk3576_build.demo.sample_driver import driver_files, write_driver_tree
from rk3576_build.kernel import tree as kt

MAKEFILE = ("# SPDX-License-Identifier: GPL-2.0\nVERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 75\n"
            "EXTRAVERSION =\nNAME = Curry Ramen\n")


def make_kernel(root: Path, old_driver: str | None = "0.9.6", gitignore: bool = True) -> Path:
    """A fake vendor kernel tree: Makefile, a few sources, optionally an old driver."""
    files = {
        "Makefile": MAKEFILE,
        "drivers/Makefile": "obj-$(CONFIG_ROCKCHIP_RKNPU) += rknpu/\n",
        "include/linux/mm.h": "#ifndef _LINUX_MM_H\n#define _LINUX_MM_H\n#endif\n",
        "arch/arm64/configs/rockchip_rk3576_myd_lr3576_defconfig": "CONFIG_ROCKCHIP_RKNPU=y\n",
    }
    if gitignore:  # the kernel's own: generated files are ignored
        files[".gitignore"] = "*.o\n*.ko\n*.mod.c\n.config\n"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    if old_driver:
        write_driver_tree(root / "drivers/rknpu", old_driver,
                          extra={"rknpu.mod.c": b"/* generated, shipped by mistake */\n"})
    return root


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def subjects(root: Path) -> list[str]:
    return git(root, "log", "--reverse", "--format=%s", kt.BRANCH).splitlines()


def tracked(root: Path, under: str) -> set[str]:
    return set(git(root, "ls-files", under).splitlines())


def make_patch(root: Path, rel: str, old: str, new: str, header: str = "") -> str:
    """A -p1 unified diff of `rel` changing `old` text to `new`."""
    before = (root / rel).read_text()
    assert old in before
    after = before.replace(old, new, 1)
    diff = "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True),
                                        f"a/{rel}", f"b/{rel}"))
    return header + f"diff --git a/{rel} b/{rel}\n" + diff


@pytest.fixture
def driver98(tmp_path) -> Path:
    return write_driver_tree(tmp_path / "src98" / "drivers" / "rknpu", "0.9.8")


@pytest.fixture
def overlaid(tmp_path, driver98) -> Path:
    kernel = make_kernel(tmp_path / "kernel")
    kt.ensure_baseline(kernel)
    kt.overlay_driver(kernel, driver98, description="rknpu_driver_0.9.8_20241009.tar.bz2 sha256 f00")
    return kernel


def test_read_versions(tmp_path, driver98):
    version = kt.read_driver_version(driver98)
    assert (version.major, version.minor, version.patchlevel, version.date) == (0, 9, 8, "20240828")
    assert str(version) == "0.9.8"
    kernel = make_kernel(tmp_path / "k", old_driver=None)
    assert kt.read_kernel_version(kernel) == "6.1.75"
    (kernel / "Makefile").write_text(MAKEFILE.replace("EXTRAVERSION =", "EXTRAVERSION = -rc1"))
    assert kt.read_kernel_version(kernel) == "6.1.75-rc1"


def test_version_errors_name_the_file(tmp_path, driver98):
    with pytest.raises(UserError, match="rknpu_drv.h.*source_dir"):
        kt.read_driver_version(tmp_path / "src98")  # the tarball root, not drivers/rknpu
    (driver98 / "include/rknpu_drv.h").write_text("#define DRIVER_MAJOR 0\n")
    with pytest.raises(UserError, match=r"rknpu_drv\.h: no #define for DRIVER_MINOR"):
        kt.read_driver_version(driver98)
    with pytest.raises(UserError, match="kernel Makefile not found"):
        kt.read_kernel_version(tmp_path)
    (tmp_path / "Makefile").write_text("all:\n")
    with pytest.raises(UserError, match="VERSION, PATCHLEVEL and SUBLEVEL"):
        kt.read_kernel_version(tmp_path)


def test_baseline_is_first_commit_tagged_and_idempotent(tmp_path):
    kernel = make_kernel(tmp_path / "kernel")
    sha = kt.ensure_baseline(kernel)
    assert git(kernel, "rev-list", "--max-parents=0", "HEAD") == sha
    assert git(kernel, "rev-parse", f"{kt.BASELINE_TAG}^{{commit}}") == sha
    assert git(kernel, "symbolic-ref", "--short", "HEAD") == kt.BRANCH
    assert git(kernel, "log", "-1", "--format=%an <%ae> %cn <%ce>") == \
        "rk3576-build <rk3576-build@localhost> rk3576-build <rk3576-build@localhost>"
    assert subjects(kernel) == ["Vendor kernel baseline (Linux 6.1.75)"]
    # The vendor's stray file is ignored by the kernel's .gitignore, all else is tracked.
    assert "drivers/rknpu/include/rknpu_drv.h" in tracked(kernel, "drivers/rknpu")
    assert git(kernel, "status", "--porcelain") == ""
    (kernel / "new-file").write_text("x")
    assert kt.ensure_baseline(kernel) == sha  # tag exists: nothing done
    assert git(kernel, "rev-list", "--count", "HEAD") == "1"
    assert kt.tree_state(kernel) == sha


def test_baseline_ignores_user_git_config(tmp_path, monkeypatch):
    """Hooks, signing, autocrlf and personal excludes must not change the baseline."""
    plain = kt.ensure_baseline(make_kernel(tmp_path / "plain"))
    home = tmp_path / "home"
    hooks = home / "hooks"
    hooks.mkdir(parents=True)
    for hook in ("pre-commit", "commit-msg"):
        (hooks / hook).write_text("#!/bin/sh\nexit 1\n")
        (hooks / hook).chmod(0o755)
    (home / "ignore").write_text("*.c\nMakefile\n")
    (home / ".gitconfig").write_text(
        f"[core]\n\thooksPath = {hooks}\n\tautocrlf = true\n\texcludesFile = {home / 'ignore'}\n"
        "[commit]\n\tgpgSign = true\n[user]\n\tname = Someone\n\temail = someone@example.com\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    assert kt.ensure_baseline(make_kernel(tmp_path / "configured")) == plain


def test_baseline_of_user_repo_keeps_history(tmp_path):
    kernel = make_kernel(tmp_path / "kernel", old_driver=None)
    git(kernel, "init", "-q", "-b", "main")
    git(kernel, "add", "-A")
    git(kernel, "-c", "user.name=U", "-c", "user.email=u@x", "commit", "-qm", "user commit")
    user_head = git(kernel, "rev-parse", "HEAD")
    (kernel / "local.c").write_text("int local;\n")  # uncommitted: part of the baseline
    sha = kt.ensure_baseline(kernel)
    assert git(kernel, "rev-parse", f"{sha}^") == user_head
    assert "local.c" in tracked(kernel, ".")
    assert git(kernel, "symbolic-ref", "--short", "HEAD") == kt.BRANCH
    assert git(kernel, "rev-parse", "main") == user_head


def test_overlay_replaces_old_driver(tmp_path, driver98):
    kernel = make_kernel(tmp_path / "kernel")  # ships 0.9.6 with a stray rknpu.mod.c
    baseline = kt.ensure_baseline(kernel)
    sha = kt.overlay_driver(kernel, driver98,
                            description="rknpu_driver_0.9.8_20241009.tar.bz2 sha256 1883abc")
    on_disk = {p.relative_to(kernel / "drivers/rknpu").as_posix()
               for p in (kernel / "drivers/rknpu").rglob("*") if p.is_file()}
    assert on_disk == set(driver_files("0.9.8"))  # rknpu.mod.c is gone
    assert '"20240828"' in (kernel / "drivers/rknpu/include/rknpu_drv.h").read_text()
    assert git(kernel, "rev-parse", f"{kt.OVERLAY_TAG}^{{commit}}") == sha
    assert git(kernel, "rev-parse", f"{sha}^") == baseline
    message = git(kernel, "log", "-1", "--format=%B", sha)
    assert message.startswith("Overlay RKNPU driver 0.9.8 (20240828) onto drivers/rknpu")
    assert "rknpu_driver_0.9.8_20241009.tar.bz2 sha256 1883abc" in message
    assert git(kernel, "status", "--porcelain") == ""


def test_overlay_does_not_depend_on_previous_state(tmp_path, driver98):
    """0.9.6 overlaid first (stray file, local edits) then 0.9.8: same sha as 0.9.8 straight away."""
    description = "rknpu_driver_0.9.8_20241009.tar.bz2 sha256 1883"
    straight = make_kernel(tmp_path / "straight", old_driver=None, gitignore=False)
    kt.ensure_baseline(straight)
    expected = kt.overlay_driver(straight, driver98, description=description)

    kernel = make_kernel(tmp_path / "kernel", old_driver=None, gitignore=False)
    kt.ensure_baseline(kernel)
    old = write_driver_tree(tmp_path / "src96", "0.9.6", extra={"rknpu.mod.c": b"stale\n"})
    kt.overlay_driver(kernel, old, description="rknpu_driver_0.9.6_20240322.tar.bz2")
    assert "drivers/rknpu/rknpu.mod.c" in tracked(kernel, "drivers/rknpu")
    (kernel / "Makefile").write_text(MAKEFILE + "# my local edit\n")
    (kernel / "drivers/rknpu/rknpu_drv.o").write_text("object")
    assert kt.overlay_driver(kernel, driver98, description=description) == expected
    assert not (kernel / "drivers/rknpu/rknpu.mod.c").exists()
    assert not (kernel / "drivers/rknpu/rknpu_drv.o").exists()
    assert "my local edit" not in (kernel / "Makefile").read_text()
    # The local edits were stashed, not lost.
    assert "my local edit" in git(kernel, "stash", "show", "-p", "stash@{0}")
    assert subjects(kernel) == ["Vendor kernel baseline (Linux 6.1.75)",
                                "Overlay RKNPU driver 0.9.8 (20240828) onto drivers/rknpu"]


def test_overlay_version_mismatch_leaves_baseline(tmp_path, driver98):
    kernel = make_kernel(tmp_path / "kernel")
    baseline = kt.ensure_baseline(kernel)
    kt.overlay_driver(kernel, driver98, description="d", expected_version="v0.9.8")
    old = write_driver_tree(tmp_path / "src96", "0.9.6")
    with pytest.raises(UserError) as error:
        kt.overlay_driver(kernel, old, description="d", expected_version="0.9.8")
    text = str(error.value)
    assert "expects 0.9.8" in text and "declares 0.9.6" in text
    assert str(old / "include" / "rknpu_drv.h") in text
    assert kt.tree_state(kernel) == baseline
    assert git(kernel, "status", "--porcelain") == ""


def test_overlay_needs_baseline_and_sane_dest(tmp_path, driver98):
    kernel = make_kernel(tmp_path / "kernel")
    with pytest.raises(UserError, match="no 'vendor-baseline' tag"):
        kt.overlay_driver(kernel, driver98, description="d")
    kt.ensure_baseline(kernel)
    with pytest.raises(UserError, match="relative path inside the kernel tree"):
        kt.overlay_driver(kernel, driver98, dest="../outside", description="d")


def test_list_patches(tmp_path):
    assert kt.list_patches(tmp_path / "missing") == []
    for name in ("0002-b.patch", "0001-a.patch", "notes.txt"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in kt.list_patches(tmp_path)] == ["0001-a.patch", "0002-b.patch"]
    (tmp_path / "series").write_text("# order matters\n\n0002-b.patch\n0001-a.patch  # second\n")
    assert [p.name for p in kt.list_patches(tmp_path)] == ["0002-b.patch", "0001-a.patch"]
    (tmp_path / "series").write_text("0001-a.patch\n0003-gone.patch\n")
    with pytest.raises(UserError, match=r"series:2 lists 0003-gone.patch"):
        kt.list_patches(tmp_path)
    (tmp_path / "series").write_text("# nothing needed yet\n")
    assert kt.list_patches(tmp_path) == []


def write_series(kernel: Path, patch_dir: Path) -> None:
    """Two independent patches, a plain diff and a format-patch mail, listed in reverse name order."""
    patch_dir.mkdir(exist_ok=True)
    (patch_dir / "0001-mm.patch").write_text(make_patch(
        kernel, "include/linux/mm.h", "#endif\n", "#define RK_TEST 1\n#endif\n",
        header="Add RK_TEST to mm.h\n\nA quilt-style description.\n\n"))
    mail = ("From 0123456789abcdef0123456789abcdef01234567 Mon Sep 17 00:00:00 2001\n"
            "From: Jane Dev <jane@example.com>\nDate: Tue, 1 Oct 2024 10:00:00 +0200\n"
            "Subject: [PATCH] rknpu: say hello\n\nWhy this change is needed.\n---\n"
            " drivers/rknpu/Kconfig | 1 +\n 1 file changed, 1 insertion(+)\n\n")
    kconfig = (kernel / "drivers/rknpu/Kconfig").read_text()
    (patch_dir / "0002-kconfig.patch").write_text(make_patch(
        kernel, "drivers/rknpu/Kconfig", kconfig, kconfig + "# hello\n", header=mail) + "-- \n2.39.5\n")
    (patch_dir / "series").write_text("0002-kconfig.patch\n0001-mm.patch\n")


def test_patch_series_one_commit_each_in_order(tmp_path, overlaid):
    write_series(overlaid, tmp_path / "patches")
    shas = kt.apply_patches(overlaid, kt.list_patches(tmp_path / "patches"))
    assert subjects(overlaid) == [
        "Vendor kernel baseline (Linux 6.1.75)",
        "Overlay RKNPU driver 0.9.8 (20240828) onto drivers/rknpu",
        "Apply 0002-kconfig.patch: rknpu: say hello",
        "Apply 0001-mm.patch: Add RK_TEST to mm.h",
    ]
    assert git(overlaid, "rev-list", "--reverse", f"{kt.OVERLAY_TAG}..HEAD").splitlines() == shas
    assert git(overlaid, "log", "-1", "--format=%an <%ae>", shas[0]) == "Jane Dev <jane@example.com>"
    assert "Why this change is needed." in git(overlaid, "log", "-1", "--format=%B", shas[0])
    assert "RK_TEST" in (overlaid / "include/linux/mm.h").read_text()
    # Without a series file: sorted names.
    (tmp_path / "patches/series").unlink()
    kt.apply_patches(overlaid, kt.list_patches(tmp_path / "patches"))
    assert subjects(overlaid)[2:] == ["Apply 0001-mm.patch: Add RK_TEST to mm.h",
                                      "Apply 0002-kconfig.patch: rknpu: say hello"]


def test_patches_rerun_identical_and_change_replays(tmp_path, overlaid):
    patch_dir = tmp_path / "patches"
    write_series(overlaid, patch_dir)
    first = kt.apply_patches(overlaid, kt.list_patches(patch_dir))
    assert kt.apply_patches(overlaid, kt.list_patches(patch_dir)) == first
    assert kt.tree_state(overlaid) == first[-1]
    # Edit the second patch: the first commit stays, the second is replayed from the overlay.
    patch = patch_dir / "0001-mm.patch"
    patch.write_text(patch.read_text().replace("RK_TEST 1", "RK_TEST 2"))
    second = kt.apply_patches(overlaid, kt.list_patches(patch_dir))
    assert second[0] == first[0] and second[1] != first[1]
    mm = (overlaid / "include/linux/mm.h").read_text()
    assert "RK_TEST 2" in mm and "RK_TEST 1" not in mm
    assert git(overlaid, "rev-list", "--count", f"{kt.OVERLAY_TAG}..HEAD") == "2"
    # An empty series puts the tree back at the overlay.
    assert kt.apply_patches(overlaid, []) == []
    assert kt.tree_state(overlaid) == git(overlaid, "rev-parse", f"{kt.OVERLAY_TAG}^{{commit}}")


def test_reproducible_across_trees(tmp_path, driver98):
    """Same baseline + driver + patches in two places: the same shas."""
    shas = []
    for name in ("one", "two"):
        kernel = make_kernel(tmp_path / name)
        kt.ensure_baseline(kernel)
        overlay = kt.overlay_driver(kernel, driver98, description="same")
        write_series(kernel, tmp_path / f"patches-{name}")
        shas.append([overlay, *kt.apply_patches(kernel, kt.list_patches(tmp_path / f"patches-{name}"))])
    assert shas[0] == shas[1]


def test_broken_patch_names_file_and_stops_at_last_good(tmp_path, overlaid):
    patch_dir = tmp_path / "patches"
    write_series(overlaid, patch_dir)
    broken = make_patch(overlaid, "Makefile", "SUBLEVEL = 75", "SUBLEVEL = 84").replace(
        "-SUBLEVEL = 75", "-SUBLEVEL = 99")
    (patch_dir / "0003-broken.patch").write_text(broken)
    (patch_dir / "series").write_text("0002-kconfig.patch\n0003-broken.patch\n0001-mm.patch\n")
    with pytest.raises(UserError) as error:
        kt.apply_patches(overlaid, kt.list_patches(patch_dir))
    text = str(error.value)
    assert "0003-broken.patch does not apply" in text
    assert "patch failed: Makefile" in text  # git's own reason
    assert "left at the commit of 0002-kconfig.patch" in text
    assert subjects(overlaid)[-1] == "Apply 0002-kconfig.patch: rknpu: say hello"
    assert git(overlaid, "status", "--porcelain") == ""
    # Fixed patch: the next run continues.
    (patch_dir / "0003-broken.patch").write_text(
        make_patch(overlaid, "Makefile", "SUBLEVEL = 75", "SUBLEVEL = 84"))
    assert len(kt.apply_patches(overlaid, kt.list_patches(patch_dir))) == 3
    assert kt.read_kernel_version(overlaid) == "6.1.84"


def test_apply_patches_needs_overlay(tmp_path):
    kernel = make_kernel(tmp_path / "kernel")
    kt.ensure_baseline(kernel)
    with pytest.raises(UserError, match="no 'rknpu-overlay' tag.*driver overlay"):
        kt.apply_patches(kernel, [])
    with pytest.raises(UserError, match="no git history"):
        kt.tree_state(tmp_path)


def test_baseline_of_many_files(tmp_path):
    """A smaller cousin of bench/bench_kernel_tree.py's 70,000-file tree: it completes."""
    kernel = make_kernel(tmp_path / "kernel")
    for d in range(20):
        folder = kernel / "drivers" / f"d{d:02}"
        folder.mkdir(parents=True)
        for f in range(100):
            (folder / f"f{f}.c").write_text(f"int d{d}_f{f};\n")
    start = time.perf_counter()
    kt.ensure_baseline(kernel)
    print(f"ensure_baseline on 2,000+ files: {time.perf_counter() - start:.2f} s")
    assert int(git(kernel, "ls-files", "drivers").count("\n")) >= 2000
