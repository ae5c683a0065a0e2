"""The apps' stages (the recipe's `apps:`; build/apps.py builds one): fetch an app's source and files, build it.

Per enabled app:
- `fetch:app-<name>` (a tarball or git source, or files: URLs): the tarball fetched with its sha256 and
  unpacked, or the git commit written out (sources/gitsource.py), into <workdir>/app-sources/<name>;
  each URL of files: fetched into the download cache. Stamp `app-<name>-source`: where they are, the
  source's identity (sha256 or commit).
- `app:<name>`: build/apps.py in the builder image, in <workdir>/apps/<name> (its root/ is the rootfs
  overlay app-<name>, Layout.overlays). Stamp `app-<name>`: the digest of apps.signature() and of the
  install tree, so it changes, and `sdk:overlays` reruns, only when what the app depends on changed.
A local source directory (and local files) need no fetch: its content is part of the signature (files by
size and time, re-hashed only when those change).

`key()` is the app's part of a build cache key (a step that depends on `overlays`): what the build depends
on by content and setting, never by a path or a time of this machine, so another machine's cache entry of
the rootfs step is found before the app is built here (and `plan` can say so).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rk3576_build.build import apps as app_build
from rk3576_build.build import rootfs_overlays
from rk3576_build.config.layout import Layout
from rk3576_build.config.model import AppSpec, Mount, Recipe
from rk3576_build.config.workspace import default_downloads_dir
from rk3576_build.core.errors import UserError
from rk3576_build.core.files import read_json_object, sha256_file
from rk3576_build.core.patches import list_patches
from rk3576_build.core.text import redact_url
from rk3576_build.pipeline.stamps import digest, read_stamp, write_stamp
from rk3576_build.release import reproducible
from rk3576_build.sources import fetch as fetching
from rk3576_build.sources import gitsource
from rk3576_build.sources.unpack import is_unpacked
from rk3576_build.sources.unpack import unpack as unpack_tarball


class AppStages:
    """The stages of the recipe's apps, with what they take from the pipeline's Stages: the builder image's
    configuration hash, the checked builder mounts, the SDK's cache-key digest."""

    def __init__(self, recipe: Recipe, layout: Layout, *, offline: bool, echo: Callable[[str], None],
                 builder_hash: Callable[[], str], mounts: Callable[[], list[Mount]],
                 sdk_digest: Callable[[], Any]):
        self.recipe, self.layout, self.offline, self.echo = recipe, layout, offline, echo
        self.builder_hash, self.mounts, self.sdk_digest = builder_hash, mounts, sdk_digest

    def spec(self, name: str) -> AppSpec:
        return self.recipe.apps[name]

    # -- fetch ------------------------------------------------------------------------------

    def source_stamp(self, name: str) -> Path:
        return self.layout.stamp(f"app-{name}-source")

    def stamp(self, name: str) -> Path:
        return self.layout.stamp(f"app-{name}")

    @staticmethod
    def needs_fetch(app: AppSpec) -> bool:
        """A tarball or git source, or a files: URL: something to fetch before the build."""
        return app.source.kind != "dir" or any(item.url for item in app.files)

    def fetch_config(self, app: AppSpec) -> dict:
        """What the fetch task depends on (URLs without credentials; a URL with the same sha256 is the same)."""
        src = app.source
        source = ({"sha256": src.sha256, "strip": src.strip_components} if src.kind == "url" else
                  {"git": redact_url(src.git or ""), "commit": src.commit} if src.kind == "git" else None)
        return {"source": source, "files": [item.sha256 for item in app.files if item.url]}

    def fetch(self, name: str) -> None:
        """The source (unpacked tarball, or git commit) in app-sources/<name>, and the files: URLs in the cache."""
        app, offline = self.spec(name), self.offline
        downloads = default_downloads_dir(self.recipe.downloads)
        src, dest = app.source, self.layout.app_source(name)
        record: dict = {"source": None, "files": {}}
        if src.kind == "url":
            fetched = fetching.fetch(f"app-{name}", src.url or "", sha256=src.sha256, downloads_dir=downloads,
                                     mirrors=self.recipe.mirrors, offline=offline, filename=src.filename)
            self.echo(f"app {name}: unpacking {fetched.path.name} into {dest}")
            unpack_tarball(fetched.path, dest, strip_components=src.strip_components)
            record["source"] = {"dir": str(dest), "id": f"sha256:{fetched.sha256}"}
        elif src.kind == "git":
            gitsource.checkout(src.git or "", src.commit or "", dest, downloads_dir=downloads, offline=offline,
                               what=f"app {name}")
            self.echo(f"app {name}: {redact_url(src.git or '')} at {src.commit} in {dest}")
            record["source"] = {"dir": str(dest), "id": f"git:{src.commit}"}
        for index, item in enumerate(app.files):
            if item.url:
                got = fetching.fetch(f"app-{name}-files-{index}", item.url, sha256=item.sha256,
                                     downloads_dir=downloads, mirrors=self.recipe.mirrors, offline=offline,
                                     filename=item.filename)
                record["files"][str(index)] = str(got.path)
        write_stamp(self.source_stamp(name), record)

    def fetched_present(self, name: str) -> bool:
        """Up to date: the unpacked tree or checkout and every fetched file are still there."""
        path = self.source_stamp(name)
        if not path.exists():
            return False
        record, kind = read_stamp(path), self.spec(name).source.kind
        source = Path(record["source"]["dir"]) if record.get("source") else None
        if kind == "url" and not (source and is_unpacked(source)):
            return False
        if kind == "git" and not (source and source.is_dir()):
            return False
        return all(Path(p).is_file() for p in record["files"].values())

    # -- build ------------------------------------------------------------------------------

    def patch_inputs(self, app: AppSpec) -> list[Path]:
        """The app's patch files and its series file: a change reruns the app."""
        if app.patches is None:
            return []
        series = app.patches / "series"
        return ([series] if series.exists() else []) + list_patches(app.patches)

    def build_spec(self, name: str) -> app_build.AppBuild:
        """build/apps.py's AppBuild for the app: its source where the fetch put it, files where they are."""
        app = self.spec(name)
        fetched = read_stamp(self.source_stamp(name)) if self.needs_fetch(app) else {"files": {}}
        if app.source.kind == "dir":
            source = app.source.dir
        else:
            source = Path(fetched["source"]["dir"])
        files = tuple(app_build.FileInput(source=item.source or Path(fetched["files"][str(index)]), dest=item.dest)
                      for index, item in enumerate(app.files))
        return app_build.AppBuild(
            name=name, source_dir=Path(source or ""), subdir=app.subdir,
            patches=tuple(list_patches(app.patches)) if app.patches else (), build=app.build,
            options=dict(app.options), prefix=app.prefix, files=files, toolchain=app.toolchain, sysroot=app.sysroot)

    def source_id(self, name: str) -> str:
        """The source's identity: the tarball's sha256 (and the directories stripped) or the commit, as the
        recipe pins them, or a local directory's content digest."""
        app = self.spec(name)
        if app.source.kind == "url":
            return f"sha256:{app.source.sha256}" + (f":strip{app.source.strip_components}"
                                                    if app.source.strip_components != 1 else "")
        if app.source.kind == "git":
            return f"git:{app.source.commit}"
        cache = self.layout.state / f"app-{name}-source.hashes.json"
        known = read_json_object(cache) or {}
        entries = rootfs_overlays.scan(app.source.dir or Path(), known,
                                       where=f"{self.recipe.path}: apps.{name}.source")
        write_stamp(cache, known)
        return f"tree:{rootfs_overlays.digest(entries)}"

    def env(self) -> dict[str, str]:
        """The build's environment: a build step's (builder.env and the reproducibility variables)."""
        return reproducible.step_env(self.recipe.builder.env, self.layout)

    def signature(self, name: str) -> dict:
        """apps.signature() of the app as it would build now, with the environment and the mounts' targets."""
        sdk = self.layout.sdk if self.layout.sdk.is_dir() else None
        signature = app_build.signature(self.build_spec(name), source_id=self.source_id(name), sdk_dir=sdk,
                                        builder=self.builder_hash())
        mounts = [{"target": m.target, "read_only": m.read_only} for m in self.recipe.builder.mounts]
        return {**signature, "env": self.env(), "mounts": mounts}

    def key(self, name: str) -> str | None:
        """The app's part of a cache key, portable across machines (see the module's doc); None while the SDK's
        digest is unknown (before its first fetch, unless the recipe pins its sha256)."""
        app, sdk = self.spec(name), self.sdk_digest()
        if sdk is None:
            return None
        try:
            files = [{"dest": item.dest, "sha256": item.sha256 or self._content(name, index, item.source)}
                     for index, item in enumerate(app.files)]
            inputs = {"source": self.source_id(name), "files": files,
                      "patches": [{"file": p.name, "sha256": sha256_file(p)} for p in self.patch_inputs(app)]}
            builder = self.builder_hash()
        except (UserError, OSError):
            return None  # a missing source, file or Dockerfile: the task that needs it says what is wrong
        settings = {k: v for k, v in app.to_dict().items() if k not in ("enabled", "source", "patches", "files")}
        mounts = [{"target": m.target, "read_only": m.read_only} for m in self.recipe.builder.mounts]
        return digest({"app": settings, "inputs": inputs, "sdk": sdk, "builder": builder,
                       "env": dict(self.recipe.builder.env), "mounts": mounts})

    def _content(self, name: str, index: int, source: Path | None) -> str:
        """A local file's (or directory's) content digest, re-hashed only when its size or time changed."""
        path = Path(source or "")
        cache = self.layout.state / f"app-{name}-files.hashes.json"
        known = read_json_object(cache) or {}
        if path.is_dir():
            seen = known.setdefault(str(path), {})
            value = rootfs_overlays.digest(rootfs_overlays.scan(path, seen, where=f"apps.{name}.files[{index}]"))
        else:
            info = path.stat()
            have = known.get(str(path))
            if isinstance(have, list) and have[:2] == [info.st_size, info.st_mtime_ns]:
                value = have[2]
            else:
                value = sha256_file(path)
                known[str(path)] = [info.st_size, info.st_mtime_ns, value]
        write_stamp(cache, known)
        return value

    def build(self, name: str) -> None:
        """Build the app in the builder image (build/apps.py) and stamp what it depended on."""
        signature = self.signature(name)
        image = read_stamp(self.layout.stamp("builder"))["tag"]
        result = app_build.build_app(self.build_spec(name), image=image, app_dir=self.layout.app(name),
                                     sdk_dir=self.layout.sdk, log_path=self.layout.app_log(name),
                                     env=self.env(), mounts=self.mounts(),
                                     echo=self.echo)
        toolchain = result.record["toolchain"]
        self.echo(f"app {name}: built with {toolchain.get('version') or toolchain['cxx']} "
                         f"({toolchain['origin']} toolchain) in {result.record['duration_s']:g} s; "
                         f"rootfs overlay {result.overlay_name}")
        write_stamp(self.stamp(name), {"signature": digest(signature),
                                       "root": rootfs_overlays.digest(rootfs_overlays.scan(result.root))})

    def current(self, name: str) -> bool:
        """Up to date: built with the signature it would have now, its install tree still there."""
        path = self.stamp(name)
        if not path.exists() or not (self.layout.app(name) / "root").is_dir():
            return False
        try:
            return read_stamp(path).get("signature") == digest(self.signature(name))
        except (UserError, OSError, KeyError):
            return False  # the task says what is wrong
