"""Training metrics: one JSON line per record in ``metrics.jsonl``, a short console line, the
trackers accelerate supports (``--report-to``), and a ``trainer_state.json`` shaped like the
transformers Trainer's (``global_step``, ``max_steps``, ``log_history``) so tools that read
TRL runs read rmaudit runs too."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from rmaudit.atomic import atomic_write_text
from rmaudit.errors import input_error

TRAINER_STATE = "trainer_state.json"
CONSOLE_KEYS = ("loss", "accuracy", "margin", "reward_mean", "reward_std", "grad_norm", "lr", "tokens_per_s")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 and value != 0 else f"{value:.4f}"
    return str(value)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The log's records. A torn LAST line (the run was killed mid-write) is dropped; a broken
    line before it means the file was edited or corrupted, and is an input error."""
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise input_error(path, number, None, "not a JSON record (the metrics log is corrupt)") from None
    return records


def stage_bar(total: int, description: str, enabled: bool, unit: str) -> tqdm:
    """A bar with the time left for a stage outside the steps (encoding the pairs, a held-out
    pass: minutes at scale), removed when it ends."""
    return tqdm(total=total, desc=description, unit=unit, file=sys.stderr, disable=not enabled, leave=False,
                dynamic_ncols=True)


class MetricsLog:
    """Append-only JSONL log plus console output; only the main process writes."""

    def __init__(self, path: Path, enabled: bool, total_steps: int, progress: bool, start_step: int = 0,
                 tracker: Any = None):
        self.path = path
        self.enabled = enabled
        self.total_steps = total_steps
        self.tracker = tracker  # an Accelerator with trackers initialised, or None
        self.progress = enabled and progress
        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", file=sys.stderr,
                        disable=not self.progress, dynamic_ncols=True)

    def truncate_after(self, step: int) -> None:
        """Forget records past ``step`` (a resumed run rewrites what the interrupted run logged after it)."""
        if not (self.enabled and self.path.is_file()):
            return
        keep = [record for record in read_records(self.path) if record.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(record) + "\n" for record in keep))

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` and print its headline numbers."""
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.tracker is not None:
            numbers = {f"{record['kind']}/{k}": v for k, v in record.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
            self.tracker.log(numbers, step=record["step"])
        shown = " ".join(f"{k}={_fmt(record[k])}" for k in CONSOLE_KEYS if k in record)
        tqdm.write(f"[{record['kind']} step {record['step']}] {shown}", file=sys.stderr)

    def note(self, message: str) -> None:
        if self.enabled:
            tqdm.write(message, file=sys.stderr)

    def advance(self, loss: float) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def write_trainer_state(self, step: int) -> None:
        """``trainer_state.json`` next to ``metrics.jsonl``: the whole log in the Trainer's shape."""
        if not (self.enabled and self.path.is_file()):
            return
        history = read_records(self.path)
        state = {"global_step": step, "max_steps": self.total_steps, "log_history": history,
                 "logging_source": "rmaudit train (metrics.jsonl)"}
        atomic_write_text(self.path.with_name(TRAINER_STATE), json.dumps(state, indent=2) + "\n")

    def close(self, step: int | None = None) -> None:
        self.bar.close()
        if step is not None:
            self.write_trainer_state(step)
        if self.tracker is not None:
            self.tracker.end_training()
