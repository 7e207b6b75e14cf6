"""Re-render a report from its report.json (e.g. a CI artifact).

Writes the formats you ask for: --html, --junit, --markdown, or --out DIR for all four files.

Exit code 0 when the files were written (the gate verdict is in the report), 2 on a bad or foreign JSON file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from rmaudit.errors import RmauditInputError, input_error
from rmaudit.report import read_json, render_console_summary, write_html, write_junit, write_markdown, write_reports


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def report_command(
    report_json: Annotated[Path, typer.Argument(help="report.json written by `rmaudit check`.", show_default=False)],
    html: Annotated[Optional[Path], typer.Option("--html", help="Write the HTML report here.")] = None,
    junit: Annotated[Optional[Path], typer.Option("--junit", help="Write JUnit XML here.")] = None,
    markdown: Annotated[Optional[Path], typer.Option("--markdown", help="Write the Markdown summary here.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write all four report files into this folder.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not print the summary table.")] = False,
) -> int:
    outputs = {"--html": (html, write_html), "--junit": (junit, write_junit), "--markdown": (markdown, write_markdown)}
    if out is None and all(path is None for path, _ in outputs.values()):
        raise RmauditInputError("report: give at least one of --html, --junit, --markdown or --out")
    result = read_json(report_json)
    written = []
    for flag, (path, writer) in outputs.items():
        if path is None:
            continue
        if path.exists() and _same_file(path, report_json):  # never overwrite the input
            raise input_error(path, None, None, f"{flag} would overwrite the input report")
        written.append(writer(result, path))
    if out is not None:
        if (out / "report.json").exists() and _same_file(out / "report.json", report_json):
            raise input_error(out, None, None, "--out is the folder of the input report; choose another folder")
        written += write_reports(result, out).values()
    console = Console(stderr=False)
    if not quiet:
        render_console_summary(result, console)
    for path in written:
        console.print(f"wrote {path}", markup=False, highlight=False)
    return 0
