"""The chart spec that probes fill in ``ProbeResult.chart``, its validation, and its plotly figures.

A probe describes *what* to plot with plain JSON (documented in ``docs/report-schema.md``);
this module decides *how*. ``chart`` is ``{}`` (no chart), one spec ``{"kind": ...}``, or
``{"charts": [spec, ...]}``. Plotly kinds (scatter, histogram, bar, box, reliability)
become plotly figure dicts; ``diff`` and ``table`` are drawn as HTML by ``html.py``.

Every string placed in a figure is HTML-escaped because plotly interprets a subset of
HTML tags in titles, labels and hover text; plotly decodes the entities back, so the
text shows literally.
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np

from rmaudit.report.json_report import to_jsonable

PLOTLY_KINDS = ("scatter", "histogram", "bar", "box", "reliability")
HTML_KINDS = ("diff", "table")
KINDS = PLOTLY_KINDS + HTML_KINDS
MAX_SCATTER_POINTS = 5000  # per series; more makes the report slow to open
COLORS = ["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#0ea5e9", "#64748b", "#db2777"]
REQUIRED = {
    "scatter": ("series",),
    "histogram": ("series",),
    "bar": ("categories", "series"),
    "box": ("series",),
    "reliability": ("bins",),
    "diff": ("left", "right"),
    "table": ("rows",),
}


def chart_specs(chart: dict[str, Any]) -> list[dict[str, Any]]:
    """The list of chart specs held by a ``ProbeResult.chart`` value."""
    if not chart:
        return []
    if "charts" in chart:
        charts = chart["charts"]
        return list(charts) if isinstance(charts, list) else [charts]
    return [chart]


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _check_numbers(values: Any, where: str, length: int | None = None) -> list[str]:
    if not isinstance(values, list):
        return [f"{where}: expected a list of numbers"]
    if not all(_is_number(v) for v in values):
        return [f"{where}: expected numbers (or null)"]
    if length is not None and len(values) != length:
        return [f"{where}: expected {length} values, got {len(values)}"]
    return []


def _check_series(spec: dict[str, Any], where: str, fields: tuple[str, ...], length: int | None = None) -> list[str]:
    series = spec.get("series")
    if not isinstance(series, list) or not series:
        return [f"{where}.series: expected a non-empty list"]
    problems: list[str] = []
    for i, s in enumerate(series):
        here = f"{where}.series[{i}]"
        if not isinstance(s, dict):
            problems.append(f"{here}: expected an object")
            continue
        for name in fields:
            want = len(s.get("x") or []) if name == "y" else length
            problems += _check_numbers(s.get(name), f"{here}.{name}", want)
    return problems


def _check_lines(spec: dict[str, Any], where: str) -> list[str]:
    problems = []
    for key, axis in (("hlines", "y"), ("vlines", "x")):
        for i, line in enumerate(spec.get(key) or []):
            if not isinstance(line, dict) or not _is_number(line.get(axis)) or line.get(axis) is None:
                problems.append(f"{where}.{key}[{i}]: expected {{\"{axis}\": number, \"label\": text}}")
    return problems


def validate_chart(chart: dict[str, Any]) -> list[str]:
    """Problems with a ``ProbeResult.chart`` value; ``[]`` means every spec can be drawn.

    Probe tests can assert ``validate_chart(result.chart) == []``.
    """
    if not isinstance(chart, dict):
        return ["chart: expected an object"]
    try:
        chart = to_jsonable(chart)  # validate what report.json will hold (numpy arrays become lists)
    except TypeError as exc:
        return [f"chart: {exc}"]
    problems: list[str] = []
    for n, spec in enumerate(chart_specs(chart)):
        where = f"charts[{n}]" if "charts" in chart else "chart"
        problems += validate_spec(spec, where)
    return problems


def validate_spec(spec: Any, where: str = "chart") -> list[str]:
    """Problems with one chart spec (see :func:`validate_chart`)."""
    if not isinstance(spec, dict):
        return [f"{where}: expected an object"]
    kind = spec.get("kind")
    if kind not in KINDS:
        return [f"{where}.kind: expected one of {', '.join(KINDS)}, got {kind!r}"]
    missing = [k for k in REQUIRED[kind] if k not in spec]
    if missing:
        return [f"{where}: kind {kind!r} needs {', '.join(missing)}"]
    problems = _check_lines(spec, where)
    if kind == "scatter":
        problems += _check_series(spec, where, ("x", "y"))
        fit = spec.get("fit")
        if fit is not None and not (isinstance(fit, dict) and all(
                isinstance(fit.get(k), (int, float)) for k in ("slope", "intercept"))):
            problems.append(f"{where}.fit: expected {{\"slope\": number, \"intercept\": number}}")
    elif kind in ("histogram", "box"):
        problems += _check_series(spec, where, ("values",))
    elif kind == "bar":
        if not isinstance(spec["categories"], list):
            problems.append(f"{where}.categories: expected a list")
        else:
            problems += _check_series(spec, where, ("values",), len(spec["categories"]))
    elif kind == "reliability":
        bins = spec["bins"]
        if not isinstance(bins, list) or not all(
                isinstance(b, dict) and all(k in b and _is_number(b[k]) for k in ("confidence", "accuracy", "count"))
                for b in bins):
            problems.append(f"{where}.bins: expected a list of {{confidence, accuracy, count}} numbers")
    elif kind == "diff":
        if not isinstance(spec["left"], str) or not isinstance(spec["right"], str):
            problems.append(f"{where}: left and right must be strings")
    elif kind == "table":
        if not isinstance(spec["rows"], list) or not all(isinstance(r, (dict, list)) for r in spec["rows"]):
            problems.append(f"{where}.rows: expected a list of objects (or lists with 'columns')")
    return problems


def plot_text(value: Any) -> str:
    """A string made safe for plotly's pseudo-HTML text: tags show literally, never render."""
    return html.escape(str(value), quote=False)


