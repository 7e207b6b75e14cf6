"""The README's screenshots of an rmaudit HTML report, drawn by real Chromium.

    python scripts/report_screenshots.py reports/examples/smollm2-hh

writes, beside the report, ``screenshot-top.png`` (the verdict and the table of probes, one
screen), ``screenshot-length-bias.png`` and ``screenshot-handoff.png`` (the length_bias and
consumer_readout sections, charts drawn). Uses Debian's /usr/bin/chromium through playwright
(never downloads a browser), as scripts/chart_png.py and the browser tests do.
"""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
SECTIONS = {"screenshot-length-bias.png": "length_bias", "screenshot-handoff.png": "consumer_readout"}


def main(folder: str) -> None:
    report = Path(folder) / "report.html"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
        page.goto(report.resolve().as_uri())
        page.wait_for_function("document.body.dataset.charts !== 'pending'", timeout=60_000)
        page.screenshot(path=str(Path(folder) / "screenshot-top.png"))
        for name, probe in SECTIONS.items():
            section = page.locator(f"section[id$='-{probe}']")
            section.scroll_into_view_if_needed()
            section.screenshot(path=str(Path(folder) / name))
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1])
