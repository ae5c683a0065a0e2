"""The driver matrix: build each driver variant, flash and verify each image on each board, one report.

Each variant builds in its own work directory (`<root>/variants/<name>`) in a child process
(doit and the container edge keep per-process state), all sharing the download cache and one
build cache (the recipe's store, else `<root>/build-cache`): the first variant builds alone and
fills it, then the others (`jobs` at once, default one) rebuild only the steps their driver
touches. Each board has a worker thread that flashes and verifies the images as they are
built, one at a time, so a board verifies one image while the next one builds. (On 2 cores,
two builds side by side took as long as one after the other, and left the boards two images
to verify at the end: docs/performance.md.) A variant that fails to build, flash or verify never stops the others.
Ctrl-C (or SIGTERM) stops everything: each build gets one SIGINT (its step's container is
removed), each worker is stopped in place so its own cleanup runs (QEMU stopped, labgrid place
released), and the report of what finished is still written (board/matrix_report.py).

The recipe's `matrix:` section (validated here, `parse_matrix`):

    matrix:
      expected: "RKNPU driver: v0.9.8"   # what every variant must report (default: verify.expected)
      rkllm: true                        # run the RKLLM check where verify.rkllm configures it
      variants:                          # driver tarballs: version, url, sha256 (name, filename)
        - {version: 0.9.7, url: https://…/rknpu_driver_0.9.7_20240424.tar.bz2, sha256: <64 hex>}
      boards:                            # one of console / place / virtual each
        - {name: bench, console: /dev/ttyUSB0, flash: upgrade_tool}
        - {name: farm-2, place: myd-lr3576-2, power_cycle: true, flash: none}
        - {name: qemu, virtual: true}
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import pickle
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rk3576_build.board import flash as flashing
from rk3576_build.board import matrix_report, verify
from rk3576_build.board.labgrid_place import through_place
from rk3576_build.board.providers import provider
from rk3576_build.config.model import FLASH_METHODS as RECIPE_FLASH_METHODS
from rk3576_build.config.model import Recipe
from rk3576_build.core import logs, signals
from rk3576_build.core.errors import UserError
from rk3576_build.core.files import write_json
from rk3576_build.core.text import redact_url
from rk3576_build.pipeline.lock import lock_workdir
from rk3576_build.pipeline.runner import Failures, run_doit
from rk3576_build.pipeline.stages import Layout
from rk3576_build.pipeline.tasks import RecipeTasks

log = logs.get(__name__)

REPORT_DIR = "matrix"
FLASH_METHODS = (*RECIPE_FLASH_METHODS, "none")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_VERSION = re.compile(r"\d+\.\d+\.\d+")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_BOARD_KEYS = {"name", "console", "place", "virtual", "baud", "user", "password_env", "login_timeout",
               "flash", "tool", "power_cycle", "coordinator"}
STOP_TIMEOUT = 30.0  # seconds for the builds and the board workers to clean up after Ctrl-C
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

# Flashing over USB (upgrade_tool, rkdeveloptool) talks to the one rockusb board on this host:
# two boards are never flashed at once.
_USB_FLASH = threading.Lock()


@dataclass(frozen=True)
class Variant:
    """One driver tarball to build and verify."""

    name: str
    version: str
    url: str
    sha256: str
    filename: str | None = None


@dataclass(frozen=True)
class Board:
    """One board: a serial console, a labgrid place, or the virtual (QEMU) board."""

    name: str
    console: str | None = None
    place: str | None = None
    virtual: bool = False
    baud: int | None = None
    user: str | None = None
    password_env: str | None = None
    login_timeout: float | None = None
    flash: str | None = None  # a flash method, "none" (flashed elsewhere); None: the recipe's
    tool: str | None = None
    power_cycle: bool = False
    coordinator: str | None = None

    @property
    def kind(self) -> str:
        return "virtual" if self.virtual else "place" if self.place else "console"

    @property
    def where(self) -> str:
        return "QEMU" if self.virtual else self.place or redact_url(self.console or "")


@dataclass(frozen=True)
class MatrixSpec:
    variants: tuple[Variant, ...]
    boards: tuple[Board, ...]
    expected: str | None = None  # None: the recipe's verify.expected
    rkllm: bool = True


@dataclass
class MatrixRun:
    """What `run_matrix` returns: the result it reported, the cells, the report files, the exit code."""

    result: dict
    cells: list[dict]
    paths: dict[str, Path]
    exit_code: int


# --------------------------------------------------------------------------- the spec

def parse_matrix(data, where: str = "matrix") -> MatrixSpec:
    """Validate a `matrix:` section (a plain mapping); UserError listing every problem."""
    errors: list[str] = []
    if not isinstance(data, Mapping):
        raise UserError(f"{where}: expected a mapping with variants and boards, got {type(data).__name__}")
    for key in sorted(set(data) - {"expected", "rkllm", "variants", "boards"}):
        errors.append(f"{where}.{key}: unknown key; known: boards, expected, rkllm, variants")
    expected = data.get("expected")
    if expected is not None and (not isinstance(expected, str) or not expected.strip()):
        errors.append(f"{where}.expected: expected the version line the board must print, e.g. "
                      "'RKNPU driver: v0.9.8'")
    rkllm = data.get("rkllm", True)
    if not isinstance(rkllm, bool):
        errors.append(f"{where}.rkllm: expected true or false")
    variants = _items(data.get("variants"), f"{where}.variants", errors)
    boards = _items(data.get("boards"), f"{where}.boards", errors)
    parsed_variants = [v for i, item in enumerate(variants) if (v := _variant(item, f"{where}.variants[{i}]", errors))]
    parsed_boards = [b for i, item in enumerate(boards) if (b := _board(item, f"{where}.boards[{i}]", errors))]
    _unique([v.name for v in parsed_variants], f"{where}.variants", errors)
    _unique([b.name for b in parsed_boards], f"{where}.boards", errors)
    if errors:
        raise UserError("the driver matrix is not valid:\n  " + "\n  ".join(errors))
    return MatrixSpec(tuple(parsed_variants), tuple(parsed_boards), expected, rkllm)


def _items(value, where: str, errors: list[str]) -> list:
    if not isinstance(value, list) or not value:
        errors.append(f"{where}: expected a non-empty list")
        return []
    return value


def _unique(names: Sequence[str], where: str, errors: list[str]) -> None:
    seen = set()
    for name in names:
        if name in seen:
            errors.append(f"{where}: two entries are named {name!r}; give each a distinct name")
        seen.add(name)


def _variant(item, where: str, errors: list[str]) -> Variant | None:
    if not isinstance(item, Mapping):
        errors.append(f"{where}: expected a mapping with version, url and sha256")
        return None
    start = len(errors)
    for key in sorted(set(item) - {"name", "version", "url", "sha256", "filename"}):
        errors.append(f"{where}.{key}: unknown key; known: filename, name, sha256, url, version")
    version, url, sha256 = (str(item.get(k) or "").strip() for k in ("version", "url", "sha256"))
    if not _VERSION.fullmatch(version):
        errors.append(f"{where}.version: expected MAJOR.MINOR.PATCH (as in rknpu_drv.h), got {version!r}")
    if not url:
        errors.append(f"{where}.url: the driver tarball's URL or path is missing")
    if not _SHA256.fullmatch(sha256):
        errors.append(f"{where}.sha256: expected the tarball's 64 hex digit sha256 (sha256sum FILE)")
    name = str(item.get("name") or version)
    if not _NAME.fullmatch(name):
        errors.append(f"{where}.name: {name!r} must be letters, digits, '.', '_', '+' or '-' (it names a "
                      "work directory)")
    filename = item.get("filename")
    return Variant(name, version, url, sha256.lower(), str(filename) if filename else None) \
        if len(errors) == start else None


def _board(item, where: str, errors: list[str]) -> Board | None:
    if isinstance(item, str):
        item = board_from_text(item, where, errors)
        if item is None:
            return None
    if not isinstance(item, Mapping):
        errors.append(f"{where}: expected a mapping with one of console, place or virtual: true")
        return None
    start = len(errors)
    for key in sorted(set(item) - _BOARD_KEYS):
        errors.append(f"{where}.{key}: unknown key; known: {', '.join(sorted(_BOARD_KEYS))}")
    kinds = [k for k in ("console", "place", "virtual") if item.get(k)]
    if len(kinds) != 1:
        errors.append(f"{where}: give exactly one of console (a serial port or URL), place (a labgrid "
                      f"place) or virtual: true; got {', '.join(kinds) or 'none'}")
        return None
    virtual = item.get("virtual") is True
    if kinds == ["virtual"] and not virtual:
        errors.append(f"{where}.virtual: expected true")
    method = item.get("flash")
    if method is not None and method not in FLASH_METHODS:
        errors.append(f"{where}.flash: expected one of {', '.join(FLASH_METHODS)}, got {method!r}")
    if virtual and method not in (None, "virtual"):
        errors.append(f"{where}.flash: the virtual board is flashed with the virtual method only")
    default_name = "virtual" if virtual else item.get("place") or Path(str(item.get("console"))).name
    name = str(item.get("name") or default_name)
    if not _NAME.fullmatch(name):
        errors.append(f"{where}.name: {name!r} must be letters, digits, '.', '_', '+' or '-' (it names a "
                      "directory); set name:")
    numbers: dict[str, float] = {}
    for key, kind in (("baud", int), ("login_timeout", float)):
        value = item.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            errors.append(f"{where}.{key}: expected a positive number")
        elif value is not None:
            numbers[key] = kind(value)
    if len(errors) != start:
        return None
    def text(key: str) -> str | None:
        return None if item.get(key) is None else str(item[key])

    return Board(name=name, console=text("console"), place=text("place"), virtual=virtual,
                 baud=int(numbers["baud"]) if "baud" in numbers else None, user=text("user"),
                 password_env=text("password_env"), login_timeout=numbers.get("login_timeout"),
                 flash="virtual" if virtual else method, tool=text("tool"),
                 power_cycle=bool(item.get("power_cycle")), coordinator=text("coordinator"))


def board_from_text(text: str, where: str = "--board", errors: list[str] | None = None):
    """A board from the command line: `virtual`, `console:URL` or `place:NAME`, optionally `NAME=` first
    (`bench=console:/dev/ttyUSB0`). Returns the mapping parse_matrix takes."""
    name, eq, rest = text.partition("=")
    if not eq or ":" in name:
        name, rest = "", text
    kind, _, value = rest.partition(":")
    entry: dict = {"name": name} if name else {}
    if kind == "virtual" and not value:
        entry["virtual"] = True
    elif kind in ("console", "place") and value:
        entry[kind] = value
    else:
        problem = (f"{where}: {text!r}: give virtual, console:PORT_OR_URL or place:NAME "
                   "(optionally NAME= first)")
        if errors is None:
            raise UserError(problem)
        errors.append(problem)
        return None
    return entry


# --------------------------------------------------------------------------- running it

def variant_recipe(recipe: Recipe, variant: Variant, root: Path, expected: str) -> Recipe:
    """The recipe for one variant: its driver, its own work directory, the shared build cache."""
    cache = recipe.cache
    if cache.enabled and not cache.store:
        cache = dataclasses.replace(cache, store=str(root / "build-cache"))
    return dataclasses.replace(
        recipe, workdir=root / "variants" / variant.name, cache=cache,
        driver=dataclasses.replace(recipe.driver, version=variant.version, url=variant.url, sha256=variant.sha256,
                                   filename=variant.filename),
        verify=dataclasses.replace(recipe.verify, expected=expected))


def step_timings(recipe: Recipe, since: float) -> list[dict]:
    """Each step's part in this build: built or restored (with its time), or up to date (no time)."""
    layout = Layout(recipe)
    steps = []
    for step in recipe.steps:
        path = layout.state / f"step-{step.name}.timing.json"
        try:
            timing = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # the step did not run (the build stopped before it)
        fresh = float(timing.get("started") or 0) >= since
        result = ((timing.get("cache") or {}).get("result") or "built") if fresh else "up to date"
        steps.append({"name": step.name, "result": result, "exit_status": timing.get("exit_status"),
                      "duration_s": round(float(timing.get("duration") or 0), 3) if fresh else 0.0,
                      "log": timing.get("log")})
    return steps


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def build_variant(recipe: Recipe, *, offline: bool = False, target: str = "manifest",
                  echo: Callable[[str], None] = log.info) -> dict:
    """Build one variant's recipe up to `target` in its work directory; the build's record for the report."""
    tasks = RecipeTasks(recipe, offline=offline or recipe.offline, echo=echo)
    failures = Failures()
    since, clock = time.time(), time.monotonic()
    reason = None
    try:
        with lock_workdir(tasks.layout.lock):
            code = run_doit(tasks, "run", [target], failures=failures)
    except UserError as exc:
        code, reason = exc.exit_code, str(exc)
    if code and reason is None:
        messages = [str(e) for e in failures.errors if e is not None]
        reason = failures.disk_full or (messages[0] if messages else f"a task failed (exit {code})")
    build: dict[str, Any] = {"status": "ok" if code == 0 else "failed", "exit_code": code, "reason": reason,
                             "duration_s": round(time.monotonic() - clock, 3), "steps": step_timings(recipe, since)}
    if code == 0:
        build["manifest"] = str(tasks.layout.manifest)
        build["image"] = str(tasks.layout.update_img())
    return build


