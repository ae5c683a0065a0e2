"""The driver matrix's report: matrix.json, junit.xml, summary.md and a self-contained index.html.

Data in, files out. `write_report(result, out_dir)` renders what the matrix run collected
(each variant's build with its step timings, each board's verify report); `evaluate` turns
that into one verdict per variant and board. The HTML page needs no network: inline CSS,
charts drawn here as inline SVG (no charting library, no script, no font, no image from
elsewhere). With a history (JSON lines, one earlier matrix run each) it also charts the
RKLLM figures over time.
"""

from __future__ import annotations

import html
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

from rk3576_build.core.errors import UserError
from rk3576_build.core.files import atomic_write

FORMAT = 1
JSON_NAME, JUNIT_NAME, SUMMARY_NAME, HTML_NAME = "matrix.json", "junit.xml", "summary.md", "index.html"
# What a cell can come to, worst first (the order the overall status and exit code follow).
VERDICTS = ("error", "build failed", "failed", "not run", "passed")
# The RKLLM figures a cell carries and the charts show: key, label, unit, which way is better.
FIGURES = (
    ("generate_tokens_per_s", "Generate speed", "tokens/s", "higher"),
    ("prefill_tokens_per_s", "Prefill speed", "tokens/s", "higher"),
    ("init_ms", "Model init time", "ms", "lower"),
    ("peak_memory_gb", "Peak memory", "GB", "lower"),
    ("npu_load_peak", "NPU load, busiest core", "%", None),
)
HISTORY_RUNS = 50  # the charts over time show this many runs, the latest ones
LABEL_W = 80  # px a run's date label needs on the time axis
DIGITS = {"init_ms": 0, "npu_load_peak": 0}  # decimals shown (2 otherwise)
PALETTE = ("#2f6fb3", "#e07b39", "#3a9a5b", "#8e5ab5", "#c9443c", "#7a7a7a", "#b39a2f", "#2fa3b3")


# --------------------------------------------------------------------------- verdicts

def figures_of(report: Mapping | None) -> dict:
    """The RKLLM figures of one verify report (None where the run did not produce them)."""
    run = (report or {}).get("rkllm") or {}
    loads = [peak for core in ((run.get("npu") or {}).get("load") or {}).values()
             if isinstance(core, Mapping) and (peak := _number(core.get("peak"))) is not None]
    return {
        "generate_tokens_per_s": _number((run.get("generate") or {}).get("tokens_per_s")),
        "prefill_tokens_per_s": _number((run.get("prefill") or {}).get("tokens_per_s")),
        "init_ms": _number(run.get("init_ms")),
        "peak_memory_gb": _number(run.get("peak_memory_gb")),
        "npu_load_peak": max(loads) if loads else None,
    }


