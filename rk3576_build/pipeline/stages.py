"""The build's stages as plain methods over a recipe's Layout: fetch, unpack, kernel
baseline/overlay/patches/preflight, builder image/probe/check, rootfs overlays,
build steps (with the build cache), manifest, flash and verify.

Each stage writes a small JSON stamp under <workdir>/state; tasks.py wraps the
stages into doit tasks that depend on those stamps (file_dep), never on the SDK
tree itself, so a no-op run costs the same on a 70,000-file kernel as on a
10-file one. Stamps hold only deterministic content: a stage that reruns with
the same inputs rewrites the same stamp and its dependents stay up to date.
This module does not import doit: a test can run a stage directly.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

from rk3576_build.core.errors import UserError
from rk3576_build.config.workspace import default_downloads_dir
from rk3576_build.core.text import redact_url
from rk3576_build.config.model import Recipe
from rk3576_build.config.rules import refuse_unknown_ids

_log = logging.getLogger(__name__)

# Inputs a step may name in `depends`, besides earlier steps.
SOURCE_INPUTS = ("sdk", "driver", "patches", "overlays")
# build.sh commands that build a root filesystem (their host checks apply only then).
ROOTFS_TARGETS = ("rootfs", "ubuntu", "debian", "buildroot", "yocto")
# The checks every build step waits for (task -> the short name of its records); `shell` waits for none.
GATES = {"builder:probe": "probe", "builder:check": "check", "kernel:preflight": "preflight"}


class Layout:
    """Where everything lives inside a recipe's work directory."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.root = recipe.workdir
        self.state = self.root / "state"
        self.logs = self.root / "logs"
        self.sdk = self.root / "sdk"
        self.driver = self.root / "driver"
        self.board = self.root / "board"
        self.verify = self.root / "verify"
        self.manifest = self.root / "manifest.json"
        self.dep_file = self.root / ".doit.db"
        self.lock = self.root / ".lock"

    @property
    def kernel(self) -> Path:
        return self.sdk / self.recipe.sdk.kernel_dir

    def stamp(self, name: str) -> Path:
        return self.state / f"{name}.json"

    def step_log(self, index: int, step: str) -> Path:
        return self.logs / f"{index:02d}-{step}.log"

    @property
    def probe_log(self) -> Path:
        return self.logs / "00-probe.log"

    def accepted(self, gate: str) -> Path:
        """What a gate (GATES' short name) let through because the recipe accepts it, with the recipe's reason."""
        return self.state / f"accepted-{gate}.json"

    def failed(self, gate: str) -> Path:
        """Why a gate failed on its last run; absent once it passes (`shell` reports it)."""
        return self.state / f"failed-{gate}.json"

    def update_img(self) -> Path:
        return self.sdk / "output" / "update" / "Image" / "update.img"


def write_stamp(path: Path, data: dict) -> None:
    """Write a stamp atomically (a half-written stamp must never count as done)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_stamp(path: Path) -> dict:
    return json.loads(path.read_text())


def product_state(path: Path):
    """A product's identity and times, of the link itself and of what it points to; None when absent."""
    try:
        link = os.lstat(path)
    except FileNotFoundError:
        return None
    try:
        real = os.stat(path)
    except FileNotFoundError:
        return [link.st_ino, link.st_mtime_ns, link.st_ctime_ns, None]  # a dangling link
    return [link.st_ino, link.st_mtime_ns, link.st_ctime_ns, [real.st_ino, real.st_mtime_ns, real.st_ctime_ns]]


def unwritten_products(sdk: Path, products, before: dict) -> list[str]:
    """What a step did not do: products missing afterwards, or left as they were (unless unchanged_ok)."""
    problems = []
    for product in products:
        after = product_state(sdk / product.path)
        if after is None or after[3] is None:
            problems.append(f"did not produce {product.path}")
        elif after == before.get(product.path) and not product.unchanged_ok:
            problems.append(f"did not write {product.path} (it is exactly as before the step)")
    return problems


