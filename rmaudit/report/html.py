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

from rmaudit.report import charts as chartlib
from rmaudit.atomic import atomic_write_text
from rmaudit.report.diff import side_by_side
from rmaudit.report.formatting import checkpoint_name, format_value, one_line, truncate, verdict_text
from rmaudit.report.json_report import normalized, to_jsonable
from rmaudit.report.templates import STYLE, TEMPLATE
from rmaudit.results import SCHEMA_VERSION, AuditResult, ProbeResult

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


# Threshold key spellings the report pairs with a metric m; each gives (level, comparison that trips it).
# m_warn / m_fail / m_warn_at / m_fail_above trip at value >= limit; m_warn_below / m_fail_below at
# value < limit; warn_m / fail_m as m_warn / m_fail; max_m trips at value > limit, min_m at value < limit.
_THRESHOLD_PATTERNS = [
    (re.compile(r"^(?P<m>.+)_(?P<level>warn|fail)(?:_(?P<dir>at|above|below))?$"), None),
    (re.compile(r"^(?P<level>warn|fail)_(?P<m>.+?)(?:_(?P<dir>above|below))?$"), None),
    (re.compile(r"^(?P<dir>max|min)_(?P<m>.+)$"), "fail"),
]
_COMPARISONS = {None: "≥", "at": "≥", "above": "≥", "below": "<", "max": ">", "min": "<"}


@dataclass
class Limit:
    level: str  # warn or fail
    op: str  # ≥, > or <
    value: Any

    def tripped(self, metric: Any) -> bool:
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (metric, self.value)):
            return False
        return {"≥": metric >= self.value, ">": metric > self.value, "<": metric < self.value}[self.op]

    def __str__(self) -> str:
        return f"{self.op} {format_value(self.value)}"


def parse_threshold(key: str, metrics: dict[str, Any]) -> tuple[str, Limit] | None:
    """(metric name, limit) when ``key`` names a limit on one of ``metrics``, else None."""
    if key in metrics:
        return key, Limit("fail", "≥", None)
    for pattern, level in _THRESHOLD_PATTERNS:
        match = pattern.match(key)
        if match and match["m"] in metrics:
            return match["m"], Limit(level or match["level"], _COMPARISONS[match["dir"]], None)
    return None


def metric_rows(probe: ProbeResult) -> list[MetricRow]:
    """Metrics with their warn/fail limits side by side; limits matching no metric get their own rows."""
    limits: dict[str, dict[str, Limit]] = {}
    leftover = []
    for key, value in probe.thresholds.items():
        parsed = parse_threshold(key, probe.metrics)
        if parsed is None:
            leftover.append(MetricRow(f"{key} (threshold)", "", "", format_value(value)))
            continue
        metric, limit = parsed
        limit.value = value
        limits.setdefault(metric, {})[limit.level] = limit
    rows = []
    for name, value in probe.metrics.items():
        found = limits.get(name, {})
        warn, fail = found.get("warn"), found.get("fail")
        breach = "fail" if fail and fail.tripped(value) else "warn" if warn and warn.tripped(value) else ""
        rows.append(MetricRow(name, format_value(value), str(warn) if warn else "", str(fail) if fail else "", breach))
    return rows + leftover


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
    metrics: list[MetricRow]
    more_metrics: list[MetricRow]  # behind "show N more metrics"
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
    return ProbeView(probe, anchor, truncate(one_line(probe.summary), 220), metrics, more, charts, evidence)


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
