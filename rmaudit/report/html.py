"""``report.html``: one self-contained page (plotly.js inlined) that opens offline.

Safety: Jinja2 autoescapes every string; chart data travels as JSON inside
``<script type="application/json">`` with ``<``, ``>`` and ``&`` written as ``\\u003c`` etc.
so no string can close the script element; a Content-Security-Policy allows only this
page's own nonce-tagged scripts and no network access at all.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from rmaudit.findings import p_text
from rmaudit.report import charts as chartlib
from rmaudit.atomic import atomic_write_text
from rmaudit.report.diff import side_by_side
from rmaudit.report.formatting import checkpoint_name, format_value, one_line, truncate, verdict_text
from rmaudit.report.json_report import normalized, to_jsonable
from rmaudit.report.templates import STYLE, TEMPLATE
from rmaudit.results import SCHEMA_VERSION, AuditResult, ProbeResult, Status

CELL_CHARS = 180  # a longer cell shows this much and expands on click
CELL_MAX_CHARS = 20_000  # the expanded cell is cut here; report.json keeps everything
VISIBLE_ROWS = 10  # rows shown before "show N more rows"
MAX_ROWS = 500  # rows rendered at all
VISIBLE_METRICS = 12  # metric rows shown before "show N more metrics" (rows with limits always show)


@dataclass
class Cell:
    """A table cell: ``short`` is always shown, ``full`` (when set) on expanding."""

    short: str
    full: str | None = None
    kind: str = "text"  # "num" (right-aligned, no wrap), "text", or "long" (gets a minimum width)


@dataclass
class TableView:
    columns: list[str]
    rows: list[list[Cell]]
    omitted: int = 0
    visible: int = VISIBLE_ROWS


@dataclass
class MetricRow:
    name: str
    value: str
    warn: str = ""
    fail: str = ""
    breach: str = ""  # "warn" / "fail" when the value is past that threshold

    @property
    def has_limit(self) -> bool:
        return bool(self.warn or self.fail)


@dataclass
class ChartView:
    kind: str  # plotly, diff, table or invalid
    title: str = ""
    notes: list[str] = field(default_factory=list)
    wide: bool = False
    div_id: str = ""
    spec_json: Markup = Markup("")
    rows: list[Any] = field(default_factory=list)
    left_label: str = ""
    right_label: str = ""
    identical: bool = False
    cut: bool = False
    table: TableView | None = None
    problems: list[str] = field(default_factory=list)


def script_json(value: Any) -> Markup:
    """JSON that is safe inside ``<script type="application/json">`` (no ``</script>``, no ``<!--``)."""
    text = json.dumps(to_jsonable(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return Markup(text)


@functools.lru_cache(maxsize=1)
def plotly_js() -> Markup:
    """The plotly.js bundle shipped with the ``plotly`` package, ready to inline."""
    from plotly.offline import get_plotlyjs

    return Markup(get_plotlyjs().replace("</script", "<\\/script"))


def cell(value: Any) -> Cell:
    """A table cell for any JSON value: long text is truncated and expandable."""
    text = value if isinstance(value, str) else format_value(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Cell(text, kind="num")
    kind = "long" if len(text) > 40 else "text"
    if len(text) <= CELL_CHARS:
        return Cell(text, kind=kind)
    full = text if len(text) <= CELL_MAX_CHARS else text[:CELL_MAX_CHARS] + f"\n… ({len(text) - CELL_MAX_CHARS} more characters in report.json)"
    return Cell(truncate(text, CELL_CHARS), full, kind)


def table_view(rows: list[Any], columns: list[str] | None = None) -> TableView:
    """Rows of dicts (columns = union of keys, first-seen order) or lists (with ``columns``)."""
    shown = rows[:MAX_ROWS]
    if columns is None:
        columns = list(dict.fromkeys(k for row in shown if isinstance(row, dict) for k in row))
    cells = []
    for row in shown:
        values = [row.get(c) for c in columns] if isinstance(row, dict) else list(row) + [None] * (len(columns) - len(row))
        cells.append([cell(v) for v in values])
    return TableView([str(c) for c in columns], cells, omitted=len(rows) - len(shown))


@dataclass
class FindingRow:
    status: str
    message: str
    metric: str
    value: str
    limit: str  # "≥ 0.3": the comparison that trips it (or, for a pass, the limit it stayed clear of)


def finding_rows(probe: ProbeResult) -> list[FindingRow]:
    """Every finding, worst first: the reason for the status sits next to its number."""
    order = {Status.ERROR: 0, Status.FAIL: 1, Status.WARN: 2, Status.SKIP: 3, Status.PASS: 4}
    rows = []
    for f in sorted(probe.findings, key=lambda f: order[f.status]):
        limit = f"{f.comparison.value} {format_value(f.limit)}" if f.comparison is not None and f.limit is not None else ""
        value = format_value(f.value) if f.metric is not None else ""
        if f.p_value is not None:   # tested findings: raw p and the audit-wide Benjamini-Hochberg q
            value += f" (p {p_text(f.p_value)}" + (f", q {p_text(f.p_adjusted)})" if f.p_adjusted is not None else ")")
        rows.append(FindingRow(f.status.value, f.message, f.metric or "", value, limit))
    return rows


def metric_rows(probe: ProbeResult) -> list[MetricRow]:
    """Metrics with the limits configured on them; a metric a finding graded carries its status."""
    graded = {f.metric: f for f in probe.findings if f.metric is not None}
    rows = []
    for name, value in probe.metrics.items():
        lim = probe.limits.get(name) or {}
        op = lim.get("comparison", "")
        warn = f"{op} {format_value(lim['warn'])}" if lim.get("warn") is not None else ""
        fail = f"{op} {format_value(lim['fail'])}" if lim.get("fail") is not None else ""
        finding = graded.get(name)
        breach = finding.status.value if finding is not None and finding.status in (Status.WARN, Status.FAIL) else ""
        rows.append(MetricRow(name, format_value(value), warn, fail, breach))
    return rows


def chart_view(spec: Any, div_id: str) -> ChartView:
    """Everything the template needs to draw one chart spec (or to say why it cannot)."""
    problems = chartlib.validate_spec(spec)
    if problems:
        return ChartView("invalid", title=str(spec.get("title", "")) if isinstance(spec, dict) else "", problems=problems)
    notes = [str(spec["note"])] if spec.get("note") else []
    title = str(spec.get("title") or "")
    if spec["kind"] == "diff":
        rows, cut = side_by_side(spec["left"], spec["right"])
        return ChartView("diff", title=title, notes=notes, wide=True, rows=rows, cut=cut,
                         left_label=str(spec.get("left_label") or "left"),
                         right_label=str(spec.get("right_label") or "right"),
                         identical=spec["left"] == spec["right"])
    if spec["kind"] == "table":
        return ChartView("table", title=title, notes=notes, wide=True, table=table_view(spec["rows"], spec.get("columns")))
    figure = chartlib.plotly_figure(spec)
    notes = figure.pop("notes") + notes
    return ChartView("plotly", title=title, notes=notes, div_id=div_id, spec_json=script_json(figure))


@dataclass
class ProbeView:
    r: ProbeResult
    anchor: str
    short_summary: str
    findings: list[FindingRow]
    metrics: list[MetricRow]
    more_metrics: list[MetricRow]  # behind "show N more metrics"
    settings: list[tuple[str, str]]
    charts: list[ChartView]
    evidence: TableView | None


def split_metrics(rows: list[MetricRow], shown: int = VISIBLE_METRICS) -> tuple[list[MetricRow], list[MetricRow]]:
    """The first ``shown`` rows plus every row with a limit stay visible; the rest fold away."""
    visible = [r for i, r in enumerate(rows) if i < shown or r.has_limit]
    return visible, [r for r in rows if r not in visible]


def probe_view(probe: ProbeResult, index: int) -> ProbeView:
    anchor = f"probe-{index}-" + re.sub(r"[^a-z0-9_-]+", "-", probe.name.lower()).strip("-")
    charts = [chart_view(spec, f"{anchor}-chart-{n}") for n, spec in enumerate(chartlib.chart_specs(probe.chart))]
    evidence = table_view(probe.evidence) if probe.evidence else None
    metrics, more = split_metrics(metric_rows(probe))
    settings = [(str(k), format_value(v)) for k, v in probe.settings.items()]
    return ProbeView(probe, anchor, truncate(one_line(probe.summary), 220), finding_rows(probe), metrics, more,
                     settings, charts, evidence)


_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_html(result: AuditResult) -> str:
    """The complete text of ``report.html``."""
    result = normalized(result)
    nonce = secrets.token_urlsafe(18)
    csp = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
           "img-src data: blob:; font-src data:; base-uri 'none'; form-action 'none'")
    return _ENV.from_string(TEMPLATE).render(
        r=result,
        name=checkpoint_name(result.checkpoint),
        verdict=verdict_text(result).capitalize(),
        counts=[(s, n) for s, n in result.counts().items() if n],
        context=[(str(k), format_value(v)) for k, v in result.context.items()],
        probes=[probe_view(p, i) for i, p in enumerate(result.probes)],
        schema_version=SCHEMA_VERSION,
        style=Markup(STYLE),
        plotly_js=plotly_js(),
        nonce=nonce,
        csp=csp,
    )


def write_html(result: AuditResult, path: Path) -> Path:
    """Write ``report.html`` atomically. Returns ``path``."""
    return atomic_write_text(Path(path), render_html(result))
