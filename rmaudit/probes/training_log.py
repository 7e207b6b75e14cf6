"""Probe `training_log`: what the run's own log says about how the reward model was trained.

Read from ``--training-log FILE``, else from the checkpoint folder, first found: rmaudit's
``metrics.jsonl``; a ``trainer_state.json`` (``log_history``, as transformers and TRL write
it); the newest ``checkpoint-*/trainer_state.json`` under it (a TRL ``output_dir``). Keys are normalised
(TRL's ``learning_rate``, ``eval_loss``, ``eval_accuracy``; rmaudit's ``lr`` and ``kind``).
Graded:

* **NaN or Inf** in a logged loss or gradient norm: the run diverged at least once.
* **Loss stuck at log 2 = 0.693**: the mean of the last quarter of the train losses still
  within ``loss_drop`` of chance. A Bradley-Terry loss that never leaves log 2 means the
  rewards of chosen and rejected never separated: a constant head, a pooling that reads
  padding, chosen and rejected swapped in half the data.
* **Loss flat near chance**: when the last quarter's loss is still within 0.1 of log 2,
  the fall from the first quarter (``loss_fall``) is graded: a run whose loss stayed where
  its random head put it did not learn (a learning-rate typo, frozen parameters, a head
  the optimiser does not reach). Needs at least 4 train records.
* **Gradient-norm spikes**: each logged gradient norm against the median of the 10 before
  it, or the run's median, or a tenth of the largest norm before it, whichever is largest:
  a norm that decays as the loss reaches 0 is not a spike, nor is a norm the run already
  survived, coming back after the loss saturated at 0 (a small set memorised, where the
  median norm is 1e-4).
  Spikes are the signature of the exploding reward (the margin term grows until one batch
  throws the weights).
* **Accuracy flat while the loss falls**: from the first to the last quarter of the run the
  loss falls by more than ``overconfidence_loss_fall`` while train accuracy gains less
  than ``accuracy_gain``: the model is growing margins on pairs it already ranks right
  (overconfidence), not learning new ones. Not graded when the first quarter's accuracy is
  already 0.9 or more (no headroom; ``reward_scale`` grades the margins themselves), nor
  with fewer than 4 train records.
* **Recorded settings**, when the run recorded them (rmaudit's manifest): clipping disabled
  (``max_grad_norm`` 0), chosen and rejected not run in one stacked forward, dropout left on
  (the two-tower bug: the two sides of a pair see different dropout masks, and the loss
  learns the noise). A log without these facts says so in a note rather than guessing.

A checkpoint without any log skips: nothing was checked.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rmaudit.findings import Comparison, Finding, Limit, Setting, Status, note
from rmaudit.modeling.preflight import newest_trainer_checkpoint
from rmaudit.probes.base import Probe, ProbeSkipped, metric, with_reasons

LN2 = math.log(2.0)
NEAR_CHANCE = 0.1       # a last-quarter loss within this of log 2 has the loss_fall rule graded
SPIKE_WINDOW = 10       # gradient norms a spike is compared with
# A spike is also measured against this share of the largest norm before it: once the loss
# saturates at 0 the norms fall to ~1e-4, and one pair the model still gets wrong would
# otherwise read as a 10,000x spike at a norm smaller than step 3's.
LEARNING_NORM_SHARE = 0.1
MIN_TREND_RECORDS = 4   # fewer train records make no first-vs-last-quarter trend
ACCURACY_HEADROOM = 0.9  # a run that starts above this cannot gain accuracy; its margins are reward_scale's
METRICS_FILE = "metrics.jsonl"
TRAINER_STATE = "trainer_state.json"


@dataclass
class TrainingCurves:
    """Train and eval records of one run, keys normalised to loss, accuracy, grad_norm, lr."""

    source: Path
    train: list[dict[str, float]] = field(default_factory=list)
    eval: list[dict[str, float]] = field(default_factory=list)

    def series(self, key: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of the records that logged ``key``."""
        rows = [r for r in getattr(self, split) if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
        return (np.array([r.get("step", i) for i, r in enumerate(rows)], dtype=np.float64),
                np.array([r[key] for r in rows], dtype=np.float64))


def find_log(checkpoint: Path) -> Path | None:
    """The run log that belongs to ``checkpoint`` (the order: the module docstring)."""
    for candidate in (checkpoint / METRICS_FILE, checkpoint / TRAINER_STATE):
        if candidate.is_file():
            return candidate
    nested = newest_trainer_checkpoint(checkpoint, TRAINER_STATE)
    return None if nested is None else nested / TRAINER_STATE


def read_curves(path: Path) -> TrainingCurves:
    """Parse rmaudit's metrics.jsonl or a transformers/TRL trainer_state.json."""
    from rmaudit.errors import input_error

    curves = TrainingCurves(source=path)
    if path.suffix == ".jsonl":
        from rmaudit.train.metrics import read_records

        for record in read_records(path):
            split = "eval" if record.get("kind") == "eval" else "train"
            getattr(curves, split).append(_numbers(record))
        return curves
    try:
        history = json.loads(path.read_text(encoding="utf-8")).get("log_history") or []
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        raise input_error(path, None, "log_history", "not a trainer_state.json with a log_history list") from None
    for record in history if isinstance(history, list) else []:
        if not isinstance(record, dict):
            continue
        if record.get("kind") == "eval" or any(k.startswith("eval_") for k in record):  # rmaudit's, the Trainer's
            curves.eval.append(_numbers({k.removeprefix("eval_"): v for k, v in record.items()}))
        elif "loss" in record:
            curves.train.append(_numbers({("lr" if k == "learning_rate" else k): v for k, v in record.items()}))
    return curves


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    """The numeric fields of a record; "NaN"/"Infinity" strings (JSON cannot hold them) as floats."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[key] = float(value)
        elif isinstance(value, str) and value.strip().lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
            out[key] = float(value.strip().lower().replace("infinity", "inf"))
    return out


class TrainingLog(Probe):
    """Reads the run's training log (rmaudit's or a transformers/TRL trainer_state.json):
    NaN/Inf, a loss stuck at log 2, gradient-norm spikes, accuracy flat while the loss falls,
    and the recorded clipping, forward and dropout settings."""

    name = "training_log"
    order = 65
    description = "The run's own log: NaN/Inf, loss stuck at log 2, grad-norm spikes, accuracy flat while loss falls, clipping/dropout."
    why = ("An RM whose loss never left 0.693, or whose gradient norm spiked a hundredfold, can still pass a small eval;\n"
           "the training log shows it, and shows the settings (clipping off, dropout on) that make rewards drift.")
    inputs = ()
    limits = (
        Limit("nonfinite_records", Comparison.ABOVE, fail=0, help="logged losses or gradient norms that are NaN or Inf"),
        Limit("loss_drop", Comparison.BELOW, warn=0.03, fail=0.01,
              help="log 2 minus the mean train loss of the last quarter of the run (0 = chance)"),
        Limit("loss_fall", Comparison.BELOW, fail=0.005,
              help="train loss fall from the first to the last quarter, graded when the last is within 0.1 of log 2"),
        Limit("grad_norm_spike", Comparison.AT_LEAST, warn=20.0, fail=100.0,
              help="largest logged gradient norm over the median of the 10 before it (or the run's median, or a "
                   "tenth of the largest norm before it, if larger)"),
        Limit("accuracy_gain", Comparison.BELOW, warn=0.02,
              help="train accuracy gained from the first to the last quarter, graded when the loss fell by > loss_fall"),
    )
    settings = (Setting("overconfidence_loss_fall", 0.05,
                        "a loss fall from the first to the last quarter that makes accuracy_gain graded"),)

    def run(self, ctx):
        path = ctx.training_log or find_log(Path(ctx.checkpoint))
        if path is None:
            raise ProbeSkipped(f"no training log in {ctx.checkpoint} (looked for {METRICS_FILE}, {TRAINER_STATE} "
                               f"and checkpoint-*/{TRAINER_STATE}); name one with --training-log")
        curves = read_curves(path)
        _, losses = curves.series("loss")
        if not len(losses):
            raise ProbeSkipped(f"{path} logs no train loss")
        metrics = {"log_file": str(path), "n_train_records": len(curves.train), "n_eval_records": len(curves.eval),
                   **_loss_metrics(curves), **_grad_metrics(curves)}
        findings = self._findings(metrics) + _recorded_settings(ctx.manifest)
        return self.result(findings, with_reasons(_summary(metrics), findings), metrics=metrics,
                           chart=_chart(curves))

    def _findings(self, m: dict[str, Any]) -> list[Finding]:
        findings = [self.limit("nonfinite_records").check(
            m["nonfinite_records"], f"{m['nonfinite_records']} logged losses or gradient norms are NaN or Inf"
                                    + (f" (first at step {m['first_nonfinite_step']:g})" if m["nonfinite_records"] else ""))]
        if m["loss_drop"] is not None:
            findings.append(self.limit("loss_drop").check(m["loss_drop"], _loss_drop_message(m["final_loss"], m["loss_drop"])))
        if (m["loss_fall"] is not None and abs(m["final_loss"] - LN2) <= NEAR_CHANCE
                and m["n_train_records"] >= MIN_TREND_RECORDS):
            finding = self.limit("loss_fall").check(m["loss_fall"], (
                f"the train loss moved {m['loss_fall']:+.4f} from the first to the last quarter and sits at "
                f"{m['final_loss']:.4f}, near log 2"))
            if finding.status is not Status.PASS:
                finding.message += ": the run did not learn (learning rate, frozen parameters, unreachable head)"
            findings.append(finding)
        if m.get("grad_norm_spike") is not None:
            findings.append(self.limit("grad_norm_spike").check(m["grad_norm_spike"], (
                f"the largest jump in gradient norm ({m['grad_norm_max']:.3g} at step {m['grad_norm_max_step']:g}) is "
                f"{m['grad_norm_spike']:.1f}x the median before it ({m['grad_norm_baseline']:.3g})")))
        if (m["loss_fall"] is not None and m["loss_fall"] > self.setting("overconfidence_loss_fall")
                and m["accuracy_gain"] is not None and m["first_accuracy"] < ACCURACY_HEADROOM
                and m["n_train_records"] >= MIN_TREND_RECORDS):
            finding = self.limit("accuracy_gain").check(m["accuracy_gain"], (
                f"the train loss fell by {m['loss_fall']:.3f} while train accuracy moved {m['accuracy_gain']:+.3f} "
                "(first to last quarter)"))
            if finding.status is not Status.PASS:
                finding.message += ": margins grow on pairs already ranked right (overconfidence), not new pairs learned"
            findings.append(finding)
        return findings


def _quarters(values: np.ndarray) -> tuple[float, float]:
    """Means of the first and the last quarter (at least one record each)."""
    k = max(1, len(values) // 4)
    return float(values[:k].mean()), float(values[-k:].mean())


def _loss_metrics(curves: TrainingCurves) -> dict[str, Any]:
    steps, losses = curves.series("loss")
    bad_steps = [s for s, v in zip(steps, losses) if not math.isfinite(v)]
    bad_steps += [s for s, v in zip(*curves.series("grad_norm")) if not math.isfinite(v)]
    finite = losses[np.isfinite(losses)]
    out: dict[str, Any] = {"nonfinite_records": len(bad_steps), "first_nonfinite_step": min(bad_steps) if bad_steps else None,
                           "first_loss": None, "final_loss": None, "loss_drop": None, "loss_fall": None,
                           "accuracy_gain": None}
    if len(finite):
        first, last = _quarters(finite)
        out.update(first_loss=metric(first), final_loss=metric(last), loss_drop=metric(LN2 - last),
                   loss_fall=metric(first - last))
    _, accuracy = curves.series("accuracy")
    accuracy = accuracy[np.isfinite(accuracy)]
    if len(accuracy):
        first_acc, last_acc = _quarters(accuracy)
        out.update(first_accuracy=metric(first_acc), final_accuracy=metric(last_acc),
                   accuracy_gain=metric(last_acc - first_acc))
    _, eval_loss = curves.series("loss", "eval")
    if len(eval_loss):
        out["final_eval_loss"] = metric(eval_loss[-1])
    return out


def _loss_drop_message(final_loss: float, drop: float) -> str:
    """Where the last quarter's loss sits against log 2, the loss of a constant reward."""
    where = f"the last quarter's mean train loss is {final_loss:.4f}, "
    if drop < -NEAR_CHANCE:  # a model that ranks pairs backwards, or a loss that diverged
        return where + f"{-drop:.4f} above log 2 = 0.6931: worse than a constant reward (diverged, or learned backwards)"
    side = f"{drop:.4f} below" if drop >= 0 else f"{-drop:.4f} above"  # never "-0.03 below"
    return where + f"{side} log 2 = 0.6931" + (": it never left chance" if drop < 0.01 else "")


