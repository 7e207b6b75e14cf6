"""report.html without a browser: self-contained, escaped, charts validated, diff and tables built right."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest

from helpers_report import HOSTILE, SCRIPT, sample_audit_result
from rmaudit.report import validate_chart, write_html
from rmaudit.report.charts import MAX_SCATTER_POINTS, plotly_figure
from rmaudit.report.diff import side_by_side
from rmaudit.findings import Comparison, Finding
from rmaudit.report.html import VISIBLE_ROWS, finding_rows, metric_rows, render_html, script_json
from rmaudit.results import AuditResult, ProbeResult, Status


@pytest.fixture(scope="module")
def page() -> str:
    return render_html(sample_audit_result())


def _outside_json_scripts(html_text: str) -> str:
    """The page with the plotly bundle and the chart JSON removed: everything left is markup."""
    html_text = re.sub(r'<script type="application/json"[^>]*>.*?</script>', "", html_text, flags=re.S)
    return re.sub(r"<script nonce=[^>]*>.*?</script>", "", html_text, flags=re.S)


def test_page_is_self_contained(page: str) -> None:
    assert page.count("<script nonce=") == 2  # the inlined plotly.js and the renderer
    assert "Plotly" in page and len(page) > 3_000_000  # the bundle itself, not a link to it
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", _outside_json_scripts(page))
    assert "default-src 'none'" in html.unescape(page)  # CSP: nothing may be fetched, no injected script may run


def test_hostile_strings_never_appear_raw_outside_scripts(page: str) -> None:
    markup = _outside_json_scripts(page)
    for hostile in HOSTILE:
        assert hostile not in markup
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in markup
    assert "<img src=x" not in markup
    assert "<script" not in markup  # every script element in the page is one of ours


def test_chart_json_cannot_close_its_script_tag(page: str) -> None:
    blocks = re.findall(r'<script type="application/json" id="([^"]+)">(.*?)</script>', page, flags=re.S)
    assert len(blocks) == 7
    for _, body in blocks:
        assert "<" not in body and ">" not in body
        json.loads(body)
    # the hostile label survives, entity-escaped for plotly's pseudo-HTML text
    figures = [json.dumps(json.loads(body), ensure_ascii=False) for _, body in blocks]
    assert any("&lt;script&gt;window.__pwned=1&lt;/script&gt;" in f for f in figures)


def test_script_json_escapes_breakouts() -> None:
    text = script_json({"a": "</script><!--<script>&\u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(str(text)) == {"a": "</script><!--<script>&\u2028"}


def test_every_probe_has_a_section_with_badge_and_description(page: str) -> None:
    result = sample_audit_result()
    for i, probe in enumerate(result.probes):
        section = re.search(rf'<section class="card probe" id="probe-{i}-[^"]*">(.*?)</section>', page, re.S)
        assert section, probe.name
        body = section.group(1)
        assert f'<span class="badge {probe.status.value}">' in body
        assert probe.description.split("\n")[0] in body.replace("&#39;", "'")


def test_evidence_rows_truncate_and_expand(page: str) -> None:
    assert f"Show {22 - VISIBLE_ROWS} more rows" in page  # length_bias has 22 evidence rows
    assert '<details class="cell-more"><summary>Sure! Here is a very long answer.' in page


def test_findings_sit_next_to_their_numbers_and_metrics_show_their_limits() -> None:
    """The reason for a fail is the finding that caused it: the example report of 0.1 failed
    length_bias on the accuracy gap while R² was under its limit, and nothing said so."""
    probe = ProbeResult(
        "length_bias", Status.FAIL, "R² 0.205 of reward on length",
        findings=[Finding(Status.PASS, "length explains 20.5% of the variance", "r2", 0.205, 0.1, Comparison.AT_LEAST),
                  Finding(Status.WARN, "within-pair", "within_pair_r2", 0.114, 0.1, Comparison.AT_LEAST),
                  Finding(Status.FAIL, "accuracy 0.41 vs 0.77", "abs_accuracy_gap", 0.36, 0.3, Comparison.AT_LEAST)],
        metrics={"r2": 0.205, "within_pair_r2": 0.114, "abs_accuracy_gap": 0.36, "n_pairs": 200},
        limits={"r2": {"comparison": ">=", "warn": 0.1, "fail": 0.3},
                "within_pair_r2": {"comparison": ">=", "warn": 0.1, "fail": 0.3},
                "abs_accuracy_gap": {"comparison": ">=", "warn": 0.15, "fail": 0.3}},
        settings={"alpha": 0.01})
    found = finding_rows(probe)
    assert [(f.status, f.metric, f.value, f.limit) for f in found] == [
        ("fail", "abs_accuracy_gap", "0.36", ">= 0.3"), ("warn", "within_pair_r2", "0.114", ">= 0.1"),
        ("pass", "r2", "0.205", ">= 0.1")]
    rows = {r.name: r for r in metric_rows(probe)}
    assert (rows["r2"].warn, rows["r2"].fail, rows["r2"].breach) == (">= 0.1", ">= 0.3", "")
    assert rows["within_pair_r2"].breach == "warn" and rows["abs_accuracy_gap"].breach == "fail"
    assert rows["n_pairs"].breach == "" and rows["n_pairs"].fail == ""
    page = render_html(AuditResult("ckpt", [probe]))
    fail_row = page[page.index("accuracy 0.41 vs 0.77") - 300: page.index("accuracy 0.41 vs 0.77") + 300]
    assert "breach-fail" in fail_row and "abs_accuracy_gap" in fail_row and "&gt;= 0.3" in fail_row
    assert "alpha" in page  # settings are shown, apart from the limits


@pytest.mark.parametrize("chart, problem", [
    ({"kind": "pie"}, "chart.kind"),
    ({"kind": "scatter", "series": [{"x": [1, 2], "y": [1]}]}, "chart.series[0].y: expected 2 values"),
    ({"kind": "bar", "categories": ["a", "b"], "series": [{"values": [1]}]}, "expected 2 values, got 1"),
    ({"kind": "histogram", "series": [{"values": ["x"]}]}, "expected numbers"),
    ({"kind": "diff", "left": "a"}, "needs right"),
    ({"charts": [{"kind": "box", "series": []}]}, "charts[0].series"),
    ({"kind": "reliability", "bins": [{"confidence": 0.5}]}, "chart.bins"),
    ({"kind": "bar", "categories": ["a"], "series": [{"values": [1]}], "hlines": [{"label": "x"}]}, "hlines[0]"),
])
def test_validate_chart_names_the_problem(chart: dict, problem: str) -> None:
    problems = validate_chart(chart)
    assert problems and problem in " ".join(problems)


def test_sample_charts_are_valid_and_invalid_ones_render_a_notice() -> None:
    for probe in sample_audit_result().probes:
        assert validate_chart(probe.chart) == [], probe.name
    bad = ProbeResult("x", Status.PASS, "", chart={"kind": "scatter", "title": SCRIPT, "series": "nope"})
    text = render_html(AuditResult("ckpt", [bad]))
    assert "This chart could not be drawn" in text and "chart.series: expected a non-empty list" in text
    assert SCRIPT not in _outside_json_scripts(text)


def test_histogram_is_binned_exactly_in_python() -> None:
    values = [0.0] * 7 + [1.0] * 3 + [None]
    fig = plotly_figure({"kind": "histogram", "bins": 2, "series": [{"name": "m", "values": values}]})
    assert fig["data"][0]["y"] == [7, 3]


def test_large_scatter_is_thinned_with_a_note() -> None:
    n = MAX_SCATTER_POINTS * 3 + 1
    fig = plotly_figure({"kind": "scatter", "series": [{"name": "r", "x": list(range(n)), "y": list(range(n))}],
                         "fit": {"slope": 1.0, "intercept": 0.0}})
    assert len(fig["data"][0]["x"]) <= MAX_SCATTER_POINTS
    assert fig["data"][1]["x"] == [0, n - 1]  # the fit spans the full data range
    assert fig["notes"] and f"of {n} points" in fig["notes"][0]


def test_diff_marks_whitespace_and_escapes() -> None:
    rows, cut = side_by_side("a\n<b> x \nsame\n", "a\n<b> x\nsame\n\n")
    assert not cut
    tags = [r.tag for r in rows]
    assert tags == ["equal", "replace", "equal", "insert"]
    changed = rows[1]
    assert "&lt;b&gt;" in changed.left and "<b>" not in changed.left
    assert '<span class="chg">·</span>' in changed.left  # the trailing space that differs is visible
    assert "↵" in rows[3].right  # the extra blank line is visible


def test_write_html_writes_file(tmp_path: Path) -> None:
    path = write_html(sample_audit_result(), tmp_path / "sub" / "r.html")
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_long_metric_lists_fold_but_limited_metrics_stay_visible() -> None:
    metrics = {f"m{i}": float(i) for i in range(20)}
    probe = ProbeResult("x", Status.FAIL, "", metrics=metrics, limits={"m18": {"comparison": ">=", "fail": 1.0}})
    text = render_html(AuditResult("ckpt", [probe]))
    head, _, folded = text.partition("Show 7 more metrics")
    assert folded, "the metrics past the first 12 should fold"
    assert ">m18<" in head and ">m11<" in head and ">m12<" in folded and ">m18<" not in folded


def _without_nonce(text: str) -> str:
    return re.sub(r"nonce[-=\"']*[A-Za-z0-9_-]{20,}", "NONCE", text)


def test_numpy_charts_render_and_match_the_json_rerender(tmp_path) -> None:
    import numpy as np

    from rmaudit.report import read_json, write_json

    values = np.linspace(-1, 1, 50, dtype=np.float32)
    probe = ProbeResult("accuracy", Status.PASS, "ok", metrics={"acc": np.float32(0.75)},
                        chart={"kind": "histogram", "series": [{"name": "m", "values": values}]})
    assert validate_chart(probe.chart) == []
    result = AuditResult("ckpt", [probe, *sample_audit_result().probes])
    again = read_json(write_json(result, tmp_path / "r.json"))
    assert _without_nonce(render_html(result)) == _without_nonce(render_html(again))


def test_handoff_probes_are_grouped_under_one_heading() -> None:
    handoff = "Handoff: how PPO will read the reward"
    probes = [ProbeResult("accuracy", Status.PASS, "ok"),
              ProbeResult("consumer_readout", Status.FAIL, "trl-ppo", section=handoff),
              ProbeResult("inference_invariance", Status.PASS, "ok", section=handoff)]
    page = render_html(AuditResult("ckpt", probes))
    assert page.count('class="section-heading"') == 1
    assert page.index(handoff) < page.index('id="probe-1-consumer_readout"') < page.index('id="probe-2-inference_invariance"')
    assert page.index('id="probe-0-accuracy"') < page.index(handoff)


def test_verdict_names_skipped_and_unmet_required_probes() -> None:
    probes = [ProbeResult("accuracy", Status.PASS, "ok"), ProbeResult("prompt_leakage", Status.SKIP, "no train split")]
    page = render_html(AuditResult("ckpt", probes, required=["prompt_leakage"]))
    assert "Skipped (not checked): prompt_leakage" in page and "Required but not checked: prompt_leakage" in page
    assert AuditResult("ckpt", probes, required=["prompt_leakage"]).gate == "fail"
    assert AuditResult("ckpt", probes).gate == "pass"
