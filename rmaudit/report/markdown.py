"""``summary.md``: a compact table for ``$GITHUB_STEP_SUMMARY`` and PR comments.

Text is escaped so that dataset strings render literally on GitHub: ``<``, ``>`` and ``&``
become entities, ``|`` cannot break the table and newlines are collapsed.
"""

from __future__ import annotations

import html
from pathlib import Path

from rmaudit.atomic import atomic_write_text
from rmaudit.report.json_report import normalized
from rmaudit.report.formatting import counts_line, one_line, reason_text, truncate, verdict_text
from rmaudit.results import AuditResult, Status

STATUS_ICONS = {
    Status.PASS: "✅ pass",
    Status.WARN: "⚠️ warn",
    Status.FAIL: "❌ fail",
    Status.SKIP: "⏭️ skip",
    Status.ERROR: "💥 error",
}
SUMMARY_CHARS = 240


def md_cell(text: object, limit: int = SUMMARY_CHARS) -> str:
    """One table cell: single line, truncated, HTML-escaped, pipes and backticks neutralised."""
    cell = html.escape(truncate(one_line(str(text)), limit), quote=False)
    return cell.replace("|", "\\|").replace("`", "&#96;")


def markdown_summary(result: AuditResult) -> str:
    """The text of ``summary.md``."""
    result = normalized(result)
    icon = "✅" if result.gate == "pass" else "❌"
    lines = [
        f"## {icon} rmaudit: {verdict_text(result).lower()} — {md_cell(result.checkpoint, 120)}",
        "",
        f"fail-on: **{result.fail_on.value}** · {counts_line(result)}"
        + (f" · skipped (not checked): {md_cell(', '.join(result.skipped), 200)}" if result.skipped else "")
        + (f" · **required but not checked: {md_cell(', '.join(result.unmet_requirements), 200)}**"
           if result.unmet_requirements else ""),
        "",
        "| Probe | Status | Finding | Time |",
        "|---|---|---|---:|",
    ]
    for probe in result.probes:
        lines.append(
            f"| {md_cell(probe.name, 60)} | {STATUS_ICONS[probe.status]} | {md_cell(reason_text(probe))} | {probe.seconds:.1f}s |"
        )
    footer = [x for x in (f"rmaudit {result.rmaudit_version}" if result.rmaudit_version else "", result.created_at) if x]
    if footer:
        lines += ["", f"<sub>{md_cell(' · '.join(footer))}</sub>"]
    return "\n".join(lines) + "\n"


def write_markdown(result: AuditResult, path: Path) -> Path:
    """Write ``summary.md`` atomically. Returns ``path``."""
    return atomic_write_text(Path(path), markdown_summary(result))
