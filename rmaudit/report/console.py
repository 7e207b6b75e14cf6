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


CHANGE_STYLES = {"worse": "bold red", "better": "bold green", "same": "", "added": "dim", "removed": "dim"}


def render_diff(diff, console: Console) -> None:
    """One row per probe (status before -> after, the change) and one per graded metric
    (value before -> after, its change, the limit); a line naming the regressions."""
    from rmaudit.report.formatting import format_value, neutralise

    table = Table(title=Text(f"rmaudit diff: {neutralise(diff.before.checkpoint)} -> {neutralise(diff.after.checkpoint)}"),
                  title_justify="left", expand=False)
    table.add_column("probe / metric", no_wrap=True)
    for name in ("before", "after", "change", "limit"):
        table.add_column(name)
    for probe in diff.probes:
        styles = [STATUS_STYLES.get(s, "") if s else "dim" for s in (probe.before, probe.after)]
        table.add_row(Text(probe.name, style="bold"),
                      *(Text(s.value.upper() if s else "-", style=st) for s, st in zip((probe.before, probe.after), styles)),
                      Text(probe.change, style=CHANGE_STYLES[probe.change]), Text(""))
        for m in probe.metrics:
            delta = "" if m.delta is None else f"{m.delta:+.4g}"
            if m.before_status and m.after_status and m.before_status is not m.after_status:
                delta += f" ({m.before_status.value} -> {m.after_status.value})"
            limit = "" if m.limit is None else f"{m.comparison} {format_value(m.limit)} trips"
            table.add_row(Text(f"  {neutralise(m.metric)}"), Text(format_value(m.before)), Text(format_value(m.after)),
                          Text(delta), Text(limit))
    console.print(table)
    gates = f"gate {diff.before.gate} -> {diff.after.gate}"
    if diff.regressed:
        console.print(Text(f"REGRESSED: {', '.join(diff.regressed)} ({gates})", style="bold red"))
    else:
        console.print(Text(f"no probe got worse ({gates})", style="bold green"))
