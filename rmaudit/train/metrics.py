"""Training metrics: one JSON line per record in ``metrics.jsonl`` and a short console line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from rmaudit.atomic import atomic_write_text

CONSOLE_KEYS = ("loss", "accuracy", "margin", "reward_mean", "reward_std", "grad_norm", "lr", "tokens_per_s")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 and value != 0 else f"{value:.4f}"
    return str(value)


class MetricsLog:
    """Append-only JSONL log plus console output; only the main process writes."""

    def __init__(self, path: Path, enabled: bool, total_steps: int, progress: bool, start_step: int = 0):
        self.path = path
        self.enabled = enabled
        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", file=sys.stderr,
                        disable=not (enabled and progress), dynamic_ncols=True)

    def truncate_after(self, step: int) -> None:
        """Forget records past ``step`` (a resumed run rewrites what the interrupted run logged after it)."""
        if not (self.enabled and self.path.is_file()):
            return
        keep = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        atomic_write_text(self.path, "".join(line + "\n" for line in keep))

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` and print its headline numbers."""
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        shown = " ".join(f"{k}={_fmt(record[k])}" for k in CONSOLE_KEYS if k in record)
        tqdm.write(f"[{record['kind']} step {record['step']}] {shown}", file=sys.stderr)

    def note(self, message: str) -> None:
        if self.enabled:
            tqdm.write(message, file=sys.stderr)

    def advance(self, loss: float) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def close(self) -> None:
        self.bar.close()