def _grad_metrics(curves: TrainingCurves) -> dict[str, Any]:
    """The largest gradient norm over its local baseline: the median of the SPIKE_WINDOW norms
    before it, the run's median or LEARNING_NORM_SHARE of the largest norm before it,
    whichever is largest (the first records have no baseline)."""
    steps, grads = curves.series("grad_norm")
    keep = np.isfinite(grads)
    steps, grads = steps[keep], grads[keep]
    overall = float(np.median(grads)) if len(grads) else 0.0
    if len(grads) < 4 or overall <= 0:
        return {"grad_norm_spike": None}
    largest_before = np.maximum.accumulate(grads)
    baselines = np.array([max(float(np.median(grads[max(0, i - SPIKE_WINDOW):i])), overall,
                              LEARNING_NORM_SHARE * float(largest_before[i - 1])) for i in range(3, len(grads))])
    ratios = grads[3:] / baselines
    top = int(np.argmax(ratios))
    return {"grad_norm_median": metric(overall), "grad_norm_max": metric(grads[3 + top]),
            "grad_norm_max_step": float(steps[3 + top]), "grad_norm_baseline": metric(baselines[top]),
            "grad_norm_spike": metric(ratios[top], 3)}


def _recorded_settings(manifest: Any) -> list[Finding]:
    """Clipping, the stacked forward and dropout, as the run's manifest recorded them."""
    if manifest is None:
        return [note(Status.PASS, "no rmaudit.json: clipping, the stacked forward and dropout were not recorded, so "
                                  "they are not checked (TRL's training_args.bin is a pickle and is not read)")]
    findings = []
    clip = manifest.hyperparameters.get("max_grad_norm")
    if clip is not None:
        off = not clip or not math.isfinite(float(clip))
        findings.append(note(Status.WARN if off else Status.PASS,
                             "gradient clipping was disabled (max_grad_norm 0): nothing stopped an exploding step"
                             if off else f"gradients clipped at {float(clip):g}", "max_grad_norm", clip))
    forward, dropout = manifest.run.get("forward"), manifest.run.get("dropout")
    if forward is not None and forward != "stacked":
        findings.append(note(Status.WARN, f"chosen and rejected ran in separate forwards ({forward}): with dropout "
                                          "or batch statistics the two sides of a pair saw different models", "forward", forward))
    if dropout is not None and dropout != "disabled":
        findings.append(note(Status.WARN, f"dropout was left on in training ({dropout}): chosen and rejected saw "
                                          "different dropout masks and the loss partly learned that noise", "dropout", dropout))
    if forward is None and dropout is None:
        findings.append(note(Status.PASS, "the manifest does not record the forward layout or dropout (older rmaudit)"))
    return findings


