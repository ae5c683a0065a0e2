"""The driver matrix's report: verdicts, JUnit, Markdown, and the HTML page in a real headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from helpers import REPO
from rk3576_build.board import matrix_report, rkllm
from rk3576_build.core.errors import UserError

EXPECTED = "RKNPU driver: v0.9.8"
TOO_OLD = "W rkllm: Warning: Your rknpu driver version is too low, please upgrade to 0.9.7"


def runtime_output(driver: str, generate_ms: float, *, too_old: bool = False) -> str:
    """What the RKLLM runtime prints with RKLLM_LOG_LEVEL=1 (domain.md), parsed by rkllm.parse_output."""
    return "\n".join([
        "rkllm init start",
        f"I rkllm: rkllm-runtime version: 1.2.1, rknpu driver version: {driver}, platform: RK3576",
        *([TOO_OLD] if too_old else []),
        "rkllm init success", "robot: An NPU multiplies matrices.",
        "I rkllm:  Model init time (ms)  1500.00",
        "I rkllm:  Stage         Total Time (ms)  Tokens    Time per Token (ms)      Tokens per Second",
        f"I rkllm:  Prefill       200.00           34        6.00                     {1000 / 6:.2f}",
        f"I rkllm:  Generate      {32 * generate_ms:.2f}          32        {generate_ms:.2f}"
        f"                    {1000 / generate_ms:.2f}",
        "I rkllm:  Peak Memory Usage (GB)", "I rkllm:  1.12", ""])


def verify_report(driver: str, *, generate_ms: float = 45.0, too_old: bool = False) -> dict:
    """A verify report shaped as verify.verify_board writes it, its rkllm part from the real parser."""
    actual = f"RKNPU driver: v{driver}"
    match = actual == EXPECTED
    run = {"program": "/usr/bin/llm_demo", "exit_status": 0,
           "npu": {"samples": 4, "load": {"Core0": {"peak": 61, "mean": 40.5}, "Core1": {"peak": 58, "mean": 37.0}},
                   "freq_hz": None},
           **rkllm.parse_output(runtime_output(driver, generate_ms, too_old=too_old))}
    checks = [{"name": "console-login", "status": "passed", "required": True},
              {"name": "rknpu-version", "status": "passed" if match else "failed", "required": True,
               "actual": actual,
               "message": f"{actual} as expected" if match else f"expected {EXPECTED!r}, the board says {actual!r}"},
              {"name": "rkllm-runtime", "status": "failed" if too_old else "passed", "required": True,
               "message": f"the runtime says the driver is too old ({TOO_OLD})" if too_old else
               f"runtime 1.2.1 accepts rknpu driver {driver} on RK3576"},
              {"name": "rkllm-perf", "status": "passed", "required": True, "message": "fine"}]
    status = "passed" if match and not too_old else "failed"
    return {"console": "socket://127.0.0.1:1", "expected": EXPECTED, "actual": actual, "match": match,
            "status": status, "error": None, "checks": checks, "board": {}, "rkllm": run,
            "started": "2026-12-07T10:00:00+00:00", "durations_s": {"total": 9.0}}


def build(status: str = "ok", reason: str | None = None) -> dict:
    steps = [{"name": "lunch", "result": "restored", "duration_s": 0.02, "exit_status": 0},
             {"name": "kernel", "result": "built", "duration_s": 4.9, "exit_status": 0},
             {"name": "updateimg", "result": "built", "duration_s": 0.9, "exit_status": 0}]
    return {"status": status, "reason": reason, "exit_code": 0 if status == "ok" else 1, "duration_s": 12.5,
            "steps": steps if status == "ok" else steps[:1]}


def matrix_result(**extra) -> dict:
    """Four variants on two boards: a too-old driver, a version mismatch, a pass, a failed build;
    the second board could not be reached for 0.9.8."""
    variants = [{"name": v, "version": v, "url": f"http://127.0.0.1:1/rknpu_driver_{v}.tar.bz2",
                 "sha256": "ab" * 32, "build": build()} for v in ("0.9.6", "0.9.7", "0.9.8")]
    variants.append({"name": "0.9.9", "version": "0.9.9", "url": "http://127.0.0.1:1/x.tar.bz2", "sha256": "cd" * 32,
                     "build": build("failed", "build step kernel (`./build.sh kernel`) exited 2: "
                                              "rknpu_gem.c:12: error")})
    runs = []
    for version, board, speed in (("0.9.6", "qemu", 50.0), ("0.9.7", "qemu", 47.0), ("0.9.8", "qemu", 40.0),
                                  ("0.9.6", "bench", 52.0), ("0.9.7", "bench", 48.0)):
        runs.append({"variant": version, "board": board, "report_dir": f"/w/{version}/{board}", "error": None,
                     "report": verify_report(version, generate_ms=speed, too_old=version == "0.9.6")})
    runs.append({"variant": "0.9.8", "board": "bench", "report_dir": "/w/0.9.8/bench", "report": None,
                 "error": "serial console /dev/ttyUSB0 does not exist: check the board's USB debug cable"})
    return {"recipe": "demo", "expected": EXPECTED, "started": "2026-12-07T10:00:00+00:00", "duration_s": 61.2,
            "interrupted": False, "variants": variants,
            "boards": [{"name": "qemu", "kind": "virtual", "where": "QEMU"},
                       {"name": "bench", "kind": "console", "where": "/dev/ttyUSB0"}],
            "runs": runs, **extra}


def cell(cells, variant, board):
    return next(c for c in cells if c["variant"] == variant and c["board"] == board)


def test_verdicts_reasons_and_figures():
    cells = matrix_report.evaluate(matrix_result())
    assert len(cells) == 8
    old = cell(cells, "0.9.6", "qemu")
    assert old["verdict"] == "failed" and old["runtime_accepted"] is False and old["version_match"] is False
    assert old["reason"].startswith("RKLLM runtime rejects the driver") and "too old" in old["reason"]
    assert "version check" in old["reason"]  # both reasons, the runtime's first
    mid = cell(cells, "0.9.7", "qemu")
    assert mid["verdict"] == "failed" and mid["runtime_accepted"] is True and mid["version_match"] is False
    assert mid["reason"].startswith("version check: expected 'RKNPU driver: v0.9.8'")
    new = cell(cells, "0.9.8", "qemu")
    assert new["verdict"] == "passed" and new["reason"] is None and new["driver_reported"] == "v0.9.8"
    assert new["figures"]["generate_tokens_per_s"] == 25.0 and new["figures"]["npu_load_peak"] == 61
    assert new["figures"]["init_ms"] == 1500.0 and new["figures"]["peak_memory_gb"] == 1.12
    assert cell(cells, "0.9.8", "bench")["verdict"] == "error"
    assert "does not exist" in cell(cells, "0.9.8", "bench")["reason"]
    unbuilt = cell(cells, "0.9.9", "bench")
    assert unbuilt["verdict"] == "build failed" and "rknpu_gem.c:12" in unbuilt["reason"]
    assert matrix_report.overall(cells) == "error" and matrix_report.exit_code(cells) == 2
    only_failures = [c for c in cells if c["verdict"] != "error"]
    assert matrix_report.exit_code(only_failures) == 1
    assert matrix_report.exit_code([new]) == 0


def test_interrupted_run_marks_unverified_cells_not_run(tmp_path):
    result = matrix_result(interrupted=True)
    result["runs"] = result["runs"][:1]
    cells = matrix_report.evaluate(result)
    assert cell(cells, "0.9.7", "qemu")["verdict"] == "not run"
    assert "interrupted" in cell(cells, "0.9.7", "qemu")["reason"]
    paths = matrix_report.write_report(result, tmp_path)
    suite = ET.parse(paths["junit.xml"]).getroot().find("testsuite")
    assert int(suite.get("skipped")) == 5 and "interrupted" in paths["summary.md"].read_text()


def test_report_files(tmp_path):
    result = matrix_result()
    paths = matrix_report.write_report(result, tmp_path / "matrix")
    assert sorted(p.name for p in (tmp_path / "matrix").iterdir()) == ["index.html", "junit.xml", "matrix.json",
                                                                       "summary.md"]
    data = json.loads(paths["matrix.json"].read_text())
    assert data["status"] == "error" and len(data["cells"]) == 8
    # every verify report, and each variant's build with its step timings
    assert [r["report"]["actual"] for r in data["runs"] if r["report"]][:3] == \
        ["RKNPU driver: v0.9.6", "RKNPU driver: v0.9.7", "RKNPU driver: v0.9.8"]
    assert data["variants"][0]["build"]["steps"][1] == {"name": "kernel", "result": "built", "duration_s": 4.9,
                                                        "exit_status": 0}

    suite = ET.parse(paths["junit.xml"]).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("8", "6", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert "too old" in cases["driver 0.9.6 on qemu"].find("failure").get("message")
    assert cases["driver 0.9.9 on qemu"].find("failure").get("type") == "build"
    assert cases["driver 0.9.8 on bench"].find("error") is not None
    passed = cases["driver 0.9.8 on qemu"]
    assert passed.find("failure") is None and passed.find("error") is None
    props = {p.get("name"): p.get("value") for p in passed.iter("property")}
    assert props["generate_tokens_per_s"] == "25" and props["runtime_accepted"] == "true"

    summary = paths["summary.md"].read_text()
    assert summary.startswith("## RKNPU driver matrix: ERROR (1 of 8 passed)")
    rows = [line for line in summary.splitlines() if line.startswith("| 0.9.")]
    assert "| 0.9.8 | qemu | PASSED | v0.9.8 | yes | yes | 25 | 166.67 | 1500 | 1.12 | 61 |" in rows
    assert "| 0.9.7 | qemu | FAILED | v0.9.7 | no | yes |" in rows[2]
    assert "| 0.9.9 | build failed | 12.5 |" not in summary and "| 0.9.9 | failed |" in summary


def test_hostile_text_is_escaped_everywhere(tmp_path):
    """Names and messages come from boards and history files: no markup gets through."""
    result = matrix_result()
    result["boards"][1]["name"] = "b|<img src=http://canary.invalid/x>"
    for run in result["runs"]:
        if run["board"] == "bench":
            run["board"] = result["boards"][1]["name"]
    result["runs"][0]["report"]["checks"][2]["message"] = "</td><script>alert(1)</script>"
    paths = matrix_report.write_report(result, tmp_path)
    page = paths["index.html"].read_text()
    assert "<script" not in page and "<img" not in page and "&lt;img src=http://canary.invalid/x&gt;" in page
    assert "b\\|&lt;img" not in page and "b\\|<img" in paths["summary.md"].read_text()
    ET.parse(paths["junit.xml"])  # still well-formed


def test_history_round_trip_and_bad_lines(tmp_path):
    history = tmp_path / "history.jsonl"
    assert matrix_report.read_history(history) == []
    matrix_report.append_history(history, matrix_result())
    matrix_report.append_history(history, matrix_result(started="2026-12-08T10:00:00+00:00"))
    entries = matrix_report.read_history(history)
    assert [e["started"][:10] for e in entries] == ["2026-12-07", "2026-12-08"]
    assert cell(entries[0]["cells"], "0.9.8", "qemu")["figures"]["generate_tokens_per_s"] == 25.0
    assert "report" not in entries[0]["cells"][0]
    history.write_text(history.read_text() + "{broken\n")
    with pytest.raises(UserError, match=r"line 3 is not JSON"):
        matrix_report.read_history(history)
    history.write_text('{"started": "x"}\n')
    with pytest.raises(UserError, match=r"line 1 is not a matrix run"):
        matrix_report.read_history(history)


def test_nice_axis():
    assert matrix_report._nice_max(25.0) == (30.0, 10.0)
    assert matrix_report._nice_max(1663.0) == (2000.0, 500.0)
    assert matrix_report._nice_max(1.12) == (1.5, 0.5)
    assert matrix_report._nice_max(0) == (1.0, 0.25)


# --------------------------------------------------------------------------- in a real browser

CHROMIUM = shutil.which("chromium")


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Headless Chromium as root on a host with no network: no sandbox, no background traffic, and every
    host name resolves to nothing, so a request that tried to leave would fail and show in the net log."""
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           "--disable-default-apps", "--host-resolver-rules=MAP * ~NOTFOUND",
                           f"--user-data-dir={cwd / 'profile'}", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def page_requests(netlog: Path) -> list[str]:
    """The URLs the page asked for, from Chromium's net log (its own background requests, blocked by the
    resolver rule, have no origin; a page's have one, `null` for a file:// page)."""
    events = json.loads(netlog.read_text())
    start = events["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"]["url"] for e in events["events"] if e["type"] == start and "url" in e.get("params", {})
            and e["params"].get("initiator") != "not an origin"]