def _number(value) -> float | None:
    """A finite number, else None (a history file is not trusted to hold numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _check(report: Mapping, name: str) -> Mapping | None:
    return next((c for c in report.get("checks") or [] if c.get("name") == name), None)


def verdict_of(report: Mapping) -> tuple[str, str | None]:
    """A verify report's verdict and its main reason: a driver the runtime rejects first, then the
    version check, then any other failed check."""
    status = report.get("status")
    if status == "passed":
        return "passed", None
    if status not in ("failed", "error"):
        return "error", f"verify report without a status ({status!r})"
    failed = [c for c in report.get("checks") or [] if c.get("status") in ("failed", "error")]
    runtime = _check(report, "rkllm-runtime")
    version = _check(report, "rknpu-version")
    reasons = []
    if runtime is not None and runtime.get("status") == "failed":
        reasons.append(f"RKLLM runtime rejects the driver: {runtime.get('message')}")
    if version is not None and version.get("status") == "failed":
        reasons.append(f"version check: {version.get('message')}")
    reasons += [f"{c.get('name')}: {c.get('message') or c.get('status')}" for c in failed
                if c is not runtime and c is not version]
    if status == "error":
        return "error", report.get("error") or (reasons[0] if reasons else "verify could not run")
    return "failed", "; ".join(reasons) or "a check failed"


def evaluate(result: Mapping) -> list[dict]:
    """One cell per variant and board, in the result's order: verdict, reason, the table's columns."""
    runs = {(r["variant"], r["board"]): r for r in result.get("runs") or []}
    cells = []
    for variant in result.get("variants") or []:
        build = variant.get("build") or {}
        for board in result.get("boards") or []:
            cell = {"variant": variant["name"], "version": variant.get("version"), "board": board["name"],
                    "verdict": "not run", "reason": None, "driver_reported": None, "version_match": None,
                    "runtime_accepted": None, "figures": figures_of(None), "report_dir": None}
            run = runs.get((variant["name"], board["name"]))
            if build.get("status") == "failed":
                cell.update(verdict="build failed", reason=build.get("reason") or "the build failed")
            elif run is None:
                cell["reason"] = "interrupted before this board verified the image" \
                    if result.get("interrupted") else "not verified"
            elif run.get("report") is None:
                cell.update(verdict="error", reason=run.get("error") or "no verify report")
            else:
                report = run["report"]
                runtime = _check(report, "rkllm-runtime")
                verdict, reason = verdict_of(report)
                actual = report.get("actual")
                cell.update(verdict=verdict, reason=reason,
                            driver_reported=actual.removeprefix("RKNPU driver: ") if actual else None,
                            version_match=bool(report.get("match")) if actual is not None else None,
                            runtime_accepted=None if runtime is None or runtime.get("status") == "error"
                            else runtime.get("status") == "passed",
                            figures=figures_of(report))
            cell["report_dir"] = run.get("report_dir") if run else None
            cells.append(cell)
    return cells


def overall(cells: Sequence[Mapping]) -> str:
    """The worst verdict of all cells ("passed" only when every cell passed; "error" with none)."""
    if not cells:
        return "error"
    return min((c["verdict"] for c in cells), key=VERDICTS.index)


def exit_code(cells: Sequence[Mapping]) -> int:
    """0 every cell passed; 2 a board could not be verified (error); 1 otherwise (a failure)."""
    worst = overall(cells)
    return 0 if worst == "passed" else 2 if worst == "error" else 1


# --------------------------------------------------------------------------- files

def write_report(result: Mapping, out_dir: Path, *, history: Sequence[Mapping] = ()) -> dict[str, Path]:
    """Write the four report files into `out_dir`; `history`: earlier runs (read_history) for the
    charts over time. Returns name -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = evaluate(result)
    data = {**result, "format": FORMAT, "status": overall(cells), "cells": cells}
    paths = {name: out_dir / name for name in (JSON_NAME, JUNIT_NAME, SUMMARY_NAME, HTML_NAME)}
    atomic_write(paths[JSON_NAME], json.dumps(data, indent=1) + "\n")
    atomic_write(paths[JUNIT_NAME], junit(result, cells))
    atomic_write(paths[SUMMARY_NAME], markdown(result, cells))
    atomic_write(paths[HTML_NAME], page(result, cells, history))
    return paths




def history_entry(result: Mapping) -> dict:
    """What one run adds to a history file: its cells' verdicts and figures, no reports."""
    cells = evaluate(result)
    return {"format": FORMAT, "started": result.get("started"), "recipe": result.get("recipe"),
            "expected": result.get("expected"), "status": overall(cells),
            "cells": [{k: c[k] for k in ("variant", "version", "board", "verdict", "figures")} for c in cells]}


def read_history(path: Path) -> list[dict]:
    """Earlier runs from a history file (JSON lines); a missing file is an empty history."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the history file {path}: {exc}") from None
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"history file {path} line {number} is not JSON ({exc.msg}): fix or remove "
                            "that line") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("cells"), list):
            raise UserError(f"history file {path} line {number} is not a matrix run (no \"cells\" list): "
                            "give a file that `matrix --history` wrote")
        entries.append(entry)
    return entries


def append_history(path: Path, result: Mapping) -> None:
    """Add this run to the history file (created when missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(history_entry(result), sort_keys=True) + "\n")


# --------------------------------------------------------------------------- JUnit

