"""Open an rmaudit HTML report in real headless Chromium and record what happened.

Reusable by any test that has a ``report.html`` (unit reports and reports from a real
``rmaudit check``). Uses Debian's ``/usr/bin/chromium`` through the ``playwright``
package; never downloads a browser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def chromium_missing_reason() -> str | None:
    """Why a browser test cannot run here, or None when it can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (install Debian's chromium package: apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install -e .[dev])"
    return None


requires_chromium = pytest.mark.skipif(chromium_missing_reason() is not None, reason=chromium_missing_reason() or "")


@dataclass
class PageFindings:
    """What a report did in the browser."""

    url: str
    charts_state: str  # body[data-charts]: "rendered", "failed" or "pending" (timed out)
    plot_divs: int  # chart containers in the page (div.rm-plot)
    rendered_plots: int  # of those, how many hold a plotly svg.main-svg
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL the page asked for, the file included
    pwned: Any = None  # window.__pwned after load; None means undefined
    visible_text: str = ""  # body.innerText with every <details> opened
    plot_text: str = ""  # textContent of all plotly charts (titles, ticks, legends)

    @property
    def foreign_requests(self) -> list[str]:
        """Requests for anything other than the report file itself."""
        return [u for u in self.requests if u != self.url]


def open_report_in_chromium(path: Path, screenshot: Path | None = None, timeout_ms: int = 30_000) -> PageFindings:
    """Load ``path`` via file://, wait for the charts, open all <details>, and collect findings."""
    from playwright.sync_api import sync_playwright

    url = Path(path).resolve().as_uri()
    console_errors: list[str] = []
    page_errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            page.on("request", lambda req: requests.append(req.url))
            page.goto(url, wait_until="load", timeout=timeout_ms)
            try:
                page.wait_for_function("document.body.dataset.charts !== 'pending'", timeout=timeout_ms)
            except Exception:  # noqa: BLE001 - a timeout is reported through charts_state
                pass
            page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
            findings = PageFindings(
                url=url,
                charts_state=page.evaluate("document.body.dataset.charts"),
                plot_divs=page.locator("div.rm-plot").count(),
                rendered_plots=page.locator("div.rm-plot:has(svg.main-svg)").count(),
                pwned=page.evaluate("typeof window.__pwned === 'undefined' ? null : window.__pwned"),
                visible_text=page.evaluate("document.body.innerText"),
                plot_text=page.evaluate(
                    "Array.from(document.querySelectorAll('div.rm-plot')).map(d => d.textContent).join('\\n')"),
            )
            if screenshot is not None:
                page.evaluate("document.querySelectorAll('details').forEach(d => d.open = false)")
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    findings.console_errors, findings.page_errors, findings.requests = console_errors, page_errors, requests
    return findings
