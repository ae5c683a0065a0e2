"""The build's stages as plain methods over a recipe's Layout: fetch, unpack, kernel
baseline/overlay/patches/preflight, builder image/probe/check, rootfs overlays,
build steps (with the build cache and its keys), manifest, release, flash and verify.

Each stage writes a small JSON stamp under <workdir>/state (stamps.py); tasks.py wraps
the stages into doit tasks that depend on those stamps (file_dep), never on the SDK
tree itself, so a no-op run costs the same on a 70,000-file kernel as on a
10-file one. Stamps hold only deterministic content: a stage that reruns with
the same inputs rewrites the same stamp and its dependents stay up to date.
This module does not import doit: a test can run a stage directly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from rk3576_build.board.providers import provider
from rk3576_build.build import cache as build_cache
from rk3576_build.build import hostcheck, rootfs_overlays
from rk3576_build.build.buildsh import choose_targets, invocation, probe_commands, run_build_step
from rk3576_build.build.container import builder_config_hash, ensure_builder_image
from rk3576_build.config.layout import Layout
from rk3576_build.config.model import INPUTS, Mount, OverlaySpec, Recipe, StepSpec
from rk3576_build.config.rules import refuse_unknown_ids
from rk3576_build.config.workspace import default_downloads_dir
from rk3576_build.core.errors import UserError
from rk3576_build.core.files import sha256_file
from rk3576_build.kernel import preflight as kernel_preflight
from rk3576_build.kernel import tree as kernel_tree
from rk3576_build.pipeline import manifest, release_stage
from rk3576_build.pipeline.app_stages import AppStages
from rk3576_build.pipeline.stamps import (
    GATES,
    GateFailed,
    digest,
    file_digest,
    gate,
    product_state,
    read_stamp,
    unwritten_products,
    write_stamp,
)
from rk3576_build.release import reproducible
from rk3576_build.sources import fetch as fetching
from rk3576_build.sources.unpack import tree_identity
from rk3576_build.sources.unpack import unpack as unpack_tarball

_log = logging.getLogger(__name__)

# build.sh commands that build a root filesystem (their host checks apply only then).
ROOTFS_TARGETS = ("rootfs", "ubuntu", "debian", "buildroot", "yocto")

__all__ = ["GATES", "ROOTFS_TARGETS", "Layout", "Stages"]


class Stages:
    """The build's stages over one recipe and its Layout: plain methods, callable without doit."""

    def __init__(self, recipe: Recipe, *, offline: bool = False, echo: Callable[[str], None] = _log.info):
        self.recipe = recipe
        self.layout = Layout(recipe)
        self.offline = offline or recipe.offline
        self.echo = echo
        self._cache: build_cache.Cache | None = None  # the build cache, opened on first use
        self._cache_opened = False
        # The apps' stages (app_stages.py): fetch and build each app of the recipe.
        self.apps = AppStages(recipe, self.layout, offline=self.offline, echo=echo, builder_hash=self.builder_hash,
                              mounts=self._mounts, sdk_digest=lambda: self._source_digest("sdk"))
        # The release command's settings; None: the recipe's release section (`run release`).
        self.release_settings: release_stage.ReleaseSettings | None = None

    # -- sources -------------------------------------------------------------

    def _source_spec(self, name: str) -> Any:
        return self.recipe.sdk if name == "sdk" else self.recipe.driver

    def fetch(self, name: str) -> None:
        spec = self._source_spec(name)
        if not spec.url:
            raise UserError(
                f"{self.recipe.path}: sdk.url is empty. MYIR's SDK "
                "(MYD-LR3576-Distribution-L6.1.75-V1.1.0.tar.gz) sits behind a login on MYIR's "
                "developer portal, so download it by hand, then either export "
                "MYIR_SDK=/path/to/MYD-LR3576-Distribution-L6.1.75-V1.1.0.tar.gz (a path or an "
                f"internal mirror URL) or set sdk.url in {self.recipe.path.with_suffix('')}.local.yaml"
            )
        result = fetching.fetch(
            name, spec.url, sha256=spec.sha256,
            downloads_dir=default_downloads_dir(self.recipe.downloads),
            mirrors=self.recipe.mirrors, offline=self.offline,
            lock_file=self.recipe.lock_file, filename=spec.filename,
        )
        write_stamp(self.layout.stamp(f"fetch-{name}"),
                    {"path": str(result.path), "sha256": result.sha256, "size": result.size})
        # What unpack depends on: the bytes, not where the cache keeps them (a new URL, same file).
        write_stamp(self.layout.stamp(f"fetch-{name}-content"), {"sha256": result.sha256, "size": result.size})

    def _source_dir(self, name: str) -> Path:
        return self.layout.sdk if name == "sdk" else self.layout.driver

    def unpack(self, name: str) -> None:
        spec = self._source_spec(name)
        fetched = read_stamp(self.layout.stamp(f"fetch-{name}"))
        dest = self._source_dir(name)
        strip = self.recipe.sdk.strip_components if name == "sdk" else 0
        self.echo(f"unpacking {Path(fetched['path']).name} into {dest}")
        # Pins an unpinned source once it unpacked cleanly; drops a damaged unpinned download.
        with fetching.settle_after_unpack(name, spec.url, fetched, sha256=spec.sha256,
                                          lock_file=self.recipe.lock_file):
            result = unpack_tarball(Path(fetched["path"]), dest, strip_components=strip)
        self.echo(f"unpacked {result.files} files, {result.bytes / 1e6:.1f} MB")
        # A fresh tree: everything made in the old one (kernel commits, build outputs) is gone, so
        # this stamp changes on every unpack (it only runs when the tree must be recreated).
        write_stamp(self.layout.stamp(f"unpack-{name}"),
                    {"sha256": fetched["sha256"], "strip": strip, "tree": self._tree()})

    def _tree(self) -> str:
        """Which unpack of the SDK the kernel tree is: carried by every kernel stamp, so a fresh tree
        redoes the baseline, overlay, patches and preflight (their commits are reproducible)."""
        return tree_identity(self.layout.sdk)

    # -- kernel tree -----------------------------------------------------------

    def baseline(self) -> None:
        if not self.layout.kernel.is_dir():
            raise UserError(f"the SDK has no kernel tree at {self.recipe.sdk.kernel_dir}/ "
                            f"({self.layout.kernel}); check sdk.kernel_dir and sdk.strip_components")
        sha = kernel_tree.ensure_baseline(self.layout.kernel)
        write_stamp(self.layout.stamp("kernel-baseline"),
                    {"baseline": sha, "kernel_version": kernel_tree.read_kernel_version(self.layout.kernel),
                     "tree": self._tree()})

    def overlay(self) -> None:
        spec = self.recipe.driver
        fetched = read_stamp(self.layout.stamp("fetch-driver"))
        source = self.layout.driver / spec.source_dir
        if not source.is_dir():
            raise UserError(f"the driver tarball {Path(fetched['path']).name} has no {spec.source_dir}/; "
                            "check driver.source_dir")
        sha = kernel_tree.overlay_driver(
            self.layout.kernel, source, dest=spec.dest, expected_version=spec.version,
            description=f"{Path(fetched['path']).name} sha256 {fetched['sha256']}",
        )
        version = kernel_tree.read_driver_version(self.layout.kernel / spec.dest)
        self.echo(f"overlaid {spec.name} {version} ({version.date}) at {spec.dest}: commit {sha[:12]}")
        write_stamp(self.layout.stamp("kernel-overlay"),
                    {"commit": sha, "version": str(version), "date": version.date, "tree": self._tree()})

    def patch_files(self) -> list[Path]:
        if self.recipe.patches.dir is None:
            return []
        return kernel_tree.list_patches(self.recipe.patches.dir)

    def _patch_inputs(self) -> list[Path]:
        if self.recipe.patches.dir is None:
            return []
        series = self.recipe.patches.dir / "series"
        return ([series] if series.exists() else []) + self.patch_files()

    def patches(self) -> None:
        patches = self.patch_files()
        shas = kernel_tree.apply_patches(self.layout.kernel, patches)
        for patch, sha in zip(patches, shas, strict=True):
            self.echo(f"applied {patch.name}: commit {sha[:12]}")
        write_stamp(self.layout.stamp("kernel-patches"),
                    {"head": kernel_tree.tree_state(self.layout.kernel),
                     "patches": [p.name for p in patches], "tree": self._tree()})

    @gate("kernel:preflight")
    def preflight(self) -> None:
        refuse_unknown_ids(f"{self.recipe.path}: preflight.accept", self.recipe.preflight.accept,
                           {check.id for check in kernel_preflight.CHECKS}, kind="check id")
        lunch = self.recipe.lunch
        findings = kernel_preflight.preflight(self.layout.kernel, self.recipe.driver.dest, sdk_dir=self.layout.sdk,
                                              defconfig=f"{lunch.chip}:{lunch.defconfig}")
        try:
            kernel_preflight.enforce(findings, self.recipe.preflight.accept)
        except UserError as exc:
            blocking = [f.check.id for f in findings if f.check.id not in self.recipe.preflight.accept]
            raise GateFailed(str(exc), exc.exit_code, summary="finding(s) " + ", ".join(blocking)) from None
        self.echo(f"preflight: {len(findings)} finding(s), "
                  f"{len(kernel_preflight.CHECKS)} checks over {self.recipe.driver.dest}")
        self._write_accepted("preflight", [
            {"id": f.check.id, "finding": f"{f.check.title}: {f.evidence}", "setting": "preflight.accept",
             "reason": None} for f in findings])
        write_stamp(self.layout.stamp("kernel-preflight"),
                    {"head": read_stamp(self.layout.stamp("kernel-patches"))["head"],
                     "accepted": sorted(f.check.id for f in findings), "tree": self._tree()})

    # -- the builder: image, probe, host check -----------------------------------------

    def _build_args(self) -> dict[str, str]:
        return {"BASE": self.recipe.builder.base, **self.recipe.builder.build_args}

    def builder_hash(self) -> str:
        return builder_config_hash(self.recipe.builder.dockerfile, self._build_args())

    def builder(self) -> None:
        image = ensure_builder_image(self.recipe.builder.dockerfile, self._build_args(),
                                     log=lambda line: self.echo(f"[builder] {line.rstrip()}"))
        write_stamp(self.layout.stamp("builder"), {"tag": image.tag, "config_hash": image.config_hash})
        write_stamp(self.layout.state / "builder-image.json",
                    {"tag": image.tag, "id": image.id, "config_hash": image.config_hash})

    def _mounts(self) -> list[Mount]:
        """The recipe's builder.mounts, each checked to exist."""
        for index, mount in enumerate(self.recipe.builder.mounts):
            where = f"{self.recipe.path}: builder.mounts[{index}].source"
            if mount.source is None:
                raise UserError(f"{where}: is empty (a variable it names is unset; for the demo's "
                                "board kit, run `rk3576-build demo` or set BOARD_KIT)")
            if not mount.source.exists():
                raise UserError(f"{where}: '{mount.source}' does not exist")
        return list(self.recipe.builder.mounts)

    @gate("builder:probe")
    def probe(self) -> None:
        image = read_stamp(self.layout.stamp("builder"))["tag"]
        log = self.layout.probe_log
        commands = probe_commands(image=image, sdk_dir=self.layout.sdk, env=dict(self.recipe.builder.env),
                                  mounts=self._mounts(), log_path=log, echo=None)
        if commands is None:
            self.echo(f"warning: `./build.sh help` printed no usage lines this tool can read (log: {log}); "
                      "each step runs its first target unchecked")
        chosen, accepted, not_needed = self._choose_targets(commands)
        for step in self.recipe.steps:
            if step.name in chosen and len(step.targets) > 1:
                self.echo(f"step {step.name}: ./build.sh {chosen[step.name]} "
                          f"(of {', '.join(step.targets)})")
        write_stamp(self.layout.stamp("probe"),
                    {"commands": sorted(commands) if commands is not None else None, "targets": chosen})
        self._write_accepted("probe", accepted, not_needed=not_needed)

    def _choose_targets(self, commands) -> tuple[dict[str, str], list[dict], list[str]]:
        """Each step's build.sh command (buildsh.choose_targets), the findings builder.accept_probe let
        through (such a step runs its first target when the probe finds none of its targets), and the
        accepted steps whose command the probe found after all."""
        steps, accept = self.recipe.steps, self.recipe.builder.accept_probe

        def only(names: Collection[str]) -> list[StepSpec]:
            """The steps named; the others as raw commands, which the probe skips (indexes kept)."""
            return [s if s.name in names else dataclasses.replace(s, target=(), command=":") for s in steps]

        def choose(subset) -> dict[str, str]:
            return choose_targets(subset, commands, recipe=self.recipe.path, local_file=self.recipe.local_file)

        try:
            chosen = choose(only({s.name for s in steps if s.name not in accept}))
        except UserError as exc:
            raise UserError(f"{exc}\nIf this SDK's build.sh does run the command although the probe found no "
                            "sign of it, accept the finding for that step with your reason (docs/recipes.md):\n"
                            "  builder:\n    accept_probe:\n      <step>: \"<why build.sh accepts it>\"",
                            exc.exit_code) from None
        accepted, not_needed = [], []
        for step in steps:
            if step.name not in accept:
                continue
            try:
                chosen.update(choose(only({step.name})))
                if commands is not None:  # else every step runs unchecked anyway (probe warned)
                    not_needed.append(step.name)
                    self.echo(f"warning: builder.accept_probe.{step.name} is not needed: build.sh supports "
                              f"`{chosen[step.name]}`; remove it from the recipe")
            except UserError as exc:
                chosen[step.name] = step.targets[0]
                accepted.append({"id": step.name, "finding": str(exc).strip().splitlines()[0],
                                 "setting": f"builder.accept_probe.{step.name}", "reason": accept[step.name],
                                 "target": step.targets[0]})
        return {s.name: chosen[s.name] for s in steps if s.name in chosen}, accepted, not_needed

    def _write_accepted(self, gate: str, findings: list[dict], **more) -> None:
        write_stamp(self.layout.accepted(gate), {"accepted": findings, **more})

    def accepted_findings(self) -> list[dict]:
        """Every finding a gate let through on its last run because the recipe accepts it (for the manifest)."""
        found = []
        for task, short in GATES.items():
            path = self.layout.accepted(short)
            if path.exists():
                found += [{"gate": task, **item} for item in read_stamp(path)["accepted"]]
        return found

    def acceptance_warnings(self) -> list[str]:
        """One line per acceptance in force: each builder.accept_probe entry, and the host-check and
        preflight findings the last check let through that the recipe still accepts."""
        lines = []
        probe = self.layout.accepted("probe")
        not_needed = read_stamp(probe).get("not_needed", []) if probe.exists() else []
        for name, reason in self.recipe.builder.accept_probe.items():
            if name in not_needed:
                continue  # the probe found the step's command (and said so when it ran)
            target = self.recipe.step(name).targets[0]
            lines.append(f"builder.accept_probe: step {name} runs `{target}` without the probe's check "
                         f"(the recipe says: {reason})")
        for short, setting, accept in (("check", "builder.accept", self.recipe.builder.accept),
                                       ("preflight", "preflight.accept", self.recipe.preflight.accept)):
            path = self.layout.accepted(short)
            ids = [a["id"] for a in read_stamp(path)["accepted"] if a["id"] in accept] if path.exists() else []
            if ids:
                lines.append(f"{setting}: {', '.join(ids)} accepted by the recipe; the build may fail because of it")
        return lines

    @gate("builder:check")
    def check(self) -> None:
        """Host requirements (hostcheck): the SDK's own check-*.sh and the project's table, in the builder."""
        image = read_stamp(self.layout.stamp("builder"))["tag"]
        chosen = read_stamp(self.layout.stamp("probe"))["targets"].values()
        rootfs = [t for t in chosen if t.split(":")[0] in ROOTFS_TARGETS]
        log = self.layout.logs / "00-check.log"
        problems = hostcheck.check_builder(image, self.layout.sdk, needs_rootfs=bool(rootfs), log_path=log,
                                           mounts=self._mounts(),
                                           rootfs_systems=rootfs or hostcheck.DEFAULT_ROOTFS_SYSTEMS)
        accept = self.recipe.builder.accept
        try:
            hostcheck.enforce(problems, accept)
        except UserError as exc:
            blocking = [p.id for p in problems if p.id not in accept]
            if not blocking:
                raise  # not the problems: accept names an unknown id
            raise GateFailed(f"{exc}\nIf you know the build copes, accept them in the recipe "
                             f"(docs/recipes.md):\n  builder:\n    accept: [{', '.join(blocking)}]", exc.exit_code,
                             summary=f"host requirement(s) not met: {', '.join(blocking)} (log: {log})") from None
        self.echo(f"builder:check: {len(problems)} problem(s) (log: {log})")
        write_stamp(self.layout.stamp("check"), {"accepted": sorted(p.id for p in problems)})
        self._write_accepted("check", [
            {"id": p.id, "finding": f"{p.title}: {p.evidence}", "setting": "builder.accept", "reason": None}
            for p in problems])

    # -- build steps -------------------------------------------------------------------

    def _input_stamp(self, dep: str) -> Path:
        if dep == "sdk":
            return self.layout.stamp("unpack-sdk")
        if dep in ("driver", "patches"):
            return self.layout.stamp("kernel-preflight")
        if dep == "overlays":
            return self.layout.stamp("rootfs-overlays")
        return self.layout.stamp(f"step-{dep}")

    def _build_step(self, index: int, step: StepSpec) -> None:
        image = read_stamp(self.layout.stamp("builder"))["tag"]
        target = read_stamp(self.layout.stamp("probe"))["targets"].get(step.name)
        run = invocation(target, step.command, sdk_dir=self.layout.sdk, lunch=self.recipe.lunch)
        log = self.layout.step_log(index, step.name)
        before = {p.path: product_state(self.layout.sdk / p.path) for p in step.produces}
        started = time.time()
        elapsed = run_build_step(
            image=image, sdk_dir=self.layout.sdk, step=step.name, run=run, privileged=step.privileged,
            env=reproducible.step_env(self.recipe.builder.env, self.layout), mounts=self._mounts(), log_path=log,
            echo=self.echo,
        )
        problems = unwritten_products(self.layout.sdk, step.produces, before)
        if problems:
            raise UserError(f"build step {step.name} (`{run.command}`) exited 0 but {'; '.join(problems)}. "
                            f"Read the log to see what it did: {log} (a product that may legitimately stay "
                            "as it was takes `unchanged_ok: true` in the recipe)")
        write_stamp(self._timing(step),
                    {"started": started, "duration": round(elapsed, 3), "exit_status": 0, "log": str(log),
                     "command": run.command, "target": target, "alternatives": list(step.targets)})
        write_stamp(self.layout.stamp(f"step-{step.name}"), self._step_signature(step))

    def _timing(self, step: StepSpec) -> Path:
        return self.layout.state / f"step-{step.name}.timing.json"

    def step(self, index: int, step: StepSpec) -> None:
        """Restore the step from the build cache when it has the step's key, else build (and store) it."""
        key = self.step_key(step)
        started = time.time()
        record = build_cache.restore_or_build(
            self.cache() if key else None,
            key.key if key else None,  # type: ignore[arg-type]  # no key, no cache: the record's key is None
            self.layout.sdk, lambda: self._build_step(index, step), products=[p.path for p in step.produces],
            meta={"step": step.name})
        timing = self._timing(step)
        if record["result"] == "restored":
            self.echo(f"step {step.name}: restored from {record['from']} (key {record['key'][:12]})")
            write_stamp(timing, {"started": started, "duration": round(time.time() - started, 3),
                                 "exit_status": 0, "log": None, "cache": record})
            write_stamp(self.layout.stamp(f"step-{step.name}"), self._step_signature(step))
        else:
            write_stamp(timing, {**read_stamp(timing), "cache": record})

    def _step_signature(self, step: StepSpec) -> dict:
        """What a step's result depends on: its spec and the stamps of its inputs."""
        inputs = {"builder": self.layout.stamp("builder"), "probe": self.layout.stamp("probe")}
        inputs.update({dep: self._input_stamp(dep) for dep in step.depends})
        return {
            "step": step.name,
            "config": digest(self._step_config(step)),
            "inputs": {name: file_digest(path) for name, path in inputs.items()},
        }

    def _step_config(self, step: StepSpec) -> dict:
        builder = self.recipe.section("builder")
        config = {"step": dataclasses.asdict(step), "env": builder.get("env"), "mounts": builder.get("mounts")}
        if step.is_lunch:
            config["lunch"] = self.recipe.section("lunch")
        return json.loads(json.dumps(config, default=str))

    # -- the build cache (build/cache) and its keys ----------------------------------------

    def cache(self) -> build_cache.Cache | None:
        """The recipe's build cache (mirrors, then the store); None when it is off or has none."""
        if not self._cache_opened:
            self._cache_opened = True
            spec = self.recipe.cache
            if spec.enabled and (spec.mirrors or spec.store):
                self._cache = build_cache.Cache.from_spec(spec, base_dir=self.recipe.path.parent,
                                                          scratch=self.layout.root / "cache-tmp", report=self.echo)
        return self._cache

    def _source_digest(self, name: str) -> Any:
        """What a source contributes to a cache key: content digests, never paths; None while unknown."""
        if name == "overlays":
            return self._overlays_digest()
        if name == "patches":
            return [{"name": p.name, "sha256": sha256_file(p)} for p in self._patch_inputs()]
        spec = self._source_spec(name)
        stamp = self.layout.stamp(f"fetch-{name}")
        sha256 = spec.sha256 or (read_stamp(stamp)["sha256"] if stamp.exists() else None)
        if sha256 is None:
            return None
        if name == "sdk":
            return {"sha256": sha256, "strip_components": spec.strip_components, "kernel_dir": spec.kernel_dir}
        return {"sha256": sha256, "source_dir": spec.source_dir, "dest": spec.dest}

    def step_key(self, step: StepSpec) -> build_cache.StepKey | None:
        """The step's portable cache key and what went into it (build.cache.StepKey); None while a
        source's digest is unknown (before its first fetch, unless the recipe pins its sha256)."""
        steps = {s.name for s in self.recipe.steps}
        inputs = {}
        for dep in step.depends:
            if dep in INPUTS:
                value = self._source_digest(dep)
            elif dep in steps:
                value = getattr(self.step_key(self.recipe.step(dep)), "key", None)
            else:  # another input (e.g. rootfs overlays): its stamp lists its files by digest
                stamp = self._input_stamp(dep)
                value = file_digest(stamp) if stamp.exists() else None
            if value is None:
                return None
            inputs[dep] = value
        config = self._step_config(step)
        config["step"].pop("description", None)
        config["mounts"] = [{"target": m["target"], "read_only": m["read_only"]} for m in config["mounts"] or []]
        return build_cache.step_key({"config": config, "builder": self.builder_hash(), "inputs": inputs})

    def cache_where(self, key: str | None) -> str | None:
        """Which cache would restore `key` (what `plan` shows); None: the step builds."""
        cache = self.cache()
        return cache.where(key) if cache is not None and key else None

    # -- rootfs overlays (build/rootfs_overlays.py) ----------------------------------------

    def _overlay_scan(self, overlays: tuple[OverlaySpec, ...] | None = None) -> dict[str, list[dict]]:
        """Each overlay's entries (path, mode, sha256), re-hashing only files whose size or mtime changed;
        every overlay (the recipe's, then the apps' install trees) unless `overlays` names some."""
        cache_file = self.layout.state / "rootfs-overlays.hashes.json"
        known = json.loads(cache_file.read_text()) if cache_file.exists() else {}
        scans = {}
        for index, overlay in enumerate(self.layout.overlays() if overlays is None else overlays):
            seen = known.setdefault(str(overlay.source), {})
            where = (f"{self.recipe.path}: rootfs_overlays[{index}].source" if index < len(self.recipe.rootfs_overlays)
                     else f"the install tree of {overlay.name} (its app: task makes it)")
            scans[overlay.name] = rootfs_overlays.scan(overlay.source, seen, where=where)
        write_stamp(cache_file, known)
        return scans

    def _overlay_dirs(self) -> list[str]:
        return [rootfs_overlays.sdk_dir(o.name) for o in self.layout.overlays()]

    def overlays(self) -> None:
        """Copy each overlay into the SDK (replacing the last copy) and list it in output/.config."""
        config = self.layout.sdk / "output" / ".config"
        if not config.is_file():
            raise UserError(f"{self.recipe.path}: rootfs_overlays need the SDK's output/.config, which the lunch "
                            f"step writes, and {config} is missing; put a lunch step before the rootfs step")
        scans = self._overlay_scan()
        for overlay, path in zip(self.layout.overlays(), self._overlay_dirs(), strict=True):
            dest = self.layout.sdk / path
            dest.parent.mkdir(parents=True, exist_ok=True)
            rootfs_overlays.install(overlay.source, dest)
            files = [e for e in scans[overlay.name] if e["type"] == "file"]
            self.echo(f"rootfs overlay {overlay.name}: {len(files)} file(s) from {overlay.source} in {path}")
        rootfs_overlays.set_dirs(config, self._overlay_dirs())
        self.echo(f"{rootfs_overlays.SETTING} in output/.config: "
                  f"{' '.join(rootfs_overlays.configured_dirs(config))}")
        write_stamp(self.layout.stamp("rootfs-overlays"),
                    {"dirs": self._overlay_dirs(), "overlays": [{"name": n, "files": e} for n, e in scans.items()]})

    def _overlays_digest(self) -> dict[str, str] | None:
        """The overlays' part of a cache key: the recipe's by name and content, never their host paths; an
        app's by what it is built from (AppStages.key), known before it is built."""
        try:
            digests = {name: rootfs_overlays.digest(entries)
                       for name, entries in self._overlay_scan(self.recipe.rootfs_overlays).items()}
        except UserError:
            return None
        for app in self.recipe.enabled_apps:
            key = self.apps.key(app.name)
            if key is None:
                return None
            digests[app.overlay_name] = f"app:{key}"
        return digests

    # -- manifest, flash, verify -----------------------------------------------------

    def manifest(self) -> None:
        data = manifest.assemble(self.recipe, self.layout, patches=self.patch_files(),
                                 accepted=self.accepted_findings())
        manifest.write_manifest(self.layout.manifest, data)
        self.echo(f"manifest: {self.layout.manifest}")

    def release(self) -> None:
        settings = self.release_settings or release_stage.ReleaseSettings.of(self.recipe)
        release_stage.make(self.recipe, self.layout, settings, echo=self.echo)

    def flash(self) -> None:
        from rk3576_build.board import flash as flashing  # lazy: only this task flashes; a no-op run never does

        self.echo(flashing.flash(self.recipe.flash.method, update_img=self.layout.update_img(),
                                 tool=self.recipe.flash.tool, image_dir=self.layout.image_dir,
                                 board_dir=self.layout.board, echo=self.echo))

    @contextmanager
    def _board_up(self) -> Iterator[str | None]:
        """The flashed board brought up by its flash method's provider: its console URL, or None when
        the board is up already (verify reaches it by the console the settings name)."""
        board = provider(self.recipe.flash.method)
        with (board.boot(self.layout.board, self.layout.logs / board.log_name) if board.boot
              else nullcontext(None)) as console:
            yield console

    def verify(self) -> None:
        # lazy: only this task verifies (pyserial, the report writers); a no-op run loads neither
        from rk3576_build.board import verify as board_verify

        settings = board_verify.VerifySettings(**self.recipe.section("verify"))
        password = board_verify.get_password(settings)
        with self._board_up() as console:
            if console is not None:
                settings.console = console
            report = board_verify.verify_board(settings, self.layout.verify, password=password,
                                               chip=self.recipe.lunch.chip)
        self.echo(board_verify.summary(report, self.layout.verify))
        status = report.get("status")
        if status == "passed":
            return
        if not report.get("match"):
            what = f"expected {report.get('expected')!r}, board said {report.get('actual')!r}"
        else:  # the version matched; another check (e.g. rkllm) failed or could not run
            what = "; ".join(f"{c['name']}: {c.get('message') or c['status']}" for c in report.get("checks", [])
                             if c.get("status") in ("failed", "error"))
        raise UserError(f"verify {status}: {what} (report: {self.layout.verify})",
                        exit_code=1 if status == "failed" else 2)