def _summary(m: dict[str, Any]) -> str:
    parts = [f"{m['n_train_records']} train records from {Path(m['log_file']).name}"]
    if m["final_loss"] is not None:
        parts.append(f"train loss {m['first_loss']:.4f} -> {m['final_loss']:.4f} (log 2 = 0.6931)")
    if m.get("grad_norm_spike") is not None:
        parts.append(f"max grad norm {m['grad_norm_spike']:.1f}x the median")
    if m["nonfinite_records"]:
        parts.append(f"{m['nonfinite_records']} NaN/Inf records")
    return "; ".join(parts)


def _chart(curves: TrainingCurves) -> dict[str, Any]:
    charts = []
    for key, title in (("loss", "Bradley-Terry loss"), ("accuracy", "Pair accuracy"), ("grad_norm", "Gradient norm")):
        series = []
        for split in ("train", "eval"):
            steps, values = curves.series(key, split)
            if len(values):
                series.append({"name": split, "mode": "lines+markers", "x": [metric(s) for s in steps],
                               "y": [metric(v) for v in values]})
        if series:
            spec: dict[str, Any] = {"kind": "scatter", "title": title, "x_label": "step", "y_label": key, "series": series}
            if key == "loss":
                spec["hlines"] = [{"y": round(LN2, 4), "label": "log 2 (chance)"}]
            charts.append(spec)
    return {"charts": charts}
