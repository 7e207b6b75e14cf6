"""Show what rmaudit is for: train a reward model on the built-in demo set, plant a defect
in a copy, audit both and print what the gate caught and why (a few minutes on 2 CPU cores).

Exit code 1: the planted copy fails the gate, as it should; 0 would mean the defect was missed.
"""

from __future__ import annotations

from pathlib import Path

import typer


def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for the two models and their reports."),
    max_pairs: int = typer.Option(64, "--max-pairs", help="Held-out pairs each audit scores."),
) -> int:
    """Train a demo reward model, plant a defect in a copy, audit both side by side."""
    from rich.console import Console

    from rmaudit.cli import quiet_libraries
    from rmaudit.demo import run_demo

    quiet_libraries()
    return run_demo(out, Console(), max_pairs=max_pairs)