def _axis(label: Any, **extra: Any) -> dict[str, Any]:
    axis = {"gridcolor": "#e5e7eb", "zerolinecolor": "#cbd5e1", "automargin": True, **extra}
    if label:
        axis["title"] = {"text": plot_text(label)}
    return axis


def _layout(spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    layout = {
        "height": 360,
        "margin": {"l": 60, "r": 24, "t": 48 if spec.get("title") else 24, "b": 56},
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12, "color": "#1f2937"},
        "colorway": COLORS,
        "legend": {"orientation": "h", "y": -0.22},
        "xaxis": _axis(spec.get("x_label")),
        "yaxis": _axis(spec.get("y_label")),
        "shapes": [],
        "annotations": [],
        "hovermode": "closest",
    }
    if spec.get("title"):
        layout["title"] = {"text": plot_text(spec["title"]), "x": 0.01, "font": {"size": 14}}
    layout.update(extra)
    _add_reference_lines(spec, layout)
    return layout


def _add_reference_lines(spec: dict[str, Any], layout: dict[str, Any]) -> None:
    """Dashed threshold lines: ``hlines`` across the plot, ``vlines`` top to bottom."""
    for key, axis in (("hlines", "y"), ("vlines", "x")):
        for line in spec.get(key) or []:
            value = line[axis]
            other = "x" if axis == "y" else "y"
            layout["shapes"].append({
                "type": "line", f"{other}ref": "paper", f"{axis}ref": axis,
                f"{other}0": 0, f"{other}1": 1, f"{axis}0": value, f"{axis}1": value,
                "line": {"color": "#dc2626", "width": 1.5, "dash": "dash"},
            })
            if line.get("label"):
                layout["annotations"].append({  # at the right end of an hline, the top of a vline
                    f"{other}ref": "paper", f"{axis}ref": axis, other: 1, axis: value,
                    "text": plot_text(line["label"]), "showarrow": False,
                    "xanchor": "right" if axis == "y" else "left", "yanchor": "bottom" if axis == "y" else "top",
                    "xshift": 0 if axis == "y" else 4, "font": {"color": "#b91c1c", "size": 11},
                })


def _stride(values: list[Any], n_keep: int) -> list[Any]:
    step = math.ceil(len(values) / n_keep)
    return values[::step]


def _scatter(spec: dict[str, Any]) -> dict[str, Any]:
    data, notes = [], []
    xs_all: list[float] = []
    for i, s in enumerate(spec["series"]):
        x, y, text = s["x"], s["y"], s.get("text")
        if len(x) > MAX_SCATTER_POINTS:
            notes.append(f"{s.get('name') or 'series'}: showing {len(_stride(x, MAX_SCATTER_POINTS))} of {len(x)} points")
            x, y = _stride(x, MAX_SCATTER_POINTS), _stride(y, MAX_SCATTER_POINTS)
            text = _stride(text, MAX_SCATTER_POINTS) if text else None
        mode = s.get("mode", "markers")
        trace = {"type": "scatter", "mode": mode, "x": x, "y": y, "name": plot_text(s.get("name") or f"series {i + 1}"),
                 "marker": {"size": 6, "opacity": 0.65}}
        if text:
            trace.update(hovertext=[plot_text(t) for t in text], hoverinfo="x+y+text")
        data.append(trace)
        xs_all += [v for v in x if v is not None]
    fit = spec.get("fit")
    if fit and xs_all:
        x0, x1 = min(xs_all), max(xs_all)
        data.append({
            "type": "scatter", "mode": "lines", "x": [x0, x1],
            "y": [fit["intercept"] + fit["slope"] * x0, fit["intercept"] + fit["slope"] * x1],
            "name": plot_text(fit.get("label") or "least-squares fit"),
            "line": {"color": "#dc2626", "width": 2.5},
        })
    return {"data": data, "layout": _layout(spec), "notes": notes}


