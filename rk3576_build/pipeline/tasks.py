"""Turns a recipe into doit tasks: the only module that knows doit's task format.

The stages themselves live in stages.py (plain methods, no doit); this module
wraps them into task dicts (actions, file_dep, targets, uptodate) and holds what
only the tasks ask: whether a stage's result is still there (the uptodate
predicates) and what a step runs, as `plan`, `list` and `info` show it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed
from doit.tools import config_changed

from rk3576_build.build import rootfs_overlays
from rk3576_build.build.buildsh import invocation
from rk3576_build.config.model import StepSpec
from rk3576_build.core import logs
from rk3576_build.core.errors import UserError
from rk3576_build.core.text import redact_url
from rk3576_build.pipeline.stages import Stages
from rk3576_build.pipeline.stamps import GATES, read_stamp
from rk3576_build.sources.unpack import is_unpacked

log = logs.get(__name__)
# Every build step waits for these, in this order (task_dep: the order only, never a reason to rerun).
STEP_GATES = ["kernel:preflight", "builder:check"]


def _user_action(func: Callable, *args, **kwargs):
    """A doit python-action that turns a UserError into a clean task failure."""

    def action():
        try:
            func(*args, **kwargs)
        except UserError as exc:
            failed = TaskFailed(str(exc))
            failed.user_error = exc  # the CLI exits with its exit_code (doit alone only knows 1)
            return failed
        return None

    action.__name__ = getattr(func, "__name__", "action")
    return action


class RecipeTasks(Stages):
    """Builds the doit task dicts for one recipe; the actions are the stages of Stages."""

    _warned = False  # the acceptance warnings are shown once per command

    # -- up to date: is a stage's result still there? ------------------------------------

    def _fetched_file_present(self, name: str) -> bool:
        stamp = self.layout.stamp(f"fetch-{name}")
        if not stamp.exists():
            return False
        data = read_stamp(stamp)
        path = Path(data["path"])
        return path.exists() and path.stat().st_size == data["size"]

    def _unpacked_present(self, name: str) -> bool:
        return is_unpacked(self._source_dir(name))

    def _same_tree(self, stamp: str) -> bool:
        """Was `stamp` written on the SDK tree there is now? (Not when the tree was unpacked afresh
        while the unpack's own stamp stayed, e.g. a run that failed or was killed in between.)"""
        path = self.layout.stamp(stamp)
        return path.exists() and read_stamp(path).get("tree") == self._tree()

    def _products_present(self, step: StepSpec) -> bool:
        return all((self.layout.sdk / p.path).exists() for p in step.produces)

    def _overlays_applied(self) -> bool:
        """Up to date: the sources are as stamped, the SDK's copies match, and .config still lists them
        (a rerun or a restored lunch step rewrites .config without them)."""
        stamp, config = self.layout.stamp("rootfs-overlays"), self.layout.sdk / "output" / ".config"
        if not stamp.exists() or not config.is_file():
            return False
        recorded = {o["name"]: o["files"] for o in read_stamp(stamp)["overlays"]}
        try:
            if self._overlay_scan() != recorded:
                return False
        except UserError:
            return False  # the task says what is wrong
        configured = rootfs_overlays.configured_dirs(config)
        return all(d in configured and rootfs_overlays.matches(self.layout.sdk / d, recorded[o.name])
                   for o, d in zip(self.layout.overlays(), self._overlay_dirs(), strict=True))

    # -- what a step runs, as plan, list and info show it ---------------------------------

    def step_runs(self, step: StepSpec) -> str:
        """What a step runs: the probed build.sh command once known."""
        if not step.targets:
            return step.command or ""
        stamp = self.layout.stamp("probe")
        chosen = read_stamp(stamp)["targets"].get(step.name) if stamp.exists() else None
        if step.is_lunch:
            lunch = self.recipe.lunch
            if self.layout.sdk.is_dir():  # `auto` depends on the unpacked tree
                return invocation("lunch", None, sdk_dir=self.layout.sdk, lunch=lunch).command + \
                    f" (lunch.mode {lunch.mode})"
            return f"./build.sh lunch (lunch.mode {lunch.mode}, {lunch.defconfig})"
        if chosen:
            return f"./build.sh {chosen}" + (f" (of {'|'.join(step.targets)})" if len(step.targets) > 1 else "")
        return "./build.sh " + "|".join(step.targets) + (" (first one build.sh supports)"
                                                         if len(step.targets) > 1 else "")

    def _cache_meta(self, step: StepSpec) -> dict:
        """The step's cache key and its inputs, as `info` and `plan` show them."""
        try:
            key = self.step_key(step)
        except UserError as exc:  # e.g. a missing Dockerfile: the task that needs it says so
            return {"cache_key": None, "cache_inputs": f"unknown: {exc}"}
        if key is None:
            return {"cache_key": None, "cache_inputs": "known once the sources are fetched"}
        return {"cache_key": key.key, "cache_inputs": key.inputs}

    # -- the task dicts ----------------------------------------------------------------------

    def source_tasks(self) -> list[dict]:
        tasks = []
        for name in ("sdk", "driver"):
            spec = self._source_spec(name)
            tasks.append({
                "name": f"fetch:{name}",
                "doc": f"download the {name} tarball into the cache and verify its sha256",
                "actions": [_user_action(self.fetch, name)],
                "targets": [self.layout.stamp(f"fetch-{name}"), self.layout.stamp(f"fetch-{name}-content")],
                "uptodate": [
                    # Redacted: doit shows this dict in `info`; credentials are not part of the source.
                    config_changed({"url": redact_url(spec.url), "sha256": spec.sha256,
                                    "filename": spec.filename}),
                    (self._fetched_file_present, [name]),
                ],
            })
            tasks.append({
                "name": f"unpack:{name}",
                "doc": f"safely unpack the {name} tarball into the work directory",
                "actions": [_user_action(self.unpack, name)],
                "file_dep": [self.layout.stamp(f"fetch-{name}-content")],
                "targets": [self.layout.stamp(f"unpack-{name}")],
                "uptodate": [(self._unpacked_present, [name])],
            })
        return tasks

    # -- kernel tree -----------------------------------------------------------

    def kernel_tasks(self) -> list[dict]:
        stamp = self.layout.stamp
        return [
            {
                "name": "kernel:baseline",
                "doc": "make the SDK's kernel a git repository, vendor tree as the tagged first commit",
                "actions": [_user_action(self.baseline)],
                "file_dep": [stamp("unpack-sdk")],
                "targets": [stamp("kernel-baseline")],
                "uptodate": [(self._same_tree, ["kernel-baseline"])],
            },
            {
                "name": "kernel:overlay",
                "doc": "replace drivers/rknpu with the driver tarball's and commit it",
                "actions": [_user_action(self.overlay)],
                "file_dep": [stamp("kernel-baseline"), stamp("unpack-driver")],
                "targets": [stamp("kernel-overlay")],
                # Not the URL: a mirror or a moved file with the same sha256 is the same driver.
                "uptodate": [config_changed({k: v for k, v in self.recipe.section("driver").items()
                                             if k != "url"})],
            },
            {
                "name": "kernel:patches",
                "doc": "apply the patch series, one commit per patch",
                "actions": [_user_action(self.patches)],
                "file_dep": [stamp("kernel-overlay"), *self._patch_inputs()],
                "targets": [stamp("kernel-patches")],
                "uptodate": [config_changed(self.recipe.section("patches"))],
            },
            {
                "name": "kernel:preflight",
                "doc": "check the kernel tree for known incompatibilities before building",
                "actions": [_user_action(self.preflight)],
                "file_dep": [stamp("kernel-patches")],
                "targets": [stamp("kernel-preflight"), self.layout.accepted("preflight")],
                "uptodate": [config_changed({**self.recipe.section("preflight"), **self.recipe.section("lunch")})],
            },
        ]

    # -- the containerized build -------------------------------------------------

    def build_tasks(self) -> list[dict]:
        stamp = self.layout.stamp
        tasks: list[dict[str, Any]] = [
            {
                "name": "builder:image",
                "doc": "build the builder image from the Dockerfile (reused while it is unchanged)",
                "actions": [_user_action(self.builder)],
                "targets": [stamp("builder")],
                "uptodate": [config_changed(self.builder_hash())],
            },
            {
                "name": "builder:probe",
                "doc": "run ./build.sh help in the builder; check each step's build.sh command against it",
                "actions": [_user_action(self.probe)],
                "file_dep": [stamp("builder"), stamp("unpack-sdk")],
                "targets": [stamp("probe"), self.layout.accepted("probe")],
                "uptodate": [config_changed({"targets": {s.name: list(s.targets) for s in self.recipe.steps},
                                             "accept_probe": self.recipe.builder.accept_probe})],
            },
            {
                "name": "builder:check",
                "doc": "check the builder against the SDK's host requirements (its check-*.sh and known ones)",
                "actions": [_user_action(self.check)],
                "file_dep": [stamp("builder"), stamp("unpack-sdk"), stamp("probe")],
                "targets": [stamp("check"), self.layout.accepted("check")],
                "uptodate": [config_changed({"accept": list(self.recipe.builder.accept)})],
            },
        ]
        for index, step in enumerate(self.recipe.steps, start=1):
            deps = [stamp("builder"), stamp("probe")] + [self._input_stamp(d) for d in step.depends]
            tasks.append({
                "name": f"step:{step.name}",
                "doc": f"build.sh step '{step.name}': {self.step_runs(step)}"
                       + (f"; {step.description}" if step.description else ""),
                "actions": [_user_action(self.step, index, step)],
                "file_dep": list(dict.fromkeys(deps)),
                # The gates pass before any step starts, though only steps that depend on the driver
                # or patches rerun when preflight does (its stamp is their file_dep, via _input_stamp).
                "task_dep": list(STEP_GATES),
                "targets": [stamp(f"step-{step.name}")],
                "uptodate": [config_changed(self._step_config(step)), (self._products_present, [step])],
                "meta": {"runs": self.step_runs(step), **self._cache_meta(step)},
            })
        return tasks

    # -- apps (app_stages.py, build/apps.py) ---------------------------------------------

    def app_tasks(self) -> list[dict]:
        """Per enabled app: its fetch (a tarball or git source, files: URLs) and its build in the builder."""
        stamp, tasks = self.layout.stamp, []
        for app in self.recipe.enabled_apps:
            deps = [stamp("builder"), stamp("unpack-sdk")]
            if self.apps.needs_fetch(app):
                tasks.append({
                    "name": f"fetch:app-{app.name}",
                    "doc": f"app {app.name}: fetch its {app.source.kind} source and its files: URLs",
                    "actions": [_user_action(self.apps.fetch, app.name)],
                    "targets": [self.apps.source_stamp(app.name)],
                    "uptodate": [config_changed(self.apps.fetch_config(app)),
                                 (self.apps.fetched_present, [app.name])],
                })
                deps.append(self.apps.source_stamp(app.name))
            tasks.append({
                "name": f"app:{app.name}",
                "doc": f"app {app.name}: cross-compile it ({app.build}) in the builder, install into the overlay "
                       f"{app.overlay_name}",
                "actions": [_user_action(self.apps.build, app.name)],
                "file_dep": deps + self.apps.patch_inputs(app),
                "targets": [self.apps.stamp(app.name)],
                "uptodate": [(self.apps.current, [app.name])],
            })
        return tasks

    def _app_stamps(self) -> list[Path]:
        return [self.apps.stamp(app.name) for app in self.recipe.enabled_apps]

    # -- rootfs overlays (rootfs_overlays.py) -------------------------------------------

    def overlay_tasks(self) -> list[dict]:
        if not self.layout.overlays():
            return []
        lunch = [s for s in self.recipe.steps if s.is_lunch]
        after = self.layout.stamp(f"step-{lunch[0].name}") if lunch else self.layout.stamp("unpack-sdk")
        return [{
            "name": "sdk:overlays",
            "doc": "copy the rootfs_overlays and the apps' install trees into the SDK and list them in "
                   "RK_ROOTFS_OVERLAY_DIRS (output/.config)",
            "actions": [_user_action(self.overlays)],
            # An app's stamp changes only when the app rebuilt: then the overlays (and the rootfs) follow.
            "file_dep": [after, *self._app_stamps()],
            "targets": [self.layout.stamp("rootfs-overlays")],
            "uptodate": [config_changed({"dirs": self._overlay_dirs()}), (self._overlays_applied, [])],
        }]

    # -- manifest, release, flash, verify -----------------------------------------------------

    def final_tasks(self) -> list[dict]:
        step_stamps = [self.layout.stamp(f"step-{s.name}") for s in self.recipe.steps]
        return [
            {
                "name": "manifest",
                "doc": "write the build manifest (inputs, steps, artifacts with sha256)",
                "actions": [_user_action(self.manifest)],
                # What it reads: also the driver's stamps when no step depends on the driver.
                "file_dep": [self.layout.stamp(n) for n in ("fetch-sdk", "fetch-driver", "kernel-baseline",
                                                            "kernel-overlay", "kernel-preflight", "builder")]
                + step_stamps
                + [self.layout.accepted(gate) for gate in GATES.values()]
                + ([self.layout.stamp("rootfs-overlays")] if self.layout.overlays() else [])
                + self._app_stamps(),
                "targets": [self.layout.manifest],
            },
            {
                "name": "release",
                "doc": "make a signed release of the build: images, SBOMs, provenance, RELEASE.md (docs/release.md); "
                       "never part of a default run",
                "actions": [_user_action(self.release)],
                "task_dep": ["manifest"],
                "uptodate": [False],  # each release is a new directory
            },
            {
                "name": "flash",
                "doc": f"flash update.img to the board ({self.recipe.flash.method}); never part of a default run",
                "actions": [_user_action(self.flash)],
                "task_dep": ["manifest"],
                "uptodate": [False],
            },
            {
                "name": "verify",
                "doc": "boot the board and check the driver version on its serial console",
                "actions": [_user_action(self.verify)],
                "task_dep": ["flash"],
                "uptodate": [False],
                "verbosity": 2,
            },
        ]

    def all_tasks(self) -> list[dict]:
        if not self._warned:  # before anything runs
            self._warned = True
            for line in self.acceptance_warnings():
                log.warning(line)
        return (self.source_tasks() + self.kernel_tasks() + self.app_tasks() + self.overlay_tasks()
                + self.build_tasks() + self.final_tasks())

    def doit_config(self) -> dict:
        return {
            "dep_file": str(self.layout.dep_file),
            "backend": "sqlite3",
            "default_tasks": ["manifest"],
            "verbosity": 2,
        }
