"""The rebuild check on two work directories: identical artifacts pass; a difference keeps
diffoscope's real report and fails like exit status 1."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from helpers import unavailable
from rk3576_build.pipeline.manifest import build_manifest, write_manifest
from rk3576_build.release.rebuild import compare_work_dirs

UPDATE = "output/update/Image/update.img"


@pytest.fixture(autouse=True)
def _needs_diffoscope():
    if not shutil.which("diffoscope"):
        unavailable("diffoscope is not installed (run scripts/setup-host.sh)")


def work_dir(root: Path, boot: bytes, uuid: bytes = b"UUID-1") -> Path:
    """A work directory as the build leaves it: sdk/ with artifacts and manifest.json."""
    sdk = root / "sdk"
    rockdev = sdk / "rockdev"
    rockdev.mkdir(parents=True)
    (rockdev / "boot.img").write_bytes(boot)
    (rockdev / "rootfs.img").write_bytes(b"ext4 " + uuid + b"\x00" * 512)
    image = sdk / UPDATE
    image.parent.mkdir(parents=True)
    with tarfile.open(image, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("boot.img", "rootfs.img"):
            info = tar.gettarinfo(str(rockdev / name), arcname=name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with (rockdev / name).open("rb") as fh:
                tar.addfile(info, fh)
    write_manifest(root / "manifest.json", build_manifest(
        recipe={"name": "demo"}, inputs=[], steps=[], artifacts_root=sdk,
        artifacts=[UPDATE, "rockdev/boot.img", "rockdev/rootfs.img"]))
    return root


def test_identical_builds_pass(tmp_path):
    first = work_dir(tmp_path / "one", b"kernel v1")
    second = work_dir(tmp_path / "two", b"kernel v1")
    result = compare_work_dirs(first, second, tmp_path / "check")
    assert result.ok and result.exit_status == 0
    assert result.identical == [UPDATE, "rockdev/boot.img", "rockdev/rootfs.img"]
    assert result.summary() == "rebuild check passed: 3 artifact(s) bit-identical"
    summary = json.loads((tmp_path / "check" / "rebuild-check.json").read_text())
    assert summary["status"] == "passed" and summary["differing"] == []
    assert not (tmp_path / "check" / "diffoscope").exists()


def test_a_difference_keeps_diffoscopes_report_and_fails(tmp_path):
    first = work_dir(tmp_path / "one", b"kernel v1", uuid=b"UUID-aaaa")
    second = work_dir(tmp_path / "two", b"kernel v1", uuid=b"UUID-bbbb")
    result = compare_work_dirs(first, second, tmp_path / "check")
    assert not result.ok and result.exit_status == 1
    assert result.identical == ["rockdev/boot.img"]
    assert [d.path for d in result.differing] == [UPDATE, "rockdev/rootfs.img"]
    update = result.differing[0]
    assert update.reports == ["diffoscope/output_update_Image_update.img.txt",
                              "diffoscope/output_update_Image_update.img.html"]
    text = (tmp_path / "check" / update.reports[0]).read_text()
    # diffoscope looked inside the tar: it names the member that differs and both contents
    assert "rootfs.img" in text and "UUID-aaaa" in text and "UUID-bbbb" in text
    assert "<html" in (tmp_path / "check" / update.reports[1]).read_text().lower()
    assert "rebuild check failed: 2 artifact(s) differ" in result.summary()
    summary = json.loads((tmp_path / "check" / "rebuild-check.json").read_text())
    assert summary["status"] == "failed" and summary["differing"][1]["path"] == "rockdev/rootfs.img"


def test_missing_and_stale_artifacts_are_differences(tmp_path):
    first = work_dir(tmp_path / "one", b"kernel v1")
    second = work_dir(tmp_path / "two", b"kernel v1")
    (second / "sdk/rockdev/boot.img").unlink()
    (first / "sdk/rockdev/rootfs.img").write_bytes(b"changed after the manifest")
    (second / "sdk/rockdev/rootfs.img").write_bytes(b"changed after the manifest")
    result = compare_work_dirs(first, second, tmp_path / "check", html=False)
    notes = {d.path: d.note for d in result.differing}
    assert notes["rockdev/boot.img"] == "missing in the second build"
    assert notes["rockdev/rootfs.img"] == "changed since the first and second build's manifest was written"
    assert result.exit_status == 1 and result.identical == [UPDATE]
