"""Check the auditor itself: build planted-defect models and a healthy twin, audit them, show what was caught.

A length-rewarding head, a markdown-rewarding head, a pad-id bug, a leaky split and a random
head are built in a temporary folder (tiny random body, SmolLM2's tokenizer) and audited like
`rmaudit check` does. Exit 0 when every defect is caught by its probe and the healthy twin
passes every probe; 1 otherwise. About a minute on two CPU cores.
"""

from __future__ import annotations

from typing import Optional

import typer


def selftest_command(
    case: Optional[str] = typer.Option(None, "--case", help="Run only these cases, comma-separated (healthy, "
                                       "length_head, markdown_head, pad_id_bug, leaky_split, random_head)."),
) -> int:
    """Audit planted-defect models and a healthy twin; exit 0 when the auditor catches every defect."""
    from rich.console import Console
    from rich.table import Table

    from rmaudit.cli import quiet_libraries
    from rmaudit.results import Status
    from rmaudit.selftest import PROBES, run_selftest

    quiet_libraries()
    console = Console()
    results = run_selftest([c.strip() for c in case.split(",")] if case else None,
                           progress=lambda line: console.print(f"selftest: {line}", highlight=False, markup=False))
    table = Table(title="rmaudit selftest: planted defects and what caught them", title_justify="left", show_lines=True)
    for column in ("case", "planted defect", "must fail", "flagged (fail/warn)", "ok"):
        table.add_column(column)
    for item in results:
        flagged = [f"{p} {s.value}" for p, s in item.statuses.items() if s in (Status.FAIL, Status.WARN)]
        table.add_row(item.case.name, item.case.defect, item.case.catcher or f"nothing: all {len(PROBES)} probes pass",
                      ", ".join(flagged) or "nothing", "yes" if item.ok else "NO", style=None if item.ok else "bold red")
    console.print(table)
    failed = [item.case.name for item in results if not item.ok]
    console.print("selftest: " + (f"FAILED: {', '.join(failed)}" if failed else
                                  f"PASS: all {len(results)} cases behave as planted"), highlight=False, markup=False)
    return 1 if failed else 0