def junit(result: Mapping, cells: Sequence[Mapping]) -> str:
    """One testcase per variant and board; a failed or unbuilt one has a failure, an unreachable
    board an error, an unverified one (interrupted) is skipped."""
    counts = {v: sum(c["verdict"] == v for c in cells) for v in VERDICTS}
    suite = ET.Element("testsuite", name="rk3576-driver-matrix", tests=str(len(cells)),
                       failures=str(counts["failed"] + counts["build failed"]), errors=str(counts["error"]),
                       skipped=str(counts["not run"]), time=str(result.get("duration_s") or 0),
                       timestamp=str(result.get("started") or ""))
    props = ET.SubElement(suite, "properties")
    for key in ("recipe", "expected"):
        ET.SubElement(props, "property", name=key, value=str(result.get(key) or ""))
    for cell in cells:
        case = ET.SubElement(suite, "testcase", classname=f"rk3576.matrix.{cell['board']}",
                             name=f"driver {cell['variant']} on {cell['board']}")
        case_props = ET.SubElement(case, "properties")
        for key in ("driver_reported", "version_match", "runtime_accepted"):
            ET.SubElement(case_props, "property", name=key, value=_text(cell[key]))
        for key, value in cell["figures"].items():
            if value is not None:
                ET.SubElement(case_props, "property", name=key, value=f"{value:g}")
        reason = cell["reason"] or ""
        if cell["verdict"] == "failed":
            ET.SubElement(case, "failure", message=reason, type="verify")
        elif cell["verdict"] == "build failed":
            ET.SubElement(case, "failure", message=f"build failed: {reason}", type="build")
        elif cell["verdict"] == "error":
            ET.SubElement(case, "error", message=reason)
        elif cell["verdict"] == "not run":
            ET.SubElement(case, "skipped", message=reason)
        if cell["report_dir"]:
            ET.SubElement(case, "system-out").text = f"verify report: {cell['report_dir']}"
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _text(value) -> str:
    return "" if value is None else ("true" if value is True else "false" if value is False else str(value))


# --------------------------------------------------------------------------- Markdown

COLUMNS = ("driver", "board", "verdict", "driver reported", "version match", "runtime accepted",
           "generate tokens/s", "prefill tokens/s", "init ms", "peak memory GB", "NPU load %")  # figures: FIGURES


def _yes_no(value) -> str:
    return "-" if value is None else "yes" if value else "no"


def _fig(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:.0f}"


def _row(cell: Mapping) -> list[str]:
    f = cell["figures"]
    return [str(cell["variant"]), str(cell["board"]), cell["verdict"].upper(), cell["driver_reported"] or "-",
            _yes_no(cell["version_match"]), _yes_no(cell["runtime_accepted"]),
            *(_fig(f[key], DIGITS.get(key, 2)) for key, *_ in FIGURES)]


