"""Check that a checkpoint is byte for byte the one a passing audit saw, before PPO gets it.

Recomputes the sha256 of every weight, config, tokenizer and chat-template file of CKPT and
compares them with the record in REPORT (report.json or its folder). With --public-key the
report's Ed25519 signature must also hold; with --check-data the data files the audit read
are re-hashed at their recorded paths.

Exit codes: 0 = same checkpoint, intact record, passing gate (and a valid signature when
asked); 1 = any of those does not hold (each reason printed); 2 = unreadable input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def verify_command(
    report: Path = typer.Argument(..., help="report.json of the audit, or the report folder holding it."),
    checkpoint: Path = typer.Argument(..., help="The checkpoint folder about to be handed to PPO."),
    public_key: Optional[Path] = typer.Option(None, "--public-key", help="Ed25519 public key (PEM): the report "
                                              "must carry a valid signature by it."),
    check_data: bool = typer.Option(False, "--check-data", help="Also re-hash the data files the audit read, at "
                                    "the paths recorded in the report."),
) -> int:
    """Verify that CKPT is byte for byte the checkpoint that passed REPORT's audit (exit 0) or not (exit 1)."""
    from rich.console import Console

    from rmaudit.report.formatting import neutralise
    from rmaudit.verify import verify_report

    outcome = verify_report(report, checkpoint, public_key=public_key, check_data=check_data)
    console = Console(highlight=False)
    for line in outcome.lines:  # paths come from the report: shown neutralised
        console.print(neutralise(line), markup=False, soft_wrap=True)
    console.print("verify: " + ("PASS" if outcome.ok else "FAIL"), markup=False, soft_wrap=True)
    return 0 if outcome.ok else 1
