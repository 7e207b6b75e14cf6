"""Compare two audits: each side a report.json (or the report folder holding it), or a
checkpoint folder that is audited here with the same options for both sides.

Prints, per probe, the status before and after and every graded metric's change next to its
limit. Exit code 0 when no probe got worse, 1 when one did (a regression), 2 on bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rmaudit.options import Dtype, option_defaults, options_help

HELP = options_help()
DEFAULT = option_defaults()


def diff_command(
    before: Path = typer.Argument(..., help="The earlier side: report.json, its folder, or a checkpoint folder."),
    after: Path = typer.Argument(..., help="The later side: report.json, its folder, or a checkpoint folder."),
    probes: str = typer.Option("all", "--probes", help="Probes to run on a checkpoint side: " + HELP["probes"]),
    data: Optional[Path] = typer.Option(None, "--data", help=HELP["data"]),
    max_pairs: int = typer.Option(DEFAULT["max_pairs"], "--max-pairs", help=HELP["max_pairs"]),
    dtype: Dtype = typer.Option(DEFAULT["dtype"], "--dtype", help=HELP["dtype"]),
    seed: int = typer.Option(DEFAULT["seed"], "--seed", help=HELP["seed"]),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the diff as JSON to this file."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help=HELP["progress"]),
) -> int:
    """Compare two audits (reports or checkpoints); exit 1 when a probe got worse."""
    import json

    from rich.console import Console

    from rmaudit.atomic import atomic_write_text
    from rmaudit.audit import AuditOptions
    from rmaudit.cli import quiet_libraries
    from rmaudit.diff import diff_audits
    from rmaudit.report.console import render_diff

    quiet_libraries()
    options = AuditOptions(probes=probes, data=data, max_pairs=max_pairs, dtype=dtype, seed=seed,
                           progress=progress).validated()
    sides = [_side(path, options, label) for path, label in ((before, "before"), (after, "after"))]
    result = diff_audits(*sides)
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n")
    render_diff(result, Console())
    return 1 if result.regressed else 0


def _side(path: Path, options, label: str):
    """An AuditResult: read from a report, or audited now from a checkpoint folder."""
    from rmaudit.errors import input_error
    from rmaudit.report import read_json

    path = Path(path)
    if path.is_file():
        return read_json(path)
    if (path / "report.json").is_file():
        return read_json(path / "report.json")
    if (path / "config.json").is_file():
        from rmaudit.audit import run_audit

        if options.progress:
            import sys

            print(f"rmaudit diff: auditing the {label} checkpoint {path}", file=sys.stderr, flush=True)
        return run_audit(path, options)
    raise input_error(path, None, None, f"the {label} side is neither a report.json, a report folder nor a checkpoint folder")