def _md(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown(result: Mapping, cells: Sequence[Mapping]) -> str:
    """The summary a CI job posts: the verdict table, the reasons, the builds."""
    passed = sum(c["verdict"] == "passed" for c in cells)
    lines = [f"## RKNPU driver matrix: {overall(cells).upper()} ({passed} of {len(cells)} passed)", "",
             f"Expected `{_md(result.get('expected') or '-')}` · recipe {_md(result.get('recipe') or '-')} · "
             f"{_md(result.get('started') or '-')} · {_fig(result.get('duration_s'), 0)} s"
             + (" · **interrupted**" if result.get("interrupted") else ""), "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_md(v) for v in _row(c)) + " |" for c in cells]
    reasons = [c for c in cells if c["reason"]]
    if reasons:
        lines += ["", "### Why"]
        lines += [f"- **{_md(c['variant'])} on {_md(c['board'])}** ({c['verdict']}): {_md(c['reason'])}"
                  for c in reasons]
    lines += ["", "### Builds", "", "| driver | build | time s | built | restored | up to date |",
              "|---|---|---|---|---|---|"]
    for variant in result.get("variants") or []:
        build = variant.get("build") or {}
        steps = build.get("steps") or []
        by = {kind: ", ".join(s["name"] for s in steps if s.get("result") == kind) or "-"
              for kind in ("built", "restored", "up to date")}
        status = build.get("status") or "not run"
        lines.append(f"| {_md(variant['name'])} | {_md(status)} | {_fig(build.get('duration_s'), 1)} | "
                     f"{_md(by['built'])} | {_md(by['restored'])} | {_md(by['up to date'])} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- SVG charts

def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _nice_max(value: float) -> tuple[float, float]:
    """An axis top at or above `value` and its tick step (1, 2, 2.5 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0, 0.25
    raw = value / 4
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    return step * math.ceil(value / step - 1e-9), step


def _tick(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else f"{value:.3g}"


def _axes(width: int, height: int, left: int, top: int, bottom: int, top_value: float, step: float,
          unit: str) -> list[str]:
    plot_h = height - top - bottom
    out = []
    value = 0.0
    while value <= top_value + step / 2:
        y = top + plot_h - plot_h * value / top_value
        out.append(f'<line class="grid" x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_e(_tick(value))}</text>')
        value += step
    out.append(f'<text class="unit" x="{left - 6}" y="{top - 10}" text-anchor="end">{_e(unit)}</text>')
    return out


def bar_chart(key: str, title: str, unit: str, better: str | None, groups: Sequence[str],
              series: Sequence[str], values: Mapping[tuple[str, str], float | None]) -> str:
    """Grouped bars: one group per driver version, one bar per board; a missing value leaves a gap
    marked "n/a"."""
    width, height, left, top, bottom = 520, 260, 56, 34, 56
    known = [v for v in values.values() if v is not None]
    top_value, step = _nice_max(max(known) * 1.08 if known else 0)  # room for the value above the bar
    plot_w, plot_h = width - left - 10, height - top - bottom
    group_w = plot_w / max(1, len(groups))
    bar_w = min(48.0, group_w * 0.8 / max(1, len(series)))
    hint = {"higher": "higher is better", "lower": "lower is better"}.get(better or "", "")
    parts = [f'<svg class="chart bars" data-figure="{_e(key)}" xmlns="http://www.w3.org/2000/svg" '
             f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             f'aria-label="{_e(title)} per driver version and board">',
             f'<text class="title" x="{left}" y="16">{_e(title)}'
             + (f' <tspan class="hint">({_e(hint)})</tspan>' if hint else "") + "</text>"]
    parts += _axes(width, height, left, top, bottom, top_value, step, unit)
    for gi, group in enumerate(groups):
        x0 = left + gi * group_w + (group_w - bar_w * len(series)) / 2
        for si, name in enumerate(series):
            x = x0 + si * bar_w
            value = values.get((group, name))
            if value is None:
                parts.append(f'<text class="na" x="{x + bar_w / 2:.1f}" y="{top + plot_h - 4}" '
                             f'text-anchor="middle">n/a</text>')
                continue
            h = plot_h * value / top_value
            parts.append(f'<rect class="bar" data-variant="{_e(group)}" data-board="{_e(name)}" '
                         f'data-value="{value:g}" x="{x + 1:.1f}" y="{top + plot_h - h:.1f}" '
                         f'width="{bar_w - 2:.1f}" height="{h:.1f}" fill="{PALETTE[si % len(PALETTE)]}">'
                         f'<title>{_e(group)} on {_e(name)}: {value:g} {_e(unit)}</title></rect>'
                         f'<text class="value" x="{x + bar_w / 2:.1f}" y="{top + plot_h - h - 4:.1f}" '
                         f'text-anchor="middle">{_e(_fig(value, DIGITS.get(key, 2)))}</text>')
        parts.append(f'<text class="label" x="{left + gi * group_w + group_w / 2:.1f}" y="{top + plot_h + 18}" '
                     f'text-anchor="middle">{_e(group)}</text>')
    parts.append(f'<text class="axis" x="{left + plot_w / 2:.1f}" y="{height - 22}" text-anchor="middle">'
                 f'driver version</text>')
    parts += _legend(series, left, height - 6)
    parts.append("</svg>")
    return "".join(parts)


def _legend(names: Sequence[str], x: float, y: float, *, first: int = 0, spacing: float | None = None) -> list[str]:
    """Colour keys in a row; the i-th name (from `first`) has the i-th palette colour."""
    out = []
    for i, name in enumerate(names, first):
        out.append(f'<rect class="key" x="{x:.1f}" y="{y - 9}" width="10" height="10" '
                   f'fill="{PALETTE[i % len(PALETTE)]}"/><text class="legend" x="{x + 14:.1f}" y="{y}">'
                   f'{_e(name)}</text>')
        x += spacing or 24 + 7 * len(str(name))
    return out


def line_chart(key: str, title: str, unit: str, labels: Sequence[str],
               series: Mapping[str, Sequence[float | None]]) -> str:
    """One line per series over the runs in `labels` (oldest first); gaps where a run has no value."""
    series = {name: values for name, values in series.items() if any(v is not None for v in values)}
    legend_rows = math.ceil(len(series) / 3)
    width, height, left, top, bottom = 520, 240 + 14 * legend_rows, 56, 34, 50 + 14 * legend_rows
    known = [v for values in series.values() for v in values if v is not None]
    top_value, step = _nice_max(max(known) if known else 0)
    plot_w, plot_h = width - left - 20, height - top - bottom
    dx = plot_w / max(1, len(labels) - 1)
    parts = [f'<svg class="chart history" data-figure="{_e(key)}" xmlns="http://www.w3.org/2000/svg" '
             f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             f'aria-label="{_e(title)} over time">',
             f'<text class="title" x="{left}" y="16">{_e(title)} over time</text>']
    parts += _axes(width, height, left, top, bottom, top_value, step, unit)
    every = max(1, math.ceil(LABEL_W / dx)) if len(labels) > 1 else 1  # labels never overlap
    shown, last = list(range(0, len(labels), every)), len(labels) - 1
    if shown[-1] != last:  # the latest run is labelled, in place of its neighbour if they would overlap
        if len(shown) > 1 and (last - shown[-1]) * dx < LABEL_W:
            shown.pop()
        shown.append(last)
    for i in shown:
        anchor = "start" if i == 0 else "end" if i == len(labels) - 1 else "middle"
        parts.append(f'<text class="label" x="{left + i * dx:.1f}" y="{top + plot_h + 16}" '
                     f'text-anchor="{anchor}">{_e(labels[i])}</text>')
    for si, (name, values) in enumerate(series.items()):
        colour = PALETTE[si % len(PALETTE)]
        runs: list[list[str]] = [[]]
        for i, value in enumerate(values):
            if value is None:
                runs.append([])
                continue
            y = top + plot_h - plot_h * value / top_value
            runs[-1].append(f"{left + i * dx:.1f},{y:.1f}")
            parts.append(f'<circle class="point" data-series="{_e(name)}" data-value="{value:g}" '
                         f'cx="{left + i * dx:.1f}" cy="{y:.1f}" r="3" fill="{colour}">'
                         f'<title>{_e(name)}, {_e(labels[i])}: {value:g} {_e(unit)}</title></circle>')
        for points in runs:
            if len(points) > 1:
                parts.append(f'<polyline class="series" data-series="{_e(name)}" fill="none" stroke="{colour}" '
                             f'stroke-width="2" points="{" ".join(points)}"/>')
    legend_y = top + plot_h + 38
    for row, start in enumerate(range(0, len(series), 3)):
        parts += _legend(list(series)[start:start + 3], left, legend_y + row * 14, first=start, spacing=150)
    parts.append("</svg>")
    return "".join(parts)


def steps_chart(variants: Sequence[Mapping]) -> str:
    """Each variant's build time, stacked by step; a restored step is hatched lighter."""
    names: list[str] = []
    for variant in variants:
        for step in (variant.get("build") or {}).get("steps") or []:
            if step["name"] not in names:
                names.append(step["name"])
    width, row_h, left, top = 520, 26, 70, 30
    height = top + row_h * max(1, len(variants)) + 40
    totals = [sum(_number(s.get("duration_s")) or 0 for s in (v.get("build") or {}).get("steps") or [])
              for v in variants]
    top_value, step = _nice_max(max(totals, default=0))
    plot_w = width - left - 20
    parts = [f'<svg class="chart steps" data-figure="build_steps" xmlns="http://www.w3.org/2000/svg" '
             f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             f'aria-label="build time per step">',
             f'<text class="title" x="{left}" y="16">Build steps (s; pale: restored from the build cache '
             f'or up to date)</text>']
    value = 0.0
    while value <= top_value + step / 2:
        x = left + plot_w * value / top_value
        parts.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - 34}"/>'
                     f'<text class="tick" x="{x:.1f}" y="{height - 20}" text-anchor="middle">{_e(_tick(value))}</text>')
        value += step
    for row, variant in enumerate(variants):
        y = top + row * row_h
        parts.append(f'<text class="label" x="{left - 6}" y="{y + 16}" text-anchor="end">{_e(variant["name"])}</text>')
        x = float(left)
        for s in (variant.get("build") or {}).get("steps") or []:
            w = plot_w * (_number(s.get("duration_s")) or 0) / top_value
            colour = PALETTE[names.index(s["name"]) % len(PALETTE)]
            built = s.get("result") == "built"
            parts.append(f'<rect class="step" data-variant="{_e(variant["name"])}" data-step="{_e(s["name"])}" '
                         f'data-result="{_e(s.get("result"))}" x="{x:.1f}" y="{y + 4}" width="{max(w, 0.5):.1f}" '
                         f'height="{row_h - 8}" fill="{colour}" fill-opacity="{1 if built else 0.3}">'
                         f'<title>{_e(s["name"])}: {_e(s.get("result"))}, {_fig(_number(s.get("duration_s")))} s'
                         f'</title></rect>')
            x += w
    parts += _legend(names, left, height - 4)
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- HTML

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d2329;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#5b6670;margin-bottom:12px}
table{border-collapse:collapse;margin:6px 0 4px}
th,td{border:1px solid #d6dbe0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f2f4f6;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{font-weight:700;border-radius:3px;padding:1px 6px;white-space:nowrap;color:#fff}
.v-passed{background:#2e8b4e}.v-failed,.v-build-failed{background:#c0392b}.v-error{background:#8e44ad}.v-not-run{background:#7f8c8d}
.badge{font-size:18px}.reason{color:#444;font-size:13px;max-width:520px}
.charts{display:flex;flex-wrap:wrap;gap:16px}
svg.chart{background:#fbfcfd;border:1px solid #e3e7eb;border-radius:4px}
svg .title{font-weight:600;font-size:13px}svg .hint{font-weight:400;fill:#6b7680}
svg text{font-family:system-ui,sans-serif;font-size:11px;fill:#2b3137}
svg .grid{stroke:#e3e7eb;stroke-width:1}svg .tick,svg .unit,svg .na{fill:#6b7680}
svg .value{font-size:10px}
code{background:#f2f4f6;padding:0 3px;border-radius:3px}
"""


def _verdict_badge(verdict: str) -> str:
    return f'<span class="verdict v-{verdict.replace(" ", "-")}">{_e(verdict.upper())}</span>'


def page(result: Mapping, cells: Sequence[Mapping], history: Sequence[Mapping] = ()) -> str:
    """The self-contained HTML report."""
    variants = result.get("variants") or []
    boards = [b["name"] for b in result.get("boards") or []]
    groups = [v["name"] for v in variants]
    passed = sum(c["verdict"] == "passed" for c in cells)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           # No request may leave the page: nothing loads from anywhere, not even this file's folder.
           "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
           "style-src 'unsafe-inline'; img-src data:\">",
           f"<title>RKNPU driver matrix: {_e(overall(cells).upper())}</title>",
           f"<style>{CSS}</style></head><body>",
           f'<h1>RKNPU driver matrix <span class="badge">{_verdict_badge(overall(cells))}</span></h1>',
           f'<div class="meta">{passed} of {len(cells)} passed · expected <code>{_e(result.get("expected") or "-")}'
           f'</code> · recipe {_e(result.get("recipe") or "-")} · started {_e(result.get("started") or "-")} · '
           f'{_e(_fig(result.get("duration_s"), 0))} s'
           + (" · <strong>interrupted</strong>" if result.get("interrupted") else "") + "</div>",
           "<h2>Verdicts</h2>", '<table id="verdicts"><thead><tr>'
           + "".join(f"<th>{_e(c)}</th>" for c in COLUMNS) + "<th>why</th></tr></thead><tbody>"]
    for cell in cells:
        row = _row(cell)
        tds = [f"<td>{_e(row[0])}</td>", f"<td>{_e(row[1])}</td>", f"<td>{_verdict_badge(cell['verdict'])}</td>"]
        tds += [f"<td>{_e(v)}</td>" for v in row[3:6]] + [f'<td class="num">{_e(v)}</td>' for v in row[6:]]
        tds.append(f'<td class="reason">{_e(cell["reason"] or "")}</td>')
        out.append(f'<tr class="cell" data-variant="{_e(cell["variant"])}" data-board="{_e(cell["board"])}" '
                   f'data-verdict="{_e(cell["verdict"])}">' + "".join(tds) + "</tr>")
    out.append("</tbody></table>")

    out.append('<h2>RKLLM figures per driver version and board</h2><div class="charts" id="figures">')
    for key, title, unit, better in FIGURES:
        values = {(c["variant"], c["board"]): c["figures"][key] for c in cells}
        out.append(bar_chart(key, title, unit, better, groups, boards, values))
    out.append("</div>")

    if history:
        runs = [*history[-(HISTORY_RUNS - 1):], history_entry(result)]
        labels = [str(r.get("started") or "?")[5:16].replace("T", " ") for r in runs]  # MM-DD HH:MM
        names = []
        for run in runs:
            for cell in run.get("cells") or []:
                if isinstance(cell, Mapping):
                    name = f"{cell.get('variant')} on {cell.get('board')}"
                    if name not in names:
                        names.append(name)
        out.append(f'<h2>Over time ({len(runs)} runs)</h2><div class="charts" id="history">')
        for key, title, unit, _ in FIGURES:
            series: dict[str, list[float | None]] = {name: [] for name in names}
            for run in runs:
                found = {f"{c.get('variant')} on {c.get('board')}": _number((c.get("figures") or {}).get(key))
                         for c in run.get("cells") or [] if isinstance(c, Mapping)
                         and isinstance(c.get("figures") or {}, Mapping)}
                for name in names:
                    series[name].append(found.get(name))
            out.append(line_chart(key, title, unit, labels, series))
        out.append("</div>")

    out.append('<h2>Builds</h2><table id="builds"><thead><tr><th>driver</th><th>sha256</th><th>build</th>'
               "<th>time s</th><th>steps</th><th>why</th></tr></thead><tbody>")
    for variant in variants:
        build = variant.get("build") or {}
        steps = ", ".join(f"{s['name']} {_fig(_number(s.get('duration_s')))} s ({s.get('result')})"
                          for s in build.get("steps") or [])
        status = build.get("status") or "not run"
        out.append(f'<tr class="build" data-variant="{_e(variant["name"])}" data-status="{_e(status)}">'
                   f"<td>{_e(variant['name'])}</td><td><code>{_e((variant.get('sha256') or '-')[:16])}</code></td>"
                   f"<td>{_e(status)}</td><td class=\"num\">{_e(_fig(build.get('duration_s'), 1))}</td>"
                   f"<td>{_e(steps or '-')}</td><td class=\"reason\">{_e(build.get('reason') or '')}</td></tr>")
    out.append("</tbody></table>")
    if any((v.get("build") or {}).get("steps") for v in variants):
        out.append(f'<div class="charts">{steps_chart(variants)}</div>')
    out.append('<p class="meta">Written by rk3576-build matrix; the full verify reports are in matrix.json, '
               "one JUnit testcase per driver and board in junit.xml.</p></body></html>")
    return "\n".join(out) + "\n"
