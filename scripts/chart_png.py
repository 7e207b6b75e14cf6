"""Save one chart of an rmaudit HTML report as a PNG (for the README), drawn by real Chromium.

    python scripts/chart_png.py reports/x/report.html overoptimization 0 docs/img/forecast.png

Uses Debian's /usr/bin/chromium through playwright (never downloads a browser), the same
way the browser tests open reports.
"""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"


def main(report: str, probe: str, index: int, out: str) -> None:
    selector = f"[id$='{probe}-chart-{index}']"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1100, "height": 900}, device_scale_factor=1)
        page.goto(Path(report).resolve().as_uri())
        chart = page.locator(selector)
        chart.scroll_into_view_if_needed()
        page.wait_for_selector(f"{selector} .main-svg")
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        chart.screenshot(path=out)
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
