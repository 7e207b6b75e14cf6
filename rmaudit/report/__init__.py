"""Report writers: ``report.html``, ``report.json``, ``junit.xml``, ``summary.md`` and the console summary.

Every writer reads nothing but an :class:`~rmaudit.results.AuditResult`, so a report can
be re-rendered later from its JSON (``rmaudit report report.json --html out.html``).
All files are written atomically (temp file + ``os.replace``).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

from rmaudit.report.charts import validate_chart
from rmaudit.report.console import render_console_summary
from rmaudit.report.formatting import checkpoint_name
from rmaudit.report.html import render_html, write_html
from rmaudit.report.json_report import read_json, write_json
from rmaudit.report.junit import junit_xml, write_junit
from rmaudit.report.markdown import markdown_summary, write_markdown
from rmaudit.results import AuditResult

REPORT_FILES = {"html": "report.html", "json": "report.json", "junit": "junit.xml", "markdown": "summary.md"}

__all__ = [
    "REPORT_FILES", "default_report_dir", "junit_xml", "markdown_summary", "read_json", "render_console_summary",
    "render_html", "validate_chart", "write_html", "write_json", "write_junit", "write_markdown", "write_reports",
]


def write_reports(result: AuditResult, out_dir: Path) -> dict[str, Path]:
    """Write all four report files into ``out_dir`` (created if missing).

    Returns ``{"html": .../report.html, "json": .../report.json, "junit": .../junit.xml,
    "markdown": .../summary.md}``. JSON is written first so that the data survives even if a
    later writer fails.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writers = {"json": write_json, "html": write_html, "junit": write_junit, "markdown": write_markdown}
    written = {kind: writer(result, out_dir / REPORT_FILES[kind]) for kind, writer in writers.items()}
    write_probe_files(result, out_dir)
    return written


def write_probe_files(result: AuditResult, out_dir: Path) -> None:
    """The files probes hand back (``ProbeResult.files``: rollouts.jsonl, reward_normalization.json)."""
    from rmaudit.atomic import atomic_write_text

    for probe in result.probes:
        for name, text in probe.files.items():
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or name in REPORT_FILES.values():
                raise ValueError(f"probe {probe.name!r} returned a file name that is not a plain name: {name!r}")
            atomic_write_text(out_dir / name, text)


def default_report_dir(checkpoint: Path | str, now: datetime | None = None, root: Path = Path("reports")) -> Path:
    """``reports/<checkpoint-name>/<UTC timestamp>/``, e.g. ``reports/rm-hh/20261126-153207``.

    The name is the checkpoint's last path component (``org/model`` -> ``model``) with
    characters outside ``[A-Za-z0-9._-]`` replaced, so it is a safe folder name everywhere.
    """
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is not None:
        now = now.astimezone(timezone.utc)
    path = Path(checkpoint)
    raw = path.resolve().name if path.exists() else checkpoint_name(str(checkpoint))  # resolve "." and ".."
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("._") or "checkpoint"
    return Path(root) / name / now.strftime("%Y%m%d-%H%M%S")