class _BuildProcess:
    """One variant's build in a child process (`python -m rk3576_build.pipeline.matrix JOB`), output in
    `<workdir>/logs/matrix-build.log`. Its own session: only this process signals it (one SIGINT)."""

    def __init__(self, matrix: Matrix, variant: Variant):
        self.variant = variant
        recipe = matrix.recipes[variant.name]
        jobs = matrix.root / ".jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        self.job, self.result = jobs / f"{variant.name}.pickle", jobs / f"{variant.name}.json"
        self.result.unlink(missing_ok=True)
        self.job.write_bytes(pickle.dumps({"recipe": recipe, "offline": matrix.offline, "target": matrix.target,
                                      "result": str(self.result)}))
        self.log, self.lock = Layout(recipe).logs / "matrix-build.log", Layout(recipe).lock
        self.log.parent.mkdir(parents=True, exist_ok=True)
        matrix.echo(f"matrix: building driver {variant.name} in {recipe.workdir} (log: {self.log})")
        self._started = time.monotonic()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", __name__, str(self.job)], stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_stop_with_parent)

    def poll(self) -> int | None:
        return self.proc.poll()

    def elapsed(self) -> float:
        return round(time.monotonic() - self._started, 3)

    def interrupt(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def sweep(self) -> None:
        """Once the build process is gone: take its work directory's lock, which removes any container
        of it still there (one a signal caught between creating and starting it, or a killed build's)."""
        try:
            with lock_workdir(self.lock):
                pass
        except UserError as exc:
            log.warning("matrix: %s", exc)

    def wait_or_kill(self, deadline: float) -> None:
        try:
            self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("matrix: the build of %s did not stop in time; killing it", self.variant.name)
            self.proc.kill()
            self.proc.wait()


def _stop_with_parent() -> None:
    """In the child before exec: SIGTERM when the matrix process dies (it then unwinds like Ctrl-C)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _child(job: Path) -> int:
    """A build process: the pickled variant recipe (written by the matrix into its own root), built."""
    signals.install()
    logs.setup(0)
    data = pickle.loads(job.read_bytes())
    try:
        build = build_variant(data["recipe"], offline=data["offline"], target=data["target"],
                              echo=logs.get("rk3576_build.build").info)
    except KeyboardInterrupt as exc:
        log.error("build %s; the interrupted step is not recorded as done", signals.describe(exc))
        return signals.exit_code(exc)
    write_json(Path(data["result"]), build)
    return 0


class _WorkerStopped(KeyboardInterrupt):
    """Raised inside a board worker when the matrix is stopped, so its cleanup (finally) runs."""


class Matrix:
    """One matrix run over a recipe; `run()` returns the MatrixRun."""

    def __init__(self, recipe: Recipe, spec: MatrixSpec, root: Path, *, offline: bool = False,
                 history: Path | None = None, target: str = "manifest",
                 echo: Callable[[str], None] = log.info, jobs: int | None = None):
        for board in spec.boards:
            if not board.virtual and (board.flash or recipe.flash.method) == "virtual":
                raise UserError(f"board {board.name}: flash method 'virtual' is for the virtual board; set the "
                                "board's flash to upgrade_tool, rkdeveloptool or none")
        self.jobs = max(1, jobs or 1)  # builds at once after the first
        self.recipe = recipe
        self.spec = spec
        self.root = Path(root).absolute()
        self.offline = offline
        self.history = history
        self.target = target
        self.echo = echo
        self.expected = spec.expected or recipe.verify.expected
        self.recipes = {v.name: variant_recipe(recipe, v, self.root, self.expected) for v in spec.variants}
        self.builds: dict[str, dict] = {}
        self.runs: list[dict] = []
        self._lock = threading.Lock()
        self._passwords: dict[str, str | None] = {}
        self._stopping = threading.Event()

    # -- the whole run ---------------------------------------------------------------------
    def run(self) -> MatrixRun:
        earlier = matrix_report.read_history(self.history) if self.history else []
        for board in self.spec.boards:  # asked here, in the main thread (a prompt on a terminal)
            settings = self._settings(board)
            self._passwords[board.name] = verify.get_password(settings)
        with lock_workdir(self.root / ".lock"):  # one matrix run per root (its boards' images live there)
            return self._run(earlier)

    def _run(self, earlier: list[dict]) -> MatrixRun:
        started, clock = _now(), time.monotonic()
        workers = [_BoardWorker(self, board) for board in self.spec.boards]
        for worker in workers:
            worker.start()
        builds: dict[str, _BuildProcess] = {}
        interrupted = None
        try:
            waiting = list(self.spec.variants)
            while waiting or builds:
                # The first variant builds alone and fills the build cache; then up to `jobs` at once.
                limit = 1 if len(self.builds) == 0 else self.jobs
                while waiting and len(builds) < limit:
                    variant = waiting.pop(0)
                    builds[variant.name] = _BuildProcess(self, variant)
                for name, process in list(builds.items()):
                    if process.poll() is None:
                        continue
                    del builds[name]
                    if self._finished(process)["status"] == "ok":
                        for worker in workers:
                            worker.jobs.put(process.variant)
                time.sleep(0.1)
            for worker in workers:
                worker.jobs.put(None)
            for worker in workers:
                while worker.is_alive():
                    worker.join(0.2)
        except BaseException as exc:
            # Whatever ended the run: no build, no board is left running or held.
            self._stop(workers, list(builds.values()))
            if not isinstance(exc, KeyboardInterrupt):  # Ctrl-C, or SIGTERM/SIGHUP as Stopped
                raise
            interrupted = exc
        result = self._result(started, time.monotonic() - clock, interrupted is not None)
        paths = matrix_report.write_report(result, self.root / REPORT_DIR, history=earlier)
        cells = matrix_report.evaluate(result)
        if interrupted is not None:
            self.echo(f"matrix: interrupted; the report of what finished: {paths[matrix_report.HTML_NAME]}")
            raise interrupted
        if self.history:
            matrix_report.append_history(self.history, result)
        self.echo(self._summary(cells, paths))
        return MatrixRun(result, cells, paths, matrix_report.exit_code(cells))

    def _stop(self, workers: list[_BoardWorker], builds: list[_BuildProcess]) -> None:
        """Stop every build (SIGINT: its container is removed) and every worker where it is (its finally
        blocks run), and wait for them, bounded."""
        self._stopping.set()
        for build in builds:
            build.interrupt()
        for worker in workers:
            worker.jobs.put(None)
            worker.interrupt()
        deadline = time.monotonic() + STOP_TIMEOUT
        for build in builds:
            build.wait_or_kill(deadline)
            build.sweep()
        for worker in workers:
            while worker.is_alive() and time.monotonic() < deadline:
                try:
                    worker.join(0.2)
                except KeyboardInterrupt:
                    continue  # a second Ctrl-C: the workers are cleaning up, keep waiting (bounded)
            if worker.is_alive():
                log.warning("matrix: board %s did not stop within %.0f s", worker.board.name, STOP_TIMEOUT)

    def _result(self, started: str, duration: float, interrupted: bool) -> dict:
        with self._lock:
            runs = sorted(self.runs, key=lambda r: ([v.name for v in self.spec.variants].index(r["variant"]),
                                                    [b.name for b in self.spec.boards].index(r["board"])))
        return {
            "recipe": self.recipe.name, "expected": self.expected, "started": started, "finished": _now(),
            "duration_s": round(duration, 3), "interrupted": interrupted, "root": str(self.root),
            "variants": [{"name": v.name, "version": v.version, "url": redact_url(v.url), "sha256": v.sha256,
                          "workdir": str(self.recipes[v.name].workdir), "build": self.builds.get(v.name)}
                         for v in self.spec.variants],
            "boards": [{"name": b.name, "kind": b.kind, "where": b.where} for b in self.spec.boards],
            "runs": runs,
        }

    def _summary(self, cells: list[dict], paths: dict[str, Path]) -> str:
        passed = sum(c["verdict"] == "passed" for c in cells)
        lines = [f"matrix: {matrix_report.overall(cells).upper()}, {passed} of {len(cells)} passed"]
        lines += [f"  {c['variant']:<10} {c['board']:<12} {c['verdict'].upper():<12} {c['reason'] or ''}".rstrip()
                  for c in cells]
        lines.append(f"  report    {paths[matrix_report.HTML_NAME]} (and {matrix_report.JSON_NAME}, "
                     f"{matrix_report.JUNIT_NAME}, {matrix_report.SUMMARY_NAME} beside it)")
        return "\n".join(lines)

    # -- one variant's build (a child process: doit and the container edge keep per-process state) --
    def _finished(self, process: _BuildProcess) -> dict:
        """Record a build process's result (or why it left none) and say so."""
        variant, code = process.variant, process.poll()
        try:
            build = json.loads(process.result.read_text())
        except (OSError, ValueError):
            build = {"status": "failed", "exit_code": code, "steps": [], "duration_s": process.elapsed(),
                     "reason": f"the build process exited {code} without a result; see {process.log}"}
        process.job.unlink(missing_ok=True)
        process.result.unlink(missing_ok=True)
        build["log"] = str(process.log)
        if build["status"] != "ok":
            build["reason"] = f"{build['reason']} (log: {process.log})"
        counts = {k: sum(s["result"] == k for s in build["steps"]) for k in ("built", "restored")}
        self.echo(f"matrix: driver {variant.name} " + (
            f"built in {build['duration_s']:.1f} s ({counts['built']} step(s) built, {counts['restored']} "
            "restored from the build cache)" if build["status"] == "ok" else f"failed to build: {build['reason']}"))
        self.builds[variant.name] = build
        return build

    # -- one image on one board (a worker thread) -------------------------------------------------
    def _settings(self, board: Board) -> verify.VerifySettings:
        section = self.recipe.section("verify")
        rkllm = section.get("rkllm") or {}
        settings = verify.VerifySettings(**{**section, "expected": self.expected,
                                            "rkllm": rkllm if self.spec.rkllm and rkllm.get("model") else None})
        settings.console = board.console or ("" if board.virtual else settings.console)
        settings.place = board.place
        for key in ("baud", "user", "password_env", "login_timeout"):
            if getattr(board, key) is not None:
                setattr(settings, key, getattr(board, key))
        return settings

    def verify_on(self, variant: Variant, board: Board) -> None:
        """Flash `variant`'s image on `board` and verify it; record the run whatever happens."""
        layout = Layout(self.recipes[variant.name])
        out_dir = layout.root / "verify" / board.name
        run: dict[str, Any] = {"variant": variant.name, "board": board.name, "report_dir": str(out_dir), "report": None,
               "error": None, "flash_s": None, "duration_s": None, "started_at": round(time.time(), 3)}
        clock = time.monotonic()
        self.echo(f"matrix: driver {variant.name} on {board.name}: flashing and verifying")
        try:
            run["flash_s"] = self._flash(board, layout)
            run["report"] = self._verify(board, out_dir)
        except UserError as exc:
            run["error"] = str(exc)
            run["report"] = getattr(exc, "report", None)  # a console error still wrote its report
        except Exception as exc:  # a bug on one board must not stop the other boards and variants
            log.exception("matrix: driver %s on %s: unexpected error", variant.name, board.name)
            run["error"] = f"unexpected error: {exc!r}"
        run["duration_s"] = round(time.monotonic() - clock, 3)
        run["finished_at"] = round(time.time(), 3)
        with self._lock:
            self.runs.append(run)
        status = (run["report"] or {}).get("status") or "error"
        self.echo(f"matrix: driver {variant.name} on {board.name}: {status}"
                  + (f" ({run['error']})" if run["error"] else ""))

    def _flash(self, board: Board, layout: Layout) -> float | None:
        method = board.flash or self.recipe.flash.method
        if method == "none":
            return None
        clock = time.monotonic()
        if method == "virtual":
            flashing.flash_virtual(layout.update_img(), self._board_dir(board))
        else:
            with _USB_FLASH:
                flashing.flash(method, update_img=layout.update_img(), image_dir=layout.sdk / "rockdev",
                               board_dir=None, tool=board.tool or self.recipe.flash.tool,
                               echo=lambda line: self.echo(f"[{board.name}] {line}"))
        return round(time.monotonic() - clock, 3)

    def _board_dir(self, board: Board) -> Path:
        return self.root / "boards" / board.name

    def _verify(self, board: Board, out_dir: Path) -> dict:
        settings = self._settings(board)
        password = self._passwords.get(board.name)
        chip = self.recipe.lunch.chip
        boots = provider(board.flash or self.recipe.flash.method)
        if boots.boot is not None:  # the virtual board: brought up from what was flashed to its directory
            with boots.boot(self._board_dir(board), out_dir / boots.log_name) as url:
                settings.console = url
                return verify.verify_board(settings, out_dir, password=password, chip=chip)
        with through_place(settings, coordinator=board.coordinator, power_cycle=board.power_cycle,
                           echo=lambda line: self.echo(f"[{board.name}] {line}")) as held:
            return verify.verify_board(held, out_dir, password=password, chip=chip)


class _BoardWorker(threading.Thread):
    """Verifies the images queued for one board, one at a time, in order."""

    def __init__(self, matrix: Matrix, board: Board):
        super().__init__(name=f"matrix-board-{board.name}", daemon=True)
        self.matrix = matrix
        self.board = board
        self.jobs: queue.Queue = queue.Queue()

    def run(self) -> None:
        try:
            while not self.matrix._stopping.is_set():
                try:
                    variant = self.jobs.get(timeout=0.2)
                except queue.Empty:
                    continue
                if variant is None:
                    return
                self.matrix.verify_on(variant, self.board)
        except _WorkerStopped:
            return  # the matrix was stopped; the cleanup on the way out has run

    def interrupt(self) -> None:
        """Raise _WorkerStopped in this thread at its next Python instruction (consoles poll every 50 ms)."""
        if self.is_alive() and self.ident is not None:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.ident), ctypes.py_object(_WorkerStopped))


def run_matrix(recipe: Recipe, spec: MatrixSpec, root: Path, *, offline: bool = False, history: Path | None = None,
               target: str = "manifest", echo: Callable[[str], None] = log.info,
               jobs: int | None = None) -> MatrixRun:
    """Build every variant, verify each image on every board, write `<root>/matrix/`; see the module doc.
    `jobs`: variants built at once once the first has filled the build cache (default 1)."""
    return Matrix(recipe, spec, root, offline=offline, history=history, target=target, echo=echo,
                  jobs=jobs).run()


if __name__ == "__main__":
    sys.exit(_child(Path(sys.argv[1])))
