"""The builder container: image reuse/rebuild, step runs, failures, uid mapping, interruption."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from helpers import BASE_IMAGE as BASE
from helpers import REPO
from rk3576_build.build import container
from rk3576_build.build.container import (
    Mount,
    StepFailed,
    builder_config_hash,
    ensure_builder_image,
    remove_stale_containers,
    run_step,
)
from rk3576_build.core.errors import UserError

TEST_REPO = "rk3576-build/test-tiny"


def _tiny_dockerfile(root: Path, run: str = "echo hello > /greeting") -> Path:
    (root / "files").mkdir(parents=True, exist_ok=True)
    (root / "files" / "a.txt").write_text("payload\n")
    (root / "unrelated.bin").write_bytes(b"not in the context\n")
    dockerfile = root / "Dockerfile.tiny"
    dockerfile.write_text(textwrap.dedent(f"""\
        ARG BASE
        FROM ${{BASE}}
        ARG GREETING=hi
        COPY files/ /opt/files/
        RUN {run}
        """))
    return dockerfile


def _labelled(label_value: str) -> list:
    client = container.docker_client()
    return client.containers.list(all=True, filters={"label": f"{container.STEP_LABEL}={label_value}"})


def _remove_images(tags):
    client = container.docker_client()
    for tag in tags:
        try:
            client.images.remove(tag, force=True)
        except Exception:
            pass


# --- no engine needed -----------------------------------------------------------------

def test_config_hash_covers_context_and_args_only(tmp_path):
    dockerfile = _tiny_dockerfile(tmp_path)
    first = builder_config_hash(dockerfile, {"BASE": BASE, "GREETING": "hi"})
    assert first == builder_config_hash(dockerfile, {"GREETING": "hi", "BASE": BASE})  # order-free
    (tmp_path / "unrelated.bin").write_bytes(b"changed, but outside the build context\n")
    assert builder_config_hash(dockerfile, {"BASE": BASE, "GREETING": "hi"}) == first
    assert builder_config_hash(dockerfile, {"BASE": BASE, "GREETING": "ho"}) != first
    (tmp_path / "files" / "a.txt").write_text("other payload\n")
    second = builder_config_hash(dockerfile, {"BASE": BASE, "GREETING": "hi"})
    assert second != first
    dockerfile.write_text(dockerfile.read_text() + "RUN true\n")
    assert builder_config_hash(dockerfile, {"BASE": BASE, "GREETING": "hi"}) not in (first, second)


def test_context_is_dockerfile_and_builder_dir_only():
    names = [name for name, _ in container._context_files(REPO / "Dockerfile.builder")]
    assert "Dockerfile.builder" in names and "builder/entrypoint.sh" in names
    assert all(name == "Dockerfile.builder" or name.startswith("builder/") for name in names)


def test_log_cleaner_drops_escapes_and_crs_across_chunk_boundaries():
    stream = [b"\x1b[3", b"6mPick a defconfig:\x1b[0m\r", b"\n1. rockchip_defconfig\r\n",
              b"\x1b]0;title\x07progress 10%\rprogress 99%\r", b"\nWhich would you like? [1]: "]
    cleaner = container.LogCleaner()
    out = b"".join(cleaner.feed(chunk) for chunk in stream) + cleaner.feed(b"", final=True)
    assert out == (b"Pick a defconfig:\n1. rockchip_defconfig\nprogress 10%\nprogress 99%\n"
                   b"Which would you like? [1]: ")


def test_missing_dockerfile_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        builder_config_hash(tmp_path / "nope", {})


def test_unreachable_engine_is_a_user_error(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(UserError, match="Docker engine not reachable .*start dockerd .*DOCKER_HOST"):
        container.docker_client()


def test_dockerfile_has_no_rk_variables():
    text = (REPO / "Dockerfile.builder").read_text() + (REPO / "builder" / "entrypoint.sh").read_text()
    assert "RK_" not in text.replace("No RK_*", "")
    assert "ARG BASE=ubuntu:22.04" in text


# --- with the engine ------------------------------------------------------------------

@pytest.mark.docker
def test_image_reused_when_unchanged_and_rebuilt_when_an_arg_changes(tmp_path):
    dockerfile = _tiny_dockerfile(tmp_path, run=f"echo {uuid.uuid4().hex} > /greeting")
    lines: list[str] = []
    first = ensure_builder_image(dockerfile, {"BASE": BASE}, repo=TEST_REPO, log=lines.append)
    try:
        assert any(line.startswith("Step ") for line in lines), "the build's progress reaches the log"
        assert first.tag == f"{TEST_REPO}:{first.config_hash[:12]}"
        image = container.docker_client().images.get(first.tag)
        assert image.labels[container.HASH_LABEL] == first.config_hash

        lines.clear()
        again = ensure_builder_image(dockerfile, {"BASE": BASE}, repo=TEST_REPO, log=lines.append)
        assert again == first
        assert not any(line.startswith("Step ") for line in lines), "reused, not rebuilt"

        changed = ensure_builder_image(dockerfile, {"BASE": BASE, "GREETING": "ho"}, repo=TEST_REPO,
                                       log=lines.append)
        assert changed.id != first.id and changed.tag != first.tag
        assert any(line.startswith("Step ") for line in lines)
    finally:
        changed_hash = builder_config_hash(dockerfile, {"BASE": BASE, "GREETING": "ho"})
        _remove_images([first.tag, f"{TEST_REPO}:{changed_hash[:12]}"])


@pytest.mark.docker
def test_failing_image_build_reports_the_step_output(tmp_path):
    dockerfile = _tiny_dockerfile(tmp_path, run=f"echo boom-{uuid.uuid4().hex[:6]} && false")
    with pytest.raises(UserError) as err:
        ensure_builder_image(dockerfile, {"BASE": BASE}, repo=TEST_REPO, log=lambda _line: None)
    assert "boom-" in str(err.value) and "failed" in str(err.value)


@pytest.mark.docker
def test_missing_base_image_is_a_user_error(tmp_path):
    dockerfile = _tiny_dockerfile(tmp_path)
    with pytest.raises(UserError, match="setup-host.sh"):
        ensure_builder_image(dockerfile, {"BASE": "rk3576-build/no-such-base:1"}, repo=TEST_REPO,
                             log=lambda _line: None)


@pytest.mark.docker
def test_builder_image_reused_and_has_the_tools(builder_image, tmp_path):
    lines: list[str] = []
    assert ensure_builder_image(REPO / "Dockerfile.builder", {"BASE": BASE}, log=lines.append) == builder_image
    assert lines == [f"builder image {builder_image.tag} is up to date"]
    log = tmp_path / "tools.log"
    run_step(builder_image.tag, ["bash", "-c", "locale charmap; command -v aarch64-linux-gnu-gcc ccache "
                                 "mkimage dtc expect fakeroot; env | grep -c '^RK_' || true"],
             name="tools", workdir="/", mounts=[], env={}, log_path=log, echo=None, ccache_volume=None)
    text = log.read_text()
    assert "UTF-8" in text and "/usr/bin/aarch64-linux-gnu-gcc" in text and "/usr/bin/mkimage" in text
    assert text.rstrip().endswith("0"), "no RK_* variable in the image"


@pytest.mark.docker
def test_step_runs_as_the_given_uid_with_sudo_and_ccache(builder_image, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    os.chown(work, 4321, 4321)  # the caller's own directory
    volume = f"rk3576-build-test-ccache-{uuid.uuid4().hex[:8]}"
    echoed: list[str] = []
    try:
        elapsed = run_step(builder_image.tag,
                           ["bash", "-c", "set -e; id -u; touch out.txt; sudo -n true && echo sudo-ok; "
                            "touch \"$CCACHE_DIR/probe\" && echo ccache-ok"],
                           name="owner", workdir="/work", mounts=[Mount(work, "/work")], env={},
                           log_path=tmp_path / "logs" / "owner.log", uid=4321, gid=4321,
                           ccache_volume=volume, echo=echoed.append)
    finally:
        container.docker_client().volumes.get(volume).remove(force=True)
    assert elapsed > 0
    assert (work / "out.txt").stat().st_uid == 4321 and (work / "out.txt").stat().st_gid == 4321
    log = (tmp_path / "logs" / "owner.log").read_text()
    assert log.splitlines()[0] == "4321" and "sudo-ok" in log and "ccache-ok" in log
    assert echoed and all(line.startswith("[owner ") and "s] " in line for line in echoed)


@pytest.mark.docker
def test_env_is_exactly_what_is_given_without_rk(builder_image, tmp_path, monkeypatch):
    monkeypatch.setenv("HOST_ONLY_VARIABLE", "leak")
    echoed: list[str] = []
    log = tmp_path / "env.log"
    run_step(builder_image.tag, ["env"], name="env", workdir="/", mounts=[],
             env={"FOO": "bar", "RK_KERNEL_CFG": "x"}, log_path=log, echo=echoed.append, ccache_volume=None)
    text = log.read_text()
    assert "FOO=bar" in text
    assert "RK_" not in text and "HOST_ONLY_VARIABLE" not in text
    assert any("RK_KERNEL_CFG" in line and "warning" in line for line in echoed)


@pytest.mark.docker
def test_failing_step_raises_with_exit_code_tail_and_log(builder_image, tmp_path):
    log = tmp_path / "fail.log"
    log.write_text("stale text from an earlier run\n")
    script = "for i in $(seq 1 40); do echo line$i; done; sleep 0.3; echo oops >&2; exit 7"
    with pytest.raises(StepFailed) as err:
        run_step(builder_image.tag, ["bash", "-c", script], name="failing", workdir="/", mounts=[], env={},
                 log_path=log, echo=None, ccache_volume=None)
    message = str(err.value)
    assert err.value.exit_code == 7 and err.value.log_path == log
    assert isinstance(err.value, UserError)
    assert "failing" in message and "exit code 7" in message and str(log) in message
    assert "line40" in message and "oops" in message and "line5\n" not in message
    text = log.read_text()
    assert "stale" not in text and "line1\n" in text and "line40" in text and "oops" in text
    assert not _labelled("failing")


@pytest.mark.docker
def test_responder_answers_on_stdin(builder_image, tmp_path):
    log = tmp_path / "ask.log"
    seen: list[str] = []

    def responder(text: str):
        seen.append(text)
        return "world\n" if text.endswith("Name? ") else None

    run_step(builder_image.tag, ["bash", "-c", 'read -r -p "Name? " n; echo "hello $n"'], name="ask",
             workdir="/", mounts=[], env={}, log_path=log, responder=responder, echo=None, ccache_volume=None)
    assert "hello world" in log.read_text()
    assert seen[0].endswith("Name? ")


@pytest.mark.docker
def test_missing_mount_source_is_a_user_error(builder_image, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        run_step(builder_image.tag, ["true"], name="mnt", workdir="/", mounts=[Mount(tmp_path / "nope", "/x")],
                 env={}, log_path=tmp_path / "mnt.log", echo=None)


INTERRUPTED = """
import sys
from pathlib import Path
from rk3576_build.build.container import run_step
try:
    run_step(sys.argv[1], ["bash", "-c", "echo started; sleep 300"], name=sys.argv[2], workdir="/", mounts=[],
             env={}, log_path=Path(sys.argv[3]), ccache_volume=None)
