"""The builder container: its image (built once per configuration) and one command run in it.

The only module that talks to Docker; everything else calls these plain functions.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import docker
import docker.errors

from rk3576_build.config.model import Mount
from rk3576_build.config.rules import refused_env_name
from rk3576_build.core import signals
from rk3576_build.core.errors import UserError
from rk3576_build.core.text import ANSI_RE

_log = logging.getLogger(__name__)

HASH_LABEL = "rk3576-build.config-hash"
STEP_LABEL = "rk3576-build.step"
# The work directory a container works for (set while a command holds that work dir's lock).
WORKDIR_LABEL = "rk3576-build.workdir"
CCACHE_TARGET = "/ccache"
TAIL_LINES = 20


@dataclass(frozen=True)
class BuilderImage:
    """A built (or reused) builder image."""

    tag: str
    id: str
    config_hash: str


class StepFailed(UserError):
    """A build step exited non-zero; `exit_code` is its status, `log_path` its full log."""

    def __init__(self, message: str, exit_code: int, log_path: Path, elapsed: float = 0.0):
        super().__init__(message, exit_code=exit_code)
        self.log_path = log_path
        self.elapsed = elapsed


def docker_client() -> docker.DockerClient:
    """A client for the engine that DOCKER_HOST / the docker context name."""
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise UserError(
            f"Docker engine not reachable ({exc}): start dockerd "
            "(scripts/setup-host.sh does) or set DOCKER_HOST"
        ) from exc
    return client


# --- the image -----------------------------------------------------------------------

_COPY_RE = re.compile(r"^\s*(COPY|ADD)\s+(.*)$", re.I)


def _context_entries(dockerfile: Path) -> list[str]:
    """Top-level names (relative to the Dockerfile's dir) that its COPY/ADD lines use."""
    names: set[str] = set()
    for line in dockerfile.read_text().splitlines():
        match = _COPY_RE.match(line)
        if not match:
            continue
        words = [w for w in match.group(2).split() if not w.startswith("--")]
        if any(w.startswith("--from") for w in match.group(2).split()):
            continue  # copies from another stage, not from the context
        for source in words[:-1]:
            if "://" in source:
                continue
            parts = [part for part in PurePosixPath(source).parts if part not in (".", "/")]
            if parts:
                names.add(parts[0])
    return sorted(names)


def _context_files(dockerfile: Path) -> list[tuple[str, Path]]:
    """(archive name, host path) of every file in the build context, sorted."""
    root = dockerfile.parent
    files = [(dockerfile.name, dockerfile)]
    for name in _context_entries(dockerfile):
        path = root / name
        if not path.exists():
            raise UserError(f"{dockerfile}: COPY/ADD uses {name}, which does not exist in {root}")
        if path.is_dir():
            files += [(p.relative_to(root).as_posix(), p) for p in sorted(path.rglob("*")) if p.is_file()]
        else:
            files.append((name, path))
    return sorted(set(files))


def builder_config_hash(dockerfile: Path, build_args: Mapping[str, str]) -> str:
    """sha256 over the Dockerfile, the context files it uses and the sorted build args."""
    dockerfile = Path(dockerfile)
    if not dockerfile.is_file():
        raise UserError(f"builder Dockerfile {dockerfile} not found: fix builder.dockerfile in the recipe")
    digest = hashlib.sha256()
    for name, path in _context_files(dockerfile):
        digest.update(f"file {name} {path.stat().st_mode & 0o111:o}\n".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    for key in sorted(build_args):
        digest.update(f"arg {key}={build_args[key]}\n".encode())
    return digest.hexdigest()


def _context_tar(dockerfile: Path) -> io.BytesIO:
    """The build context: only the Dockerfile and what it copies, never its whole directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, path in _context_files(dockerfile):
            info = tar.gettarinfo(str(path), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    buf.seek(0)
    return buf


def ensure_builder_image(dockerfile: Path, build_args: Mapping[str, str], *, repo: str = "rk3576-build/builder",
                         log: Callable[[str], None] = _log.info) -> BuilderImage:
    """Reuse the image labelled with this configuration's hash, or build it (progress to `log`)."""
    dockerfile = Path(dockerfile)
    config_hash = builder_config_hash(dockerfile, build_args)
    tag = f"{repo}:{config_hash[:12]}"
    client = docker_client()
    existing = client.images.list(filters={"label": f"{HASH_LABEL}={config_hash}"})
    if existing:
        image = existing[0]
        if tag not in image.tags:
            image.tag(tag)
        log(f"builder image {tag} is up to date")
        return BuilderImage(tag=tag, id=str(image.id), config_hash=config_hash)

    log(f"building builder image {tag} from {dockerfile}")
    output: list[str] = []
    image_id = None
    try:
        stream = client.api.build(
            fileobj=_context_tar(dockerfile), custom_context=True, dockerfile=dockerfile.name,
            tag=tag, buildargs=dict(build_args), labels={HASH_LABEL: config_hash},
            rm=True, forcerm=True, pull=False, decode=True,
        )
        for chunk in stream:
            if "stream" in chunk:
                for line in chunk["stream"].splitlines():
                    if line.strip():
                        output.append(line)
                        log(line)
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
            if "error" in chunk:
                output.append(chunk["error"].strip())
                raise UserError(_build_failure(tag, output))
    except docker.errors.APIError as exc:
        output.append(str(exc.explanation or exc))
        raise UserError(_build_failure(tag, output)) from exc
    image = client.images.get(image_id or tag)
    return BuilderImage(tag=tag, id=str(image.id), config_hash=config_hash)


def _build_failure(tag: str, output: list[str]) -> str:
    tail = "\n".join(f"  {line}" for line in output[-TAIL_LINES:])
    return (f"building builder image {tag} failed:\n{tail}\n"
            "Fix the Dockerfile or its build args (a missing base image is made by scripts/setup-host.sh).")


# --- one step ------------------------------------------------------------------------

def _demux(buf: bytearray) -> list[bytes]:
    """Pop complete frames (8-byte header: stream, 0, 0, 0, big-endian size) off `buf`."""
    frames = []
    while len(buf) >= 8:
        size = int.from_bytes(buf[4:8], "big")
        if len(buf) < 8 + size:
            break
        frames.append(bytes(buf[8:8 + size]))
        del buf[:8 + size]
    return frames


class _Echo:
    """Prints complete output lines prefixed with the step name and elapsed time."""

    def __init__(self, name: str, start: float, echo: Callable[[str], None] | None):
        self.name, self.start, self.echo, self.partial = name, start, echo, ""

    def feed(self, text: str, final: bool = False) -> None:
        if self.echo is None:
            return
        *lines, self.partial = (self.partial + text).split("\n")
        if final and self.partial:
            lines.append(self.partial)
            self.partial = ""
        for line in lines:
            self.echo(f"[{self.name} {time.monotonic() - self.start:7.1f}s] {line.rstrip(chr(13))}")


def _binds(mounts: Sequence[Mount], ccache_volume: str | None) -> dict:
    binds = {}
    for mount in mounts:
        if mount.source is None or not str(mount.source) or not Path(mount.source).exists():
            raise UserError(f"mount source {str(mount.source)!r} (for {mount.target}) does not exist: "
                            "fix builder.mounts in the recipe")
        source = Path(mount.source)
        binds[str(source.resolve())] = {"bind": mount.target, "mode": "ro" if mount.read_only else "rw"}
    if ccache_volume:
        binds[ccache_volume] = {"bind": CCACHE_TARGET, "mode": "rw"}
    return binds


def _step_env(env: Mapping[str, str], uid: int, gid: int, ccache: bool,
              warn: Callable[[str], None]) -> dict[str, str]:
    result = {}
    for key, value in env.items():
        if refused_env_name(key):
            # build.sh stops at "Press enter to continue." when it finds RK_* set.
            warn(f"warning: not passing {key} into the build container (build.sh pauses on RK_* variables)")
            continue
        result[key] = str(value)
    result["BUILDER_UID"], result["BUILDER_GID"] = str(uid), str(gid)
    if ccache:
        result["CCACHE_DIR"] = CCACHE_TARGET
    return result


# Set by `owned_by` while a command holds a work directory's lock: its containers carry it.
_owner: str | None = None


def _labels(step: str) -> dict[str, str]:
    return {STEP_LABEL: step, **({WORKDIR_LABEL: _owner} if _owner else {})}


@contextmanager
def owned_by(workdir: Path, log: Callable[[str], None] = _log.warning) -> Iterator[None]:
    """While the caller holds `workdir`'s lock: remove containers a dead run of it left, label new ones.

    Holding the lock means no live run of this work directory exists, so any container
    labelled with it (e.g. from a SIGKILLed run) is stale. No engine: nothing to do.
    """
    global _owner
    workdir_label = str(Path(workdir).resolve())
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException:
        client = None
    if client is not None:
        try:
            removed = remove_stale_containers(client, workdir=workdir_label)
        finally:
            client.close()
        if removed:
            log(f"removed {len(removed)} container(s) left running by an earlier, killed run in "
                f"{workdir_label}: {', '.join(removed)}")
    previous, _owner = _owner, workdir_label
    try:
        yield
    finally:
        _owner = previous


# What a step gets when the engine cannot grant --privileged (a dockerd that lacks
# some capability itself, e.g. inside another container): enough for mounts and
# loop devices, which is what Rockchip's rootfs steps use privileges for.
REDUCED_PRIVILEGES = {
    "cap_add": ["SYS_ADMIN", "MKNOD", "SYS_RAWIO", "SYS_PTRACE", "NET_ADMIN"],
    "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
    "device_cgroup_rules": ["b 7:* rmw", "c 10:237 rmw"],
}

# Engines (by base URL) that refused --privileged once: not asked again in this process.
_PRIVILEGED_REFUSED: set[str] = set()


def run_step(image: str, command: Sequence[str], *, name: str, workdir: str, mounts: Sequence[Mount],
             env: Mapping[str, str], log_path: Path, privileged: bool = False,
             uid: int | None = None, gid: int | None = None, ccache_volume: str | None = "rk3576-build-ccache",
             responder: Callable[[str], str | None] | None = None,
             echo: Callable[[str], None] | None = _log.info) -> float:
    """Run `command` in a fresh container; stream its output; return elapsed seconds."""
    uid = os.getuid() if uid is None else uid
    gid = os.getgid() if gid is None else gid

    def warn(line: str) -> None:
        if echo is not None:
            echo(f"[{name}] {line}")

    api = docker_client().api
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    binds = _binds(mounts, ccache_volume)
    # A prompt such as bash's `read -p` only shows on a terminal, so a step that
    # must be answered gets one (its output is then not multiplexed).
    tty = responder is not None
    create: dict[str, Any] = dict(image=image, command=list(command), working_dir=workdir, labels=_labels(name),
                  environment=_step_env(env, uid, gid, bool(ccache_volume), warn),
                  stdin_open=tty, tty=tty)
    modes: list[dict[str, Any]] = [{"privileged": True}, REDUCED_PRIVILEGES] if privileged else [{}]
    if privileged and api.base_url in _PRIVILEGED_REFUSED:
        modes = modes[1:]
        warn("warning: running with reduced privileges (this Docker engine refused --privileged)")

    cid = None
    # SIGTERM and SIGHUP unwind like Ctrl-C, so the `finally` below removes the container.
    with signals.handled():
        try:
            for attempt, mode in enumerate(modes):
                cid = None
                try:
                    cid = api.create_container(
                        **create, host_config=api.create_host_config(binds=binds, auto_remove=True, **mode))["Id"]
                    status: dict = {}
                    sock = api.attach_socket(cid, params={"stdout": 1, "stderr": 1, "stream": 1, "stdin": int(tty)})
                    raw = getattr(sock, "_sock", sock)
                    # Wait for removal on a second connection, set up before start, so
                    # the exit status is not lost when the auto-removed container goes.
                    waiter = threading.Thread(target=_wait_removed, args=(cid, status), daemon=True)
                    waiter.start()
                    start = time.monotonic()
                    api.start(cid)
                    break
                except docker.errors.ImageNotFound as exc:
                    raise UserError(f"builder image {image} not found: build it first (the builder task does)") from exc
                except docker.errors.APIError as exc:
                    if cid:
                        _force_remove(api, cid)
                        cid = None
                    if attempt + 1 < len(modes) and "caps" in str(exc.explanation or exc):
                        _PRIVILEGED_REFUSED.add(api.base_url)
                        warn(f"warning: the Docker engine cannot grant --privileged ({exc.explanation}); "
                             "running with SYS_ADMIN, mknod and loop-device access instead")
                        continue
                    raise UserError(f"build step {name}: Docker could not start the container: "
                                    f"{exc.explanation or exc}") from exc
            _pump(raw, log_path, _Echo(name, start, echo), responder, tty=tty)
            waiter.join()
        finally:
            if cid:
                _force_remove(api, cid)
    elapsed = time.monotonic() - start
    if "error" in status:
        raise UserError(f"build step {name}: lost track of its container: {status['error']}")
    code = status.get("code", 0)
    if code != 0:
        raise StepFailed(_failure_message(name, code, elapsed, log_path), exit_code=code, log_path=log_path,
                         elapsed=elapsed)
    return elapsed


# Terminal escapes (core.text's), as bytes: the log is cleaned before it is decoded.
_ESCAPE_RE = re.compile(ANSI_RE.pattern.encode())
_MAX_ESCAPE = 256  # an unfinished escape longer than this is not held back any more


class LogCleaner:
    """Turns a terminal byte stream into plain log text: no escapes, LF line ends (chunk boundaries safe)."""

    def __init__(self):
        self.held = b""

    def feed(self, data: bytes, final: bool = False) -> bytes:
        data = self.held + data
        self.held = b""
        if not final:
            start = data.rfind(b"\x1b")
            if start >= 0 and len(data) - start < _MAX_ESCAPE and not _ESCAPE_RE.match(data, start):
                data, self.held = data[:start], data[start:]
            if data.endswith(b"\r"):
                data, self.held = data[:-1], b"\r" + self.held
        data = _ESCAPE_RE.sub(b"", data)
        return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def _pump(raw, log_path: Path, echo: _Echo, responder: Callable[[str], str | None] | None, tty: bool) -> None:
    """Copy the container's output to the log (cleaned) and `echo`, answering prompts via `responder`."""
    buf = bytearray()
    seen = bytearray()
    cleaner = LogCleaner()
    with log_path.open("wb") as log:
        def write(text: bytes) -> None:
            log.write(text)
            log.flush()
            echo.feed(text.decode("utf-8", "replace"))

        while True:
            data = raw.recv(65536)
            if not data:
                break
            if tty:
                chunk = data
            else:
                buf += data
                chunk = b"".join(_demux(buf))
            if not chunk:
                continue
            write(cleaner.feed(chunk))
            if responder is not None:
                seen += chunk  # the raw text: a prompt without a newline, colours and all
                reply = responder(seen.decode("utf-8", "replace"))
                if reply is not None:
                    raw.sendall(reply.encode())
        write(cleaner.feed(b"", final=True))
    echo.feed("", final=True)


def _wait_removed(cid: str, status: dict) -> None:
    try:
        client = docker.from_env()
        try:
            status["code"] = client.api.wait(cid, condition="removed")["StatusCode"]
        finally:
            client.close()
    except Exception as exc:  # reported by run_step; a thread cannot raise into it
        status["error"] = str(exc)


def _force_remove(api, cid: str) -> None:
    """Kill and remove; a container already gone (auto-removed) is fine."""
    for action in (lambda: api.kill(cid), lambda: api.remove_container(cid, force=True)):
        try:
            action()
        except docker.errors.APIError:
            pass
    # An auto-removal may still be under way; wait briefly so no container outlives the call.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            api.inspect_container(cid)
        except docker.errors.NotFound:
            return
        time.sleep(0.1)


def _failure_message(name: str, code: int, elapsed: float, log_path: Path) -> str:
    lines = log_path.read_bytes().decode("utf-8", "replace").splitlines()[-TAIL_LINES:]
    tail = "\n".join(f"  {line}" for line in lines)
    return (f"build step {name} failed with exit code {code} after {elapsed:.1f}s; last lines:\n{tail}\n"
            f"Full log: {log_path}")


def remove_stale_containers(client=None, *, workdir: str) -> list[str]:
    """Remove the step containers labelled with `workdir` (a killed run's); return their step names."""
    client = client or docker_client()
    removed = []
    for container in client.containers.list(all=True, filters={"label": f"{WORKDIR_LABEL}={workdir}"}):
        try:
            container.remove(force=True)
            removed.append(container.labels.get(STEP_LABEL, container.short_id))
        except docker.errors.NotFound:
            pass
    return removed


# --- an interactive container (`rk3576-build shell`) ----------------------------------

CCACHE_VOLUME = "rk3576-build-ccache"  # the volume run_step mounts by default


def run_interactive(image: str, command: Sequence[str], *, workdir: str, mounts: Sequence[Mount],
                    env: Mapping[str, str], privileged: bool = False,
                    ccache_volume: str | None = CCACHE_VOLUME, warn: Callable[[str], None] | None = None) -> int:
    """Run `command` in a fresh container attached to this terminal, set up like a build step; its exit status.

    Uses the docker CLI, which handles the terminal (raw mode, resizes, Ctrl-C) the
    way an interactive user expects; the mounts, uid/gid, environment and compiler
    cache are the ones run_step gives a step.
    """
    warn = warn or _log.warning
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        raise UserError("the docker command is not installed: install the docker CLI (scripts/setup-host.sh does)")
    docker_client()  # a clear message when the engine is down
    argv = [docker_cli, "run", "--rm", "-i", "-w", workdir]
    for key, value in _labels("shell").items():
        argv += ["--label", f"{key}={value}"]
    if sys.stdin.isatty() and sys.stdout.isatty():
        argv.append("-t")
    for source, bind in _binds(mounts, ccache_volume).items():
        argv += ["-v", f"{source}:{bind['bind']}:{bind['mode']}"]
    for key, value in _step_env(env, os.getuid(), os.getgid(), bool(ccache_volume), warn).items():
        argv += ["-e", f"{key}={value}"]
    if privileged:
        argv.append("--privileged")
    return subprocess.run([*argv, image, *command]).returncode
