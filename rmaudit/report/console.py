"""The short coloured summary that ends ``rmaudit check`` on the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from rmaudit.report.formatting import counts_line, one_line, reason_text, truncate, verdict_text
from rmaudit.results import AuditResult, Status

STATUS_STYLES = {
    Status.PASS: "bold green",
    Status.WARN: "bold yellow",
    Status.FAIL: "bold red",
    Status.SKIP: "dim",
    Status.ERROR: "bold magenta",
}


def render_console_summary(result: AuditResult, console: Console) -> None:
    """Print one row per probe (status coloured, with the findings that set it) and the gate verdict.

    Every string is passed as :class:`rich.text.Text`, never as markup, so a summary
    quoting dataset text such as ``[red]`` prints literally, and strings are neutralised
    (:func:`~rmaudit.report.json_report.normalized`), so an ANSI escape from a dataset
    cannot recolour or rewrite the terminal.
    """
    from rmaudit.report.json_report import normalized

    result = normalized(result)
    table = Table(title=Text(f"rmaudit: {result.checkpoint}"), title_justify="left", expand=False)
    table.add_column("probe", style="bold", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("finding", overflow="fold")
    table.add_column("time", justify="right", no_wrap=True)
    for probe in result.probes:
        table.add_row(
            Text(probe.name),
            Text(probe.status.value.upper(), style=STATUS_STYLES[probe.status]),
            Text(truncate(one_line(reason_text(probe)), 240)),
            Text(f"{probe.seconds:.1f}s"),
        )
    console.print(table)
    style = "bold white on green" if result.gate == "pass" else "bold white on red"
    verdict = Text()
    verdict.append(f" {verdict_text(result)} ", style=style)
    verdict.append(f"  fail-on={result.fail_on.value} · {counts_line(result)}")
    if result.skipped:
        verdict.append(f" · skipped (not checked): {', '.join(result.skipped)}")
    if result.unmet_requirements:
        verdict.append(f" · required but not checked: {', '.join(result.unmet_requirements)}", style="bold red")
    console.print(verdict)