except KeyboardInterrupt as exc:
    print("interrupted", flush=True)
    sys.exit(128 + getattr(exc, "signum", 2))
"""


@pytest.mark.docker
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["ctrl-c", "sigterm", "sighup"])
def test_interrupted_step_leaves_no_container(builder_image, tmp_path, signum):
    name = f"interrupt-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "int.log"
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED, builder_image.tag, name, str(log)],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and "started" in log.read_text()):
            assert time.monotonic() < deadline, "the step never started"
            assert proc.poll() is None
            time.sleep(0.1)
        assert _labelled(name), "the step runs in a labelled container"
        signalled = time.monotonic()
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 128 + signum and "interrupted" in out
        assert not _labelled(name)
        assert time.monotonic() - signalled < 15
    finally:
        if proc.poll() is None:
            proc.kill()
        for stale in _labelled(name):
            stale.remove(force=True)


@pytest.mark.docker
def test_owned_by_removes_only_its_work_dirs_stale_containers_and_labels_new_ones(builder_image, tmp_path):
    client = container.docker_client()
    mine, other = tmp_path / "mine", tmp_path / "other"
    names = {}
    for workdir in (mine, other):
        names[workdir] = f"stale-{uuid.uuid4().hex[:8]}"
        client.containers.create(builder_image.tag, ["sleep", "60"], labels={
            container.STEP_LABEL: names[workdir], container.WORKDIR_LABEL: str(workdir)})
    said = []
    try:
        with container.owned_by(mine, said.append):
            assert not _labelled(names[mine]) and _labelled(names[other])
            assert said == [f"removed 1 container(s) left running by an earlier, killed run in {mine}: "
                            f"{names[mine]}"]
            assert container._labels("x") == {container.STEP_LABEL: "x", container.WORKDIR_LABEL: str(mine)}
        assert container._labels("x") == {container.STEP_LABEL: "x"}
        with container.owned_by(mine, said.append):
            assert len(said) == 1, "nothing stale: nothing said"
    finally:
        assert remove_stale_containers(client, workdir=str(other)) == [names[other]]