def _histogram(spec: dict[str, Any]) -> dict[str, Any]:
    """Binned in Python with shared edges, so a million values cost a few dozen bars."""
    series = [(s.get("name"), np.asarray([v for v in s["values"] if v is not None], dtype=float))
              for s in spec["series"]]
    finite = np.concatenate([v[np.isfinite(v)] for _, v in series]) if series else np.array([])
    if finite.size == 0:
        return {"data": [], "layout": _layout(spec), "notes": ["no finite values to plot"]}
    edges = np.histogram_bin_edges(finite, bins=int(spec.get("bins") or 30))
    centers, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    data = []
    for i, (name, values) in enumerate(series):
        counts, _ = np.histogram(values[np.isfinite(values)], bins=edges)
        data.append({"type": "bar", "x": centers.tolist(), "y": counts.tolist(), "width": widths.tolist(),
                     "name": plot_text(name or f"series {i + 1}"), "opacity": 0.7 if len(series) > 1 else 0.9,
                     "marker": {"line": {"width": 0.5, "color": "#ffffff"}}})
    layout = _layout(spec, barmode="overlay", bargap=0)
    layout["yaxis"] = _axis(spec.get("y_label") or "count")
    return {"data": data, "layout": layout, "notes": []}


def _bar(spec: dict[str, Any]) -> dict[str, Any]:
    horizontal = bool(spec.get("horizontal"))
    categories = [plot_text(c) for c in spec["categories"]]
    data = []
    for i, s in enumerate(spec["series"]):
        trace = {"type": "bar", "name": plot_text(s.get("name") or f"series {i + 1}"),
                 "orientation": "h" if horizontal else "v",
                 "x": s["values"] if horizontal else categories, "y": categories if horizontal else s["values"]}
        if s.get("error"):  # "error_minus" makes the bar asymmetric (a bootstrap interval)
            error = {"type": "data", "array": s["error"], "visible": True}
            if s.get("error_minus"):
                error.update(arrayminus=s["error_minus"], symmetric=False)
            trace["error_x" if horizontal else "error_y"] = error
        data.append(trace)
    cat_axis = "yaxis" if horizontal else "xaxis"
    layout = _layout(spec, barmode="group", showlegend=len(data) > 1, bargap=0.45 if len(categories) < 4 else 0.25)
    layout[cat_axis]["type"] = "category"
    return {"data": data, "layout": layout, "notes": []}


def _box(spec: dict[str, Any]) -> dict[str, Any]:
    data = []
    for i, s in enumerate(spec["series"]):
        trace = {"type": "box", "name": plot_text(s.get("name") or f"series {i + 1}"), "y": s["values"],
                 "boxpoints": "all", "jitter": 0.4, "pointpos": 0, "marker": {"size": 5, "opacity": 0.7}}
        if s.get("text"):
            trace.update(hovertext=[plot_text(t) for t in s["text"]], hoverinfo="y+text")
        data.append(trace)
    layout = _layout(spec, showlegend=False)
    layout["xaxis"]["type"] = "category"
    return {"data": data, "layout": layout, "notes": []}


def _reliability(spec: dict[str, Any]) -> dict[str, Any]:
    bins = [b for b in spec["bins"] if b.get("count")]
    counts = [b["count"] for b in bins]
    biggest = max(counts, default=1)
    data = [
        {"type": "scatter", "mode": "lines", "x": [0, 1], "y": [0, 1], "name": "perfect calibration",
         "line": {"color": "#94a3b8", "dash": "dot"}, "hoverinfo": "skip"},
        {"type": "scatter", "mode": "lines+markers", "name": "model",
         "x": [b["confidence"] for b in bins], "y": [b["accuracy"] for b in bins],
         "hovertext": [f"n = {c}" for c in counts], "hoverinfo": "x+y+text",
         "marker": {"size": [8 + 14 * math.sqrt(c / biggest) for c in counts], "color": COLORS[0]},
         "line": {"color": COLORS[0]}},
    ]
    spec = {"x_label": "predicted P(chosen ≻ rejected)", "y_label": "observed accuracy", **spec}
    layout = _layout(spec)
    layout["xaxis"]["range"] = [0, 1]
    layout["yaxis"]["range"] = [0, 1.02]
    notes = [f"ECE = {spec['ece']:.4f}"] if isinstance(spec.get("ece"), (int, float)) else []
    return {"data": data, "layout": layout, "notes": notes}


BUILDERS = {"scatter": _scatter, "histogram": _histogram, "bar": _bar, "box": _box, "reliability": _reliability}


def plotly_figure(spec: dict[str, Any]) -> dict[str, Any]:
    """``{"data", "layout", "config", "notes"}`` for a valid plotly-kind spec."""
    figure = BUILDERS[spec["kind"]](spec)
    figure["config"] = {"displaylogo": False, "responsive": True}
    return figure
