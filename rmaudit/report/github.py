"""GitHub Actions output of ``rmaudit check``: ``::error``/``::warning`` annotations and the
job's step summary. Written only when ``GITHUB_ACTIONS=true``; elsewhere it does nothing.

Annotation text is escaped as the Actions runner expects (``%``, CR and LF percent-encoded)
so a dataset string cannot inject a workflow command of its own.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

from rmaudit.report.formatting import one_line, truncate
from rmaudit.report.markdown import markdown_summary
from rmaudit.results import AuditResult, Status

_LEVELS = {Status.FAIL: "error", Status.ERROR: "error", Status.WARN: "warning"}


def escape_data(text: str) -> str:
    """Escape a workflow-command message (the runner's own rule: % then CR then LF)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def annotation_lines(result: AuditResult) -> list[str]:
    """One ``::error``/``::warning`` line per finding that set a probe's warn/fail/error status."""
    lines = []
    for probe in result.probes:
        level = _LEVELS.get(probe.status)
        if level is None:
            continue
        if level == "warning" and result.fail_on is Status.WARN:
            level = "error"
        details = [f"{f.message} ({f.crossed})" if f.crossed else f.message for f in probe.reasons] or [probe.summary]
        for detail in details:
            title = escape_data(f"rmaudit {probe.name}: {probe.status.value}").replace(",", "%2C").replace("::", "%3A%3A")
            lines.append(f"::{level} title={title}::{escape_data(truncate(one_line(detail), 900))}")
    return lines


def write_github_outputs(result: AuditResult, written: dict[str, Path], stream: TextIO | None = None) -> bool:
    """Print annotations and append summary.md to ``$GITHUB_STEP_SUMMARY``; False outside Actions."""
    if os.environ.get("GITHUB_ACTIONS") != "true":
        return False
    out = stream or sys.stdout
    for line in annotation_lines(result):
        print(line, file=out)
    summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        with open(summary_path, "a", encoding="utf-8") as handle:
            handle.write(markdown_summary(result) + f"\nFull report: `{written['html']}`\n")
    return True
