"""The Jinja2 template and stylesheet of ``report.html`` (kept in Python so they ship with the package)."""

from __future__ import annotations

STYLE = r"""
:root { --fg:#111827; --muted:#6b7280; --line:#e5e7eb; --bg:#f8fafc; --card:#ffffff;
  --pass:#15803d; --pass-bg:#dcfce7; --warn:#a16207; --warn-bg:#fef9c3; --fail:#b91c1c; --fail-bg:#fee2e2;
  --skip:#475569; --skip-bg:#e2e8f0; --error:#7e22ce; --error-bg:#f3e8ff; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg); font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; }
main { max-width:1180px; margin:0 auto; padding:24px 28px 48px; }
header.top { margin-bottom:16px; }
header.top h1 { margin:0; font-size:22px; font-weight:650; letter-spacing:-0.01em; }
header.top h1 .brand { color:var(--muted); font-weight:500; }
.ckpt { font-family:ui-monospace,SFMono-Regular,Menlo,monospace; font-size:13px; color:var(--muted); word-break:break-all; }
.facts { display:grid; grid-template-columns:repeat(auto-fill, minmax(270px, 1fr)); gap:2px 20px; margin-top:10px; font-size:12px; color:var(--muted); }
.facts > div { display:flex; gap:8px; min-width:0; } .facts .k { font-weight:600; white-space:nowrap; }
.facts .v { overflow-wrap:anywhere; }
.verdict { border-radius:12px; padding:18px 22px; margin:8px 0 20px; display:flex; align-items:center; gap:18px; flex-wrap:wrap; }
.verdict.pass { background:var(--pass-bg); border:1px solid #86efac; }
.verdict.fail { background:var(--fail-bg); border:1px solid #fca5a5; }
.verdict .mark { font-size:30px; line-height:1; font-weight:700; }
.verdict.pass .mark, .verdict.pass h2 { color:var(--pass); } .verdict.fail .mark, .verdict.fail h2 { color:var(--fail); }
.verdict h2 { margin:0; font-size:20px; } .verdict p { margin:2px 0 0; color:#374151; }
.chips { margin-left:auto; display:flex; gap:6px; flex-wrap:wrap; }
.card { background:var(--card); border:1px solid var(--line); border-radius:12px; padding:18px 22px; margin-bottom:20px; box-shadow:0 1px 2px rgba(0,0,0,.04); }
.section-heading { margin:28px 0 10px; font-size:20px; border-bottom:2px solid #d1d5db; padding-bottom:4px; }
.card h2 { margin:0 0 4px; font-size:18px; display:flex; align-items:center; gap:10px; flex-wrap:wrap; }
.card h3 { margin:18px 0 8px; font-size:13px; text-transform:uppercase; letter-spacing:.05em; color:var(--muted); }
.badge { display:inline-block; padding:1px 9px; border-radius:999px; font-size:12px; font-weight:650; text-transform:uppercase; letter-spacing:.03em; white-space:nowrap; }
.badge.pass { color:var(--pass); background:var(--pass-bg); } .badge.warn { color:var(--warn); background:var(--warn-bg); }
.badge.fail { color:var(--fail); background:var(--fail-bg); } .badge.skip { color:var(--skip); background:var(--skip-bg); }
.badge.error { color:var(--error); background:var(--error-bg); }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-weight:600; color:#374151; background:#f9fafb; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
tr.breach-fail td, tr.breach-error td { background:#fef2f2; } tr.breach-warn td { background:#fefce8; }
table.overview td:first-child a { font-weight:600; color:var(--fg); text-decoration:none; font-family:ui-monospace,SFMono-Regular,Menlo,monospace; }
table.overview td:first-child a:hover { text-decoration:underline; }
.name { font-family:ui-monospace,SFMono-Regular,Menlo,monospace; }
.why { color:#374151; margin:6px 0 0; white-space:pre-line; }
.summary { margin:10px 0 0; padding:10px 14px; border-radius:8px; background:#f9fafb; border-left:4px solid var(--line); white-space:pre-wrap; }
.summary.pass { border-color:var(--pass); } .summary.warn { border-color:#eab308; } .summary.fail { border-color:var(--fail); }
.summary.skip { border-color:var(--skip); } .summary.error { border-color:var(--error); }
.charts { display:grid; grid-template-columns:repeat(auto-fit, minmax(460px, 1fr)); gap:16px; }
.chart { border:1px solid var(--line); border-radius:10px; padding:8px; min-width:0; }
.chart.wide { grid-column:1 / -1; }
.chart .title { font-weight:600; font-size:13px; margin:2px 4px 6px; }
.rm-plot { width:100%; height:360px; }
.note { color:var(--muted); font-size:12px; margin:4px 4px 0; }
.invalid { color:var(--fail); background:var(--fail-bg); padding:8px 12px; border-radius:8px; font-size:12px; }
.cell { white-space:pre-wrap; overflow-wrap:break-word; max-width:560px; }
table.evidence td.num { text-align:right; white-space:nowrap; font-variant-numeric:tabular-nums; }
table.evidence td.long .cell { min-width:16em; }
details > summary { cursor:pointer; color:#1d4ed8; }
details.cell-more > summary { color:inherit; list-style:none; } details.cell-more > summary::after { content:" ▸ more"; color:#1d4ed8; font-size:12px; }
details.cell-more[open] > summary { display:none; }
details.rows-more > summary { margin:8px 0; font-size:13px; }
.scroll { overflow-x:auto; }
table.diff { font-family:ui-monospace,SFMono-Regular,Menlo,monospace; font-size:12px; table-layout:fixed; }
table.diff td { padding:1px 6px; border:none; white-space:pre-wrap; word-break:break-all; }
table.diff td.ln { color:#9ca3af; text-align:right; user-select:none; }
table.diff tr.replace td.l, table.diff tr.delete td.l { background:#fef2f2; }
table.diff tr.replace td.r, table.diff tr.insert td.r { background:#f0fdf4; }
table.diff td.l .chg { background:#fecaca; } table.diff td.r .chg { background:#bbf7d0; }
footer { color:var(--muted); font-size:12px; text-align:center; margin-top:28px; }
"""

TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="rmaudit {{ r.rmaudit_version }}">
<title>rmaudit · {{ name }} · {{ r.gate }}</title>
<style>{{ style }}</style>
</head>
<body data-charts="pending">
<main>
<header class="top">
  <h1><span class="brand">rmaudit</span> · {{ name }}</h1>
  <div class="ckpt">{{ r.checkpoint }}</div>
  <div class="facts">
    {% if r.created_at %}<div><span class="k">created</span><span class="v">{{ r.created_at }}</span></div>{% endif %}
    {% if r.rmaudit_version %}<div><span class="k">rmaudit</span><span class="v">{{ r.rmaudit_version }}</span></div>{% endif %}
    {% for key, value in context %}<div><span class="k">{{ key }}</span><span class="v">{{ value }}</span></div>{% endfor %}
  </div>
</header>

<section class="verdict {{ r.gate }}" id="verdict">
  <div class="mark">{{ "✔" if r.gate == "pass" else "✖" }}</div>
  <div>
    <h2>{{ verdict }}</h2>
    <p>Gate fails on <b>{{ r.fail_on.value }}</b>{{ " or worse" if r.fail_on.value == "warn" }}; a probe error always fails it.</p>
    {% if r.skipped %}<p>Skipped (not checked): {{ r.skipped|join(", ") }}</p>{% endif %}
    {% if r.unmet_requirements %}<p><b>Required but not checked: {{ r.unmet_requirements|join(", ") }}</b></p>{% endif %}
  </div>
  <div class="chips">
    {% for status, n in counts %}<span class="badge {{ status }}">{{ n }} {{ status }}</span>{% endfor %}
  </div>
