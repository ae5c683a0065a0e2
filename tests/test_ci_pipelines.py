"""The example CI pipelines (docs/ci/): they parse, validate against GitLab's and GitHub's own
schemas (check-jsonschema's vendored copies, offline), hang together (stages, needs), and every
`rk3576-build COMMAND` they run is a command the tool's help lists."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

import pytest
import yaml

from helpers import REPO, rk, unavailable

GITLAB = REPO / "docs" / "ci" / "gitlab-ci.yml"
GITHUB = REPO / "docs" / "ci" / "github-release.yml"
# What each pipeline must do: build, release, check, publish, pull, flash, verify, rebuild-check.
EXPECTED = {"run", "release", "verify-release", "publish", "pull", "flash", "verify", "rebuild-check"}
GLOBAL_WITH_VALUE = {"--recipe", "--workdir"}
GITLAB_KEYWORDS = {"stages", "variables", "default", "include", "workflow", "image", "services", "cache",
                   "before_script", "after_script"}


def registered_commands() -> set[str]:
    """The commands `rk3576-build --help` lists (its `commands:` section)."""
    result = rk("--help")
    assert result.returncode == 0, result.stderr
    section = result.stdout.split("\ncommands:\n", 1)
    assert len(section) == 2, result.stdout
    names = set()
    for line in section[1].splitlines():
        if not line.strip():
            if names:
                break
            continue
        match = re.match(r"^  ([a-z][a-z0-9-]*)\s", line)
        if match:
            names.add(match.group(1))
    assert {"run", "verify", "flash"} <= names, result.stdout
    return names


def tool_commands(script: str) -> list[str]:
    """The COMMAND of every `rk3576-build [GLOBAL OPTIONS] COMMAND ...` in a shell script."""
    found = []
    for line in script.replace("\\\n", " ").splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:  # an unterminated quote spanning lines: split what there is
            words = line.split()
        for index, word in enumerate(words):
            if word != "rk3576-build":
                continue
            rest = words[index + 1:]
            options = []
            while rest and rest[0].startswith("-"):
                options.append(rest[0])
                rest = rest[2:] if rest[0] in GLOBAL_WITH_VALUE else rest[1:]
            if not rest and {"--version", "--help", "-h"} & set(options):
                continue
            assert rest, f"`rk3576-build` without a command in: {line.strip()}"
            found.append(rest[0])
    return found


def gitlab_scripts(doc: dict) -> list[str]:
    scripts = []
    for name, job in doc.items():
        if name in GITLAB_KEYWORDS or name.startswith(".") or not isinstance(job, dict):
            continue
        for key in ("before_script", "script", "after_script"):
            scripts += job.get(key, [])
    return scripts


def github_scripts(doc: dict) -> list[str]:
    return [step["run"] for job in doc["jobs"].values() for step in job.get("steps", []) if "run" in step]


def test_the_pipelines_parse_and_hang_together():
    gitlab = yaml.safe_load(GITLAB.read_text())
    stages = gitlab["stages"]
    jobs = {name: job for name, job in gitlab.items() if name not in GITLAB_KEYWORDS}
    assert set(jobs) == {"firmware", "board", "rebuild-check"}
    for name, job in jobs.items():
        assert job["stage"] in stages, name
        assert job["script"], name
        for needed in job.get("needs", []):
            assert needed in jobs and stages.index(jobs[needed]["stage"]) <= stages.index(job["stage"]), name

    github = yaml.safe_load(GITHUB.read_text())
    assert github["name"] == "firmware"
    triggers = github.get("on", github.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"push", "schedule", "workflow_dispatch"} <= set(triggers)
    assert set(github["jobs"]) == {"firmware", "board", "rebuild-check"}
    for name, job in github["jobs"].items():
        assert job["runs-on"] and job["steps"], name
        needs = job.get("needs", [])
        for needed in [needs] if isinstance(needs, str) else needs:
            assert needed in github["jobs"], name
    # the board job takes the reference the firmware job published
    assert "steps.publish.outputs.ref" in github["jobs"]["firmware"]["outputs"]["ref"]
    assert any("needs.firmware.outputs.ref" in s for s in github_scripts(github))

    for scripts in (gitlab_scripts(gitlab), github_scripts(github)):
        assert set(tool_commands("\n".join(scripts))) >= EXPECTED


@pytest.mark.parametrize("path, schema, job", [(GITLAB, "vendor.gitlab-ci", "firmware"),
                                               (GITHUB, "vendor.github-workflows", "firmware")])
def test_the_pipelines_validate_against_their_platforms_schemas(path, schema, job, tmp_path):
    tool = shutil.which("check-jsonschema")
    if not tool:
        unavailable("check-jsonschema is not installed (pip install check-jsonschema: the test extra)")
    result = subprocess.run([tool, "--builtin-schema", schema, str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # and the same check refuses what the platform would refuse
    doc = yaml.safe_load(path.read_text())
    (doc["jobs"] if "jobs" in doc else doc)[job]["when" if "jobs" not in doc else "timeout-minutes"] = "whenever"
    broken = tmp_path / path.name
    broken.write_text(yaml.safe_dump(doc))
    result = subprocess.run([tool, "--builtin-schema", schema, str(broken)], capture_output=True, text=True)
    assert result.returncode == 1 and "whenever" in result.stdout, result.stdout + result.stderr


def test_every_tool_command_the_pipelines_run_is_registered():
    """release, verify-release, rebuild-check, publish and pull included (cli/commands.py registers them)."""
    known = registered_commands()
    used = set(tool_commands("\n".join(gitlab_scripts(yaml.safe_load(GITLAB.read_text())))))
    used |= set(tool_commands("\n".join(github_scripts(yaml.safe_load(GITHUB.read_text())))))
    assert used >= EXPECTED
    assert sorted(used - known) == [], f"the pipelines call commands rk3576-build does not have: {sorted(used - known)}"


def test_the_command_parser_reads_what_shells_run():
    script = """rk3576-build --recipe my.yaml -v release --out r \\
      --key k.pub
    x=1 rk3576-build --no-cache run  # comment rk3576-build nothing
    rk3576-build --version
    pip install 'rk3576-build[cache]'
    if true; then rk3576-build publish "oci://r/x:latest"; fi
    """
    assert tool_commands(script) == ["release", "run", "publish"]