@pytest.mark.browser
def test_page_renders_in_headless_chromium(tmp_path):
    history = [matrix_report.history_entry(matrix_result(started=f"2026-12-0{day}T09:00:00+00:00"))
               for day in (3, 5)]
    cell(history[0]["cells"], "0.9.8", "qemu")["figures"]["generate_tokens_per_s"] = 19.0  # older, slower
    paths = matrix_report.write_report(matrix_result(), tmp_path / "matrix", history=history)
    page = paths["index.html"]
    text = page.read_text()
    # Nothing the page could load: no src/href/url() to anywhere, no script at all.
    assert not re.search(r"""(?:src|href)\s*=|url\(|<script|<link|@import""", text, re.I)

    netlog = tmp_path / "netlog.json"
    dom = chromium("--dump-dom", f"--log-net-log={netlog}", "--net-log-capture-mode=Everything",
                   page.as_uri(), cwd=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    rows = re.findall(r'<tr class="cell" data-variant="([^"]+)" data-board="([^"]+)" data-verdict="([^"]+)"', html)
    assert len(rows) == 8
    assert ("0.9.8", "qemu", "passed") in rows and ("0.9.6", "qemu", "failed") in rows
    assert ("0.9.9", "bench", "build failed") in rows and ("0.9.8", "bench", "error") in rows
    assert html.count('<span class="verdict v-passed">PASSED</span>') == 1
    # five figure charts per driver version and board, five over time, the build steps
    assert len(re.findall(r'<svg class="chart bars"', html)) == 5
    assert len(re.findall(r'<svg class="chart history"', html)) == 5
    assert len(re.findall(r'<svg class="chart steps"', html)) == 1
    bars = re.findall(r'<rect class="bar" data-variant="([^"]+)" data-board="([^"]+)" data-value="([^"]+)"', html)
    assert ("0.9.8", "qemu", "25") in bars
    assert len(re.findall(r'<polyline class="series"', html)) >= 5
    assert 'data-series="0.9.8 on qemu" data-value="19"' in html  # the history's point

    # No request left the page. The check sees one: a canary image on a copy of the page is requested
    # once the page's Content-Security-Policy is taken out, and blocked while it is in.
    assert page_requests(netlog) == []
    canary = page.with_name("canary.html")
    for policy, requests in ((True, []), (False, ["http://canary.invalid/x.png"])):
        copy = text.replace("</body>", '<img src="http://canary.invalid/x.png"></body>')
        canary.write_text(copy if policy else re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", copy))
        probe = chromium("--dump-dom", f"--log-net-log={netlog}", canary.as_uri(), cwd=tmp_path)
        assert probe.returncode == 0 and page_requests(netlog) == requests

    shot = tmp_path / "matrix-report.png"
    taken = chromium(f"--screenshot={shot}", "--window-size=1280,2400", "--hide-scrollbars", page.as_uri(),
                     cwd=tmp_path)
    assert taken.returncode == 0 and shot.stat().st_size > 20_000, taken.stderr[-2000:]
    keep = os.environ.get("MATRIX_SCREENSHOT")  # e.g. docs/matrix-report.png, to refresh the README's picture
    if keep:
        shutil.copyfile(shot, REPO / keep)
