"""report.html in real headless Chromium: charts render, nothing leaves the page, hostile text stays text."""

from __future__ import annotations

from pathlib import Path

import pytest

from browser_helpers import open_report_in_chromium, requires_chromium
from helpers_report import HOSTILE, SCRIPT, sample_audit_result
from rmaudit.report import write_reports

pytestmark = [pytest.mark.browser, requires_chromium]


@pytest.fixture(scope="module")
def findings(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("report")
    paths = write_reports(sample_audit_result(), out)
    return open_report_in_chromium(paths["html"])


def test_every_chart_rendered(findings) -> None:
    assert findings.charts_state == "rendered"
    assert findings.plot_divs == 7  # scatter, bar, histogram, bar, box, histogram, reliability
    assert findings.rendered_plots == findings.plot_divs


def test_no_console_errors_and_no_network(findings) -> None:
    assert findings.console_errors == [] and findings.page_errors == []
    assert findings.requests == [findings.url]
    assert findings.foreign_requests == []


def test_hostile_strings_show_as_text_and_never_run(findings) -> None:
    assert findings.pwned is None
    for hostile in HOSTILE:
        assert hostile in findings.visible_text, hostile
    assert SCRIPT in findings.plot_text  # a category label inside a plotly chart, shown literally


def test_html_kinds_render_as_tables(findings) -> None:
    text = findings.visible_text
    assert "Rendered sample conversation" in text and "reward model (ChatML)" in text
    assert "how do I  bake BREAD?" in text  # the leakage table's example pair
    assert "Show 12 more rows" in text


def test_helper_detects_script_execution_and_requests(tmp_path: Path) -> None:
    """Control: the findings would catch a report that runs dataset text or fetches something."""
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body data-charts="rendered"><p>x</p><script>window.__pwned=1</script>'
                   '<img src="http://127.0.0.1:9/pixel.png"><div class="rm-plot"></div></body></html>', encoding="utf-8")
    found = open_report_in_chromium(bad, timeout_ms=5_000)
    assert found.pwned == 1
    assert found.foreign_requests == ["http://127.0.0.1:9/pixel.png"]
    assert found.plot_divs == 1 and found.rendered_plots == 0
