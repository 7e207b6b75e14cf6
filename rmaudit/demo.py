"""``rmaudit demo``: what the product is for, in one command and a few minutes.

1. train a reward model (SmolLM2-135M-Instruct + a fresh ``Linear(d, 1)`` head) on the
   built-in demo preference set: ``<out>/model``;
2. make a copy with a defect planted the way it happens in practice: the checkpoint is
   re-saved with ``config.pad_token_id`` pointing at a different token than the tokenizer's
   pad (what a resized or edited tokenizer leaves behind), so any consumer that pools by
   ``pad_token_id`` (transformers' own forward, TRL) reads the reward at the wrong position:
   ``<out>/model-planted``;
3. audit both with every probe and print them side by side: what the gate checked, what it
   caught, and the number and limit behind each verdict; the HTML reports to open.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from rmaudit.atomic import atomic_write_text
from rmaudit.report.console import STATUS_STYLES
from rmaudit.report.formatting import one_line, reason_text, truncate
from rmaudit.results import AuditResult, Status

PLANTED = "model-planted"


def plant_pad_id_defect(model_dir: Path, planted_dir: Path) -> int:
    """Copy ``model_dir`` and point its ``config.pad_token_id`` at another real token; return that id."""
    if planted_dir.exists():
        shutil.rmtree(planted_dir)
    shutil.copytree(model_dir, planted_dir, ignore=shutil.ignore_patterns("checkpoints", "metrics.jsonl"))
    config_path = planted_dir / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    wrong = 0 if config.get("pad_token_id") != 0 else 1
    config["pad_token_id"] = wrong
    atomic_write_text(config_path, json.dumps(config, indent=2) + "\n")
    return wrong


def run_demo(out: Path, console: Console, max_pairs: int = 64) -> int:
    """Train, plant, audit both, print the comparison; the exit code is the planted copy's gate (1)."""
    from rmaudit.audit import check
    from rmaudit.report import write_reports
    from rmaudit.train.api import train

    out = Path(out)
    model_dir, planted_dir = out / "model", out / PLANTED
    console.rule("1. train a reward model on the built-in demo preferences")
    trained = train(out=str(model_dir), progress=False, log_every=5)
    accuracy = (trained.eval_metrics or {}).get("accuracy")
    console.print(f"trained {trained.steps} steps; held-out accuracy {accuracy:.2f}" if accuracy is not None
                  else f"trained {trained.steps} steps", highlight=False)
    console.rule("2. plant a defect in a copy")
    wrong = plant_pad_id_defect(model_dir, planted_dir)
    console.print(f"{planted_dir}: config.pad_token_id set to {wrong} (the tokenizer pads with another id)",
                  highlight=False, markup=False)
    console.rule("3. audit both with every probe")
    results = {}
    for label, folder in (("demo model", model_dir), ("planted copy", planted_dir)):
        # The demo scores in the machine's fast dtype; `rmaudit check` defaults to exact float32.
        result = check(folder, probes="all", max_pairs=max_pairs, dtype="auto")
        write_reports(result, out / "reports" / folder.name)
        results[label] = result
    console.print(comparison_table(results))
    for label, result in results.items():
        console.print(Text(f"{label}: {'GATE PASSED' if result.passed else 'GATE FAILED'} · report "
                           f"{out / 'reports' / Path(result.checkpoint).name / 'report.html'}"))
    return 0 if results["planted copy"].passed else 1


def comparison_table(results: dict[str, AuditResult]) -> Table:
    """One row per probe, one column per audited checkpoint: status and the reason behind it."""
    table = Table(title=Text("what the gate checked and what it caught"), title_justify="left", show_lines=True)
    table.add_column("probe", style="bold", no_wrap=True)
    for label in results:
        table.add_column(label, overflow="fold")
    first = next(iter(results.values()))
    for probe in first.probes:
        cells: list[Any] = [Text(probe.name)]
        for result in results.values():
            found = result.probe(probe.name)
            cell = Text(found.status.value.upper(), style=STATUS_STYLES[found.status])
            if found.status is not Status.PASS:
                cell.append("  " + truncate(one_line(reason_text(found)), 160))
            cells.append(cell)
        table.add_row(*cells)
    return table