def _digest(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _gate(task: str):
    """A gate stage that records why it failed (`failed-<gate>.json`, read by `shell`) and clears it on passing.

    A UserError's `summary` attribute, when set, is the one-line reason; else its first line.
    """
    def wrap(method):
        @functools.wraps(method)
        def run(self, *args, **kwargs):
            record = self.layout.failed(GATES[task])
            try:
                method(self, *args, **kwargs)
            except UserError as exc:
                summary = getattr(exc, "summary", None) or str(exc).strip().splitlines()[0].rstrip(":")
                write_stamp(record, {"task": task, "summary": summary, "error": str(exc), "time": time.time()})
                raise
            record.unlink(missing_ok=True)
        return run
    return wrap


def read_failure(layout: Layout, task: str) -> str | None:
    """The one-line reason `task` (a gate) failed on its last run; None when it passed or never ran."""
    record = layout.failed(GATES[task])
    try:
        return read_stamp(record)["summary"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Stages:
    """The build's stages over one recipe and its Layout: plain methods, callable without doit."""

    def __init__(self, recipe: Recipe, *, offline: bool = False, echo: Callable[[str], None] = _log.info):
        self.recipe = recipe
        self.layout = Layout(recipe)
        self.offline = offline or recipe.offline
        self.echo = echo
        self._cache = None  # the build cache, opened on first use

    # -- sources -------------------------------------------------------------

    def _source_spec(self, name: str):
        return self.recipe.sdk if name == "sdk" else self.recipe.driver

    def fetch(self, name: str) -> None:
        from rk3576_build.sources import fetch

        spec = self._source_spec(name)
        if not spec.url:
            raise UserError(
                f"{self.recipe.path}: sdk.url is empty. MYIR's SDK "
                "(MYD-LR3576-Distribution-L6.1.75-V1.1.0.tar.gz) sits behind a login on MYIR's "
                "developer portal, so download it by hand, then either export "
                "MYIR_SDK=/path/to/MYD-LR3576-Distribution-L6.1.75-V1.1.0.tar.gz (a path or an "
                f"internal mirror URL) or set sdk.url in {self.recipe.path.with_suffix('')}.local.yaml"
            )
        result = fetch.fetch(
            name, spec.url, sha256=spec.sha256,
            downloads_dir=default_downloads_dir(self.recipe.downloads),
            mirrors=self.recipe.mirrors, offline=self.offline,
            lock_file=self.recipe.lock_file, filename=spec.filename,
        )
        write_stamp(self.layout.stamp(f"fetch-{name}"),
                    {"path": str(result.path), "sha256": result.sha256, "size": result.size})
        # What unpack depends on: the bytes, not where the cache keeps them (a new URL, same file).
        write_stamp(self.layout.stamp(f"fetch-{name}-content"), {"sha256": result.sha256, "size": result.size})

    def _fetched_file_present(self, name: str) -> bool:
        stamp = self.layout.stamp(f"fetch-{name}")
        if not stamp.exists():
            return False
        data = read_stamp(stamp)
        path = Path(data["path"])
        return path.exists() and path.stat().st_size == data["size"]

    def unpack(self, name: str) -> None:
        from rk3576_build.sources import fetch
        from rk3576_build.sources.unpack import unpack

        spec = self._source_spec(name)
        fetched = read_stamp(self.layout.stamp(f"fetch-{name}"))
        dest = self.layout.sdk if name == "sdk" else self.layout.driver
        strip = self.recipe.sdk.strip_components if name == "sdk" else 0
        self.echo(f"unpacking {Path(fetched['path']).name} into {dest}")
        # Pins an unpinned source once it unpacked cleanly; drops a damaged unpinned download.
        with fetch.settle_after_unpack(name, spec.url, fetched, sha256=spec.sha256,
                                       lock_file=self.recipe.lock_file):
            result = unpack(Path(fetched["path"]), dest, strip_components=strip)
        self.echo(f"unpacked {result.files} files, {result.bytes / 1e6:.1f} MB")
        # A fresh tree: everything made in the old one (kernel commits, build outputs) is gone, so
        # this stamp changes on every unpack (it only runs when the tree must be recreated).
        write_stamp(self.layout.stamp(f"unpack-{name}"),
                    {"sha256": fetched["sha256"], "strip": strip, "tree": self._tree()})

    def _unpacked_present(self, name: str) -> bool:
        from rk3576_build.sources.unpack import is_unpacked

        return is_unpacked(self.layout.sdk if name == "sdk" else self.layout.driver)

    def _tree(self) -> str:
        """Which unpack of the SDK the kernel tree is: carried by every kernel stamp, so a fresh tree
        redoes the baseline, overlay, patches and preflight (their commits are reproducible)."""
        from rk3576_build.sources.unpack import tree_identity

        return tree_identity(self.layout.sdk)

    def _same_tree(self, stamp: str) -> bool:
        """Was `stamp` written on the SDK tree there is now? (Not when the tree was unpacked afresh
        while the unpack's own stamp stayed, e.g. a run that failed or was killed in between.)"""
        path = self.layout.stamp(stamp)
        return path.exists() and read_stamp(path).get("tree") == self._tree()

    def baseline(self) -> None:
        from rk3576_build.kernel import tree as kernel_tree

        if not self.layout.kernel.is_dir():
            raise UserError(f"the SDK has no kernel tree at {self.recipe.sdk.kernel_dir}/ "
                            f"({self.layout.kernel}); check sdk.kernel_dir and sdk.strip_components")
        sha = kernel_tree.ensure_baseline(self.layout.kernel)
        write_stamp(self.layout.stamp("kernel-baseline"),
                    {"baseline": sha, "kernel_version": kernel_tree.read_kernel_version(self.layout.kernel),
                     "tree": self._tree()})

    def overlay(self) -> None:
        from rk3576_build.kernel import tree as kernel_tree

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
        from rk3576_build.kernel.tree import list_patches

        if self.recipe.patches.dir is None:
            return []
        return list_patches(self.recipe.patches.dir)

    def _patch_inputs(self) -> list[Path]:
        if self.recipe.patches.dir is None:
            return []
        series = self.recipe.patches.dir / "series"
        return ([series] if series.exists() else []) + self.patch_files()

    def patches(self) -> None:
        from rk3576_build.kernel import tree as kernel_tree

        patches = self.patch_files()
        shas = kernel_tree.apply_patches(self.layout.kernel, patches)
        for patch, sha in zip(patches, shas):
            self.echo(f"applied {patch.name}: commit {sha[:12]}")
        write_stamp(self.layout.stamp("kernel-patches"),
                    {"head": kernel_tree.tree_state(self.layout.kernel),
                     "patches": [p.name for p in patches], "tree": self._tree()})

    @_gate("kernel:preflight")
    def preflight(self) -> None:
        from rk3576_build.kernel import preflight

        refuse_unknown_ids(f"{self.recipe.path}: preflight.accept", self.recipe.preflight.accept,
                           {check.id for check in preflight.CHECKS}, kind="check id")
        lunch = self.recipe.lunch
        findings = preflight.preflight(self.layout.kernel, self.recipe.driver.dest, sdk_dir=self.layout.sdk,
                                       defconfig=f"{lunch.chip}:{lunch.defconfig}")
        try:
            preflight.enforce(findings, self.recipe.preflight.accept)
        except UserError as exc:
            exc.summary = "finding(s) " + ", ".join(f.check.id for f in findings
                                                      if f.check.id not in self.recipe.preflight.accept)
            raise
        self.echo(f"preflight: {len(findings)} finding(s), "
                  f"{len(preflight.CHECKS)} checks over {self.recipe.driver.dest}")
        self._write_accepted("preflight", [
            {"id": f.check.id, "finding": f"{f.check.title}: {f.evidence}", "setting": "preflight.accept",
             "reason": None} for f in findings])
        write_stamp(self.layout.stamp("kernel-preflight"),
                    {"head": read_stamp(self.layout.stamp("kernel-patches"))["head"],
                     "accepted": sorted(f.check.id for f in findings), "tree": self._tree()})

    def _build_args(self) -> dict[str, str]:
        return {"BASE": self.recipe.builder.base, **self.recipe.builder.build_args}

    def builder_hash(self) -> str:
        from rk3576_build.build.container import builder_config_hash

        return builder_config_hash(self.recipe.builder.dockerfile, self._build_args())

    def builder(self) -> None:
        from rk3576_build.build.container import ensure_builder_image

        image = ensure_builder_image(self.recipe.builder.dockerfile, self._build_args(),
                                     log=lambda line: self.echo(f"[builder] {line.rstrip()}"))
        write_stamp(self.layout.stamp("builder"), {"tag": image.tag, "config_hash": image.config_hash})
        write_stamp(self.layout.state / "builder-image.json",
                    {"tag": image.tag, "id": image.id, "config_hash": image.config_hash})

    def _input_stamp(self, dep: str) -> Path:
        if dep == "sdk":
            return self.layout.stamp("unpack-sdk")
        if dep in ("driver", "patches"):
            return self.layout.stamp("kernel-preflight")
        if dep == "overlays":
            return self.layout.stamp("rootfs-overlays")
        return self.layout.stamp(f"step-{dep}")

    def _mounts(self):
        from rk3576_build.build.container import Mount

        mounts = []
        for index, mount in enumerate(self.recipe.builder.mounts):
            where = f"{self.recipe.path}: builder.mounts[{index}].source"
            if mount.source is None:
                raise UserError(f"{where}: is empty (a variable it names is unset; for the demo's "
                                "board kit, run `rk3576-build demo` or set BOARD_KIT)")
            if not mount.source.exists():
                raise UserError(f"{where}: '{mount.source}' does not exist")
            mounts.append(Mount(mount.source, mount.target, mount.read_only))
        return mounts

    @_gate("builder:probe")
    def probe(self) -> None:
        from rk3576_build.build.buildsh import probe_commands

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
        from rk3576_build.build.buildsh import choose_targets

        steps, accept = self.recipe.steps, self.recipe.builder.accept_probe

        def only(keep) -> list:  # the other steps as raw commands, which the probe skips (indexes kept)
            return [s if keep(s) else dataclasses.replace(s, target=(), command=":") for s in steps]

        def choose(subset) -> dict[str, str]:
            return choose_targets(subset, commands, recipe=self.recipe.path, local_file=self.recipe.local_file)

        try:
            chosen = choose(only(lambda s: s.name not in accept))
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
                chosen.update(choose(only(lambda s: s.name == step.name)))
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
        for task, gate in GATES.items():
            path = self.layout.accepted(gate)
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
        for gate, setting, accept in (("check", "builder.accept", self.recipe.builder.accept),
                                      ("preflight", "preflight.accept", self.recipe.preflight.accept)):
            path = self.layout.accepted(gate)
            ids = [a["id"] for a in read_stamp(path)["accepted"] if a["id"] in accept] if path.exists() else []
            if ids:
                lines.append(f"{setting}: {', '.join(ids)} accepted by the recipe; the build may fail because of it")
        return lines

    @_gate("builder:check")
    def check(self) -> None:
        """Host requirements (hostcheck): the SDK's own check-*.sh and the project's table, in the builder."""
        from rk3576_build.build import hostcheck

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
            failed = UserError(f"{exc}\nIf you know the build copes, accept them in the recipe "
                               f"(docs/recipes.md):\n  builder:\n    accept: [{', '.join(blocking)}]", exc.exit_code)
            failed.summary = f"host requirement(s) not met: {', '.join(blocking)} (log: {log})"
            raise failed from None
        self.echo(f"builder:check: {len(problems)} problem(s) (log: {log})")
        write_stamp(self.layout.stamp("check"), {"accepted": sorted(p.id for p in problems)})
        self._write_accepted("check", [
            {"id": p.id, "finding": f"{p.title}: {p.evidence}", "setting": "builder.accept", "reason": None}
            for p in problems])

    def _build_step(self, index: int, step) -> None:
        from rk3576_build.build.buildsh import invocation, run_build_step

        image = read_stamp(self.layout.stamp("builder"))["tag"]
        target = read_stamp(self.layout.stamp("probe"))["targets"].get(step.name)
        run = invocation(target, step.command, sdk_dir=self.layout.sdk, lunch=self.recipe.lunch)
        log = self.layout.step_log(index, step.name)
        before = {p.path: product_state(self.layout.sdk / p.path) for p in step.produces}
        started = time.time()
        elapsed = run_build_step(
            image=image, sdk_dir=self.layout.sdk, step=step.name, run=run, privileged=step.privileged,
            env=dict(self.recipe.builder.env), mounts=self._mounts(), log_path=log, echo=self.echo,
        )
        problems = unwritten_products(self.layout.sdk, step.produces, before)
        if problems:
            raise UserError(f"build step {step.name} (`{run.command}`) exited 0 but {'; '.join(problems)}. "
                            f"Read the log to see what it did: {log} (a product that may legitimately stay "
                            "as it was takes `unchanged_ok: true` in the recipe)")
        write_stamp(self.layout.state / f"step-{step.name}.timing.json",
                    {"started": started, "duration": round(elapsed, 3), "exit_status": 0, "log": str(log),
                     "command": run.command, "target": target, "alternatives": list(step.targets)})
        write_stamp(self.layout.stamp(f"step-{step.name}"), self._step_signature(step))

    # -- the build cache (buildcache.py) ---------------------------------------------

    def cache(self):
        """The recipe's build cache (mirrors, then the store); None when it is off or has none."""
        if self._cache is None:
            from rk3576_build.build.cache import Cache

            spec = self.recipe.cache
            self._cache = False
            if spec.enabled and (spec.mirrors or spec.store):
                self._cache = Cache.from_spec(spec, base_dir=self.recipe.path.parent,
                                              scratch=self.layout.root / "cache-tmp", report=self.echo)
        return self._cache or None

    def _source_digest(self, name: str):
        """What a source contributes to a cache key: content digests, never paths; None while unknown."""
        if name == "overlays":
            return self._overlays_digest()
        if name == "patches":
            from rk3576_build.pipeline.manifest import sha256_file

            return [{"name": p.name, "sha256": sha256_file(p)} for p in self._patch_inputs()]
        spec = self._source_spec(name)
        stamp = self.layout.stamp(f"fetch-{name}")
        sha256 = spec.sha256 or (read_stamp(stamp)["sha256"] if stamp.exists() else None)
        if sha256 is None:
            return None
        if name == "sdk":
            return {"sha256": sha256, "strip_components": spec.strip_components, "kernel_dir": spec.kernel_dir}
        return {"sha256": sha256, "source_dir": spec.source_dir, "dest": spec.dest}

    def step_key(self, step):
        """The step's portable cache key and what went into it (buildcache.StepKey); None while a
        source's digest is unknown (before its first fetch, unless the recipe pins its sha256)."""
        from rk3576_build.build.cache import step_key

        steps = {s.name for s in self.recipe.steps}
        inputs = {}
        for dep in step.depends:
            if dep in SOURCE_INPUTS:
                value = self._source_digest(dep)
            elif dep in steps:
                value = getattr(self.step_key(self.recipe.step(dep)), "key", None)
            else:  # another input (e.g. rootfs overlays): its stamp lists its files by digest
                stamp = self._input_stamp(dep)
                value = hashlib.sha256(stamp.read_bytes()).hexdigest() if stamp.exists() else None
            if value is None:
                return None
            inputs[dep] = value
        config = self._step_config(step)
        config["step"].pop("description", None)
        config["mounts"] = [{"target": m["target"], "read_only": m["read_only"]} for m in config["mounts"] or []]
        return step_key({"config": config, "builder": self.builder_hash(), "inputs": inputs})

    def cache_where(self, key: str | None) -> str | None:
        """Which cache would restore `key` (what `plan` shows); None: the step builds."""
        cache = self.cache()
        return cache.where(key) if cache is not None and key else None

    def step(self, index: int, step) -> None:
        """Restore the step from the build cache when it has the step's key, else build (and store) it."""
        from rk3576_build.build.cache import restore_or_build

        key = self.step_key(step)
        started = time.time()
        record = restore_or_build(self.cache() if key else None, key.key if key else None, self.layout.sdk,
                                  lambda: self._build_step(index, step), products=[p.path for p in step.produces],
                                  meta={"step": step.name})
        timing = self.layout.state / f"step-{step.name}.timing.json"
        if record["result"] == "restored":
            self.echo(f"step {step.name}: restored from {record['from']} (key {record['key'][:12]})")
            write_stamp(timing, {"started": started, "duration": round(time.time() - started, 3),
                                 "exit_status": 0, "log": None, "cache": record})
            write_stamp(self.layout.stamp(f"step-{step.name}"), self._step_signature(step))
        else:
            write_stamp(timing, {**read_stamp(timing), "cache": record})

    def _cache_meta(self, step) -> dict:
        """The step's cache key and its inputs, as `info` and `plan` show them."""
        try:
            key = self.step_key(step)
        except UserError as exc:  # e.g. a missing Dockerfile: the task that needs it says so
            return {"cache_key": None, "cache_inputs": f"unknown: {exc}"}
        if key is None:
            return {"cache_key": None, "cache_inputs": "known once the sources are fetched"}
        return {"cache_key": key.key, "cache_inputs": key.inputs}

    def _step_signature(self, step) -> dict:
        """What a step's result depends on: its spec and the stamps of its inputs."""
        inputs = {"builder": self.layout.stamp("builder"), "probe": self.layout.stamp("probe")}
        inputs.update({dep: self._input_stamp(dep) for dep in step.depends})
        return {
            "step": step.name,
            "config": _digest(self._step_config(step)),
            "inputs": {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in inputs.items()},
        }

    def _step_config(self, step) -> dict:
        builder = self.recipe.section("builder")
        config = {"step": dataclasses.asdict(step), "env": builder.get("env"), "mounts": builder.get("mounts")}
        if step.is_lunch:
            config["lunch"] = self.recipe.section("lunch")
        return json.loads(json.dumps(config, default=str))

    def _products_present(self, step) -> bool:
        return all((self.layout.sdk / p.path).exists() for p in step.produces)

    def step_runs(self, step) -> str:
        """What a step runs, as plan and info show it: the probed build.sh command once known."""
        if not step.targets:
            return step.command
        stamp = self.layout.stamp("probe")
        chosen = read_stamp(stamp)["targets"].get(step.name) if stamp.exists() else None
        if step.is_lunch:
            from rk3576_build.build.buildsh import invocation

            lunch = self.recipe.lunch
            if self.layout.sdk.is_dir():  # `auto` depends on the unpacked tree
                return invocation("lunch", None, sdk_dir=self.layout.sdk, lunch=lunch).command + \
                    f" (lunch.mode {lunch.mode})"
            return f"./build.sh lunch (lunch.mode {lunch.mode}, {lunch.defconfig})"
        if chosen:
            return f"./build.sh {chosen}" + (f" (of {'|'.join(step.targets)})" if len(step.targets) > 1 else "")
        return "./build.sh " + "|".join(step.targets) + (" (first one build.sh supports)"
                                                         if len(step.targets) > 1 else "")

    def _overlay_scan(self) -> dict[str, list[dict]]:
        """Each overlay's entries (path, mode, sha256), re-hashing only files whose size or mtime changed."""
        from rk3576_build.build import rootfs_overlays

        cache_file = self.layout.state / "rootfs-overlays.hashes.json"
        known = json.loads(cache_file.read_text()) if cache_file.exists() else {}
        scans = {}
        for index, overlay in enumerate(self.recipe.rootfs_overlays):
            seen = known.setdefault(str(overlay.source), {})
            scans[overlay.name] = rootfs_overlays.scan(
                overlay.source, seen, where=f"{self.recipe.path}: rootfs_overlays[{index}].source")
        write_stamp(cache_file, known)
        return scans

    def _overlay_dirs(self) -> list[str]:
        from rk3576_build.build.rootfs_overlays import sdk_dir

        return [sdk_dir(o.name) for o in self.recipe.rootfs_overlays]

    def overlays(self) -> None:
        """Copy each overlay into the SDK (replacing the last copy) and list it in output/.config."""
        from rk3576_build.build import rootfs_overlays

        config = self.layout.sdk / "output" / ".config"
        if not config.is_file():
            raise UserError(f"{self.recipe.path}: rootfs_overlays need the SDK's output/.config, which the lunch "
                            f"step writes, and {config} is missing; put a lunch step before the rootfs step")
        scans = self._overlay_scan()
        for overlay, path in zip(self.recipe.rootfs_overlays, self._overlay_dirs()):
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

    def _overlays_applied(self) -> bool:
        """Up to date: the sources are as stamped, the SDK's copies match, and .config still lists them
        (a rerun or a restored lunch step rewrites .config without them)."""
        from rk3576_build.build import rootfs_overlays

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
                   for o, d in zip(self.recipe.rootfs_overlays, self._overlay_dirs()))

    def _overlays_digest(self):
        """The overlays' part of a cache key: their names and contents, never their host paths."""
        from rk3576_build.build.rootfs_overlays import digest

        try:
            return {name: digest(entries) for name, entries in self._overlay_scan().items()}
        except UserError:
            return None

    def _overlay_inputs(self) -> list[dict]:
        """The manifest's `overlay:<name>` inputs: every file with its mode and sha256."""
        from rk3576_build.build.rootfs_overlays import digest

        if not self.recipe.rootfs_overlays:
            return []
        stamp = read_stamp(self.layout.stamp("rootfs-overlays"))
        sources = {o.name: str(o.source) for o in self.recipe.rootfs_overlays}
        return [{"name": f"overlay:{o['name']}", "source": sources.get(o["name"]), "sdk_dir": d,
                 "sha256": digest(o["files"]), "files": o["files"]}
                for o, d in zip(stamp["overlays"], stamp["dirs"])]

    def manifest(self) -> None:
        from rk3576_build.pipeline import manifest

        state = self.layout.state
        fetched = {n: read_stamp(self.layout.stamp(f"fetch-{n}")) for n in ("sdk", "driver")}
        baseline = read_stamp(self.layout.stamp("kernel-baseline"))
        overlay = read_stamp(self.layout.stamp("kernel-overlay"))
        image = read_stamp(state / "builder-image.json")
        inputs = [
            {"name": "sdk", "url": redact_url(self.recipe.sdk.url), "sha256": fetched["sdk"]["sha256"],
             "size": fetched["sdk"]["size"], "kernel_version": baseline["kernel_version"]},
            {"name": "driver", "url": redact_url(self.recipe.driver.url),
             "sha256": fetched["driver"]["sha256"], "size": fetched["driver"]["size"],
             "version": overlay["version"], "date": overlay["date"], "commit": overlay["commit"]},
            *({"name": f"patch:{p.name}", "sha256": manifest.sha256_file(p)} for p in self.patch_files()),
            {"name": "builder", "image": image["tag"], "image_id": image["id"],
             "config_hash": image["config_hash"]},
            *self._overlay_inputs(),
        ]
        steps = []
        for step in self.recipe.steps:
            timing = read_stamp(state / f"step-{step.name}.timing.json")
            steps.append({"name": step.name, "command": timing.get("command", step.command),
                          "target": timing.get("target"), "alternatives": list(step.targets),
                          "duration": timing["duration"], "exit_status": timing["exit_status"],
                          "log": timing["log"], "cache": timing.get("cache")})
        data = manifest.build_manifest(recipe=self.recipe.to_dict(), inputs=inputs, steps=steps,
                                       artifacts_root=self.layout.sdk, artifacts=self.recipe.artifacts)
        # What the gates let through because the recipe said so (builder.accept_probe, builder.accept,
        # preflight.accept), with the recipe's reason where it gives one.
        data["accepted"] = self.accepted_findings()
        manifest.write_manifest(self.layout.manifest, data)
        self.echo(f"manifest: {self.layout.manifest}")

    def flash(self) -> None:
        from rk3576_build.board import flash

        flash.flash(self.recipe.flash.method, update_img=self.layout.update_img(), tool=self.recipe.flash.tool,
                    image_dir=self.layout.sdk / "rockdev", board_dir=self.layout.board, echo=self.echo)

    def verify(self) -> None:
        from rk3576_build.board import verify

        settings = verify.VerifySettings(**self.recipe.section("verify"))
        password = verify.get_password(settings)
        if self.recipe.flash.method == "virtual":
            from rk3576_build.demo.vboard import VirtualBoard, board_image_from_dir

            # The flashed image is booted as built: what the rkllm check runs came in through
            # rootfs_overlays, never through the board's boot-time stand-in.
            with VirtualBoard(board_image_from_dir(self.layout.board), rkllm_standin=False,
                              log_path=self.layout.logs / "virtual-board.log") as board:
                settings.console = board.url
                report = verify.verify_board(settings, self.layout.verify, password=password,
                                             chip=self.recipe.lunch.chip)
        else:
            report = verify.verify_board(settings, self.layout.verify, password=password, chip=self.recipe.lunch.chip)
        self.echo(verify.summary(report, self.layout.verify))
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