</section>

<section class="card">
  <table class="overview">
    <thead><tr><th>Probe</th><th>Status</th><th>Summary</th><th class="num">Time</th></tr></thead>
    <tbody>
    {% for p in probes %}
      <tr><td><a href="#{{ p.anchor }}">{{ p.r.name }}</a></td>
          <td><span class="badge {{ p.r.status.value }}">{{ p.r.status.value }}</span></td>
          <td>{{ p.short_summary }}</td><td class="num">{{ "%.1f"|format(p.r.seconds) }}s</td></tr>
    {% endfor %}
    </tbody>
  </table>
</section>

{% macro table(view) -%}
{% if view.rows %}
<div class="scroll"><table class="evidence">
  <thead><tr>{% for c in view.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
  <tbody>{% for row in view.rows[:view.visible] %}{{ table_row(row) }}{% endfor %}</tbody>
</table></div>
{% if view.rows|length > view.visible %}
<details class="rows-more"><summary>Show {{ view.rows|length - view.visible }} more rows</summary>
<div class="scroll"><table class="evidence">
  <thead><tr>{% for c in view.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
  <tbody>{% for row in view.rows[view.visible:] %}{{ table_row(row) }}{% endfor %}</tbody>
</table></div></details>
{% endif %}
{% if view.omitted %}<p class="note">{{ view.omitted }} more rows are in report.json.</p>{% endif %}
{% else %}<p class="note">No rows.</p>{% endif %}
{%- endmacro %}

{% macro table_row(row) -%}
<tr>{% for cell in row %}<td class="{{ cell.kind }}"><div class="cell">{% if cell.full is none %}{{ cell.short }}{% else %}<details class="cell-more"><summary>{{ cell.short }}</summary>{{ cell.full }}</details>{% endif %}</div></td>{% endfor %}</tr>
{%- endmacro %}

{% macro metrics_table(rows) -%}
<div class="scroll"><table class="metrics">
  <colgroup><col><col style="width:16%"><col style="width:16%"><col style="width:16%"></colgroup>
  <thead><tr><th>Metric</th><th class="num">Value</th><th class="num">Warn at</th><th class="num">Fail at</th></tr></thead>
  <tbody>{% for m in rows %}
    <tr class="{{ 'breach-' ~ m.breach if m.breach }}"><td class="name">{{ m.name }}</td><td class="num">{{ m.value }}</td>
        <td class="num">{{ m.warn }}</td><td class="num">{{ m.fail }}</td></tr>
  {% endfor %}</tbody>
</table></div>
{%- endmacro %}

{% for p in probes %}
{% if p.r.section and (loop.first or probes[loop.index0 - 1].r.section != p.r.section) %}
<h2 class="section-heading" id="section-{{ loop.index0 }}">{{ p.r.section }}</h2>
{% endif %}
<section class="card probe" id="{{ p.anchor }}">
  <h2><span class="name">{{ p.r.name }}</span> <span class="badge {{ p.r.status.value }}">{{ p.r.status.value }}</span></h2>
  {% if p.r.description %}<p class="why">{{ p.r.description }}</p>{% endif %}
  <div class="summary {{ p.r.status.value }}">{{ p.r.summary }}</div>

  {% if p.findings %}
  <h3>Findings</h3>
  <div class="scroll"><table class="findings">
    <colgroup><col style="width:8%"><col><col style="width:18%"><col style="width:12%"><col style="width:12%"></colgroup>
    <thead><tr><th>Status</th><th>Finding</th><th>Metric</th><th class="num">Value</th><th class="num">Limit</th></tr></thead>
    <tbody>{% for f in p.findings %}
      <tr class="{{ 'breach-' ~ f.status if f.status in ('warn', 'fail', 'error') }}"><td><span class="badge {{ f.status }}">{{ f.status }}</span></td>
        <td>{{ f.message }}</td><td class="name">{{ f.metric }}</td><td class="num">{{ f.value }}</td><td class="num">{{ f.limit }}</td></tr>
    {% endfor %}</tbody>
  </table></div>
  {% endif %}

  {% if p.metrics %}
  <h3>Metrics</h3>
  {{ metrics_table(p.metrics) }}
  {% if p.more_metrics %}
  <details class="rows-more"><summary>Show {{ p.more_metrics|length }} more metrics</summary>{{ metrics_table(p.more_metrics) }}</details>
  {% endif %}
  {% endif %}

  {% if p.settings %}
  <details class="rows-more"><summary>Settings ({{ p.settings|length }})</summary>
  <div class="scroll"><table class="metrics"><tbody>{% for k, v in p.settings %}<tr><td class="name">{{ k }}</td><td class="num">{{ v }}</td></tr>{% endfor %}</tbody></table></div>
  </details>
  {% endif %}

  {% if p.charts %}
  <h3>Charts</h3>
  <div class="charts">
  {% for c in p.charts %}
    <figure class="chart{{ ' wide' if c.wide }}" style="margin:0">
      {% if c.title and c.kind in ("diff", "table", "invalid") %}<div class="title">{{ c.title }}</div>{% endif %}
      {% if c.kind == "plotly" %}
        <div class="rm-plot" id="{{ c.div_id }}" data-spec="{{ c.div_id }}-spec" role="img" aria-label="{{ c.title or p.r.name }}"></div>
        <script type="application/json" id="{{ c.div_id }}-spec">{{ c.spec_json }}</script>
      {% elif c.kind == "diff" %}
        <div class="scroll"><table class="diff">
          <colgroup><col style="width:40px"><col><col style="width:40px"><col></colgroup>
          <thead><tr><th colspan="2">{{ c.left_label }}</th><th colspan="2">{{ c.right_label }}</th></tr></thead>
          <tbody>{% for d in c.rows %}<tr class="{{ d.tag }}"><td class="ln">{{ d.left_no or "" }}</td><td class="l">{{ d.left }}</td><td class="ln">{{ d.right_no or "" }}</td><td class="r">{{ d.right }}</td></tr>{% endfor %}</tbody>
        </table></div>
        {% if c.identical %}<p class="note">The two texts are identical.</p>{% endif %}
        {% if c.cut %}<p class="note">Texts were cut for display; the full texts are in report.json.</p>{% endif %}
      {% elif c.kind == "table" %}
        {{ table(c.table) }}
      {% else %}
        <div class="invalid">This chart could not be drawn: {{ c.problems|join("; ") }}</div>
      {% endif %}
      {% for note in c.notes %}<p class="note">{{ note }}</p>{% endfor %}
    </figure>
  {% endfor %}
  </div>
  {% endif %}

  {% if p.evidence %}
  <h3>Evidence ({{ p.r.evidence|length }} rows)</h3>
  {{ table(p.evidence) }}
  {% endif %}
</section>
{% endfor %}

<footer>Generated by rmaudit {{ r.rmaudit_version }} · report schema {{ schema_version }} · self-contained: opens offline, loads nothing from the network.</footer>
</main>
<script nonce="{{ nonce }}">{{ plotly_js }}</script>
<script nonce="{{ nonce }}">
(function () {
  var body = document.body;
  if (typeof Plotly === "undefined") { body.setAttribute("data-charts", "failed"); return; }
  var jobs = Array.prototype.map.call(document.querySelectorAll(".rm-plot"), function (div) {
    var fig = JSON.parse(document.getElementById(div.getAttribute("data-spec")).textContent);
    return Plotly.newPlot(div, fig.data, fig.layout, fig.config);
  });
  Promise.all(jobs).then(
    function () { body.setAttribute("data-charts", "rendered"); },
    function (err) { body.setAttribute("data-charts", "failed"); console.error(err); });
})();
</script>
</body>
</html>
"""
