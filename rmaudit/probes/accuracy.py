"""Probe `accuracy`: held-out accuracy, margin distribution and calibration of sigma(margin).

Under Bradley-Terry the RM claims ``P(chosen beats rejected) = sigma(margin)``. Accuracy
is the fraction of held-out pairs with ``margin > 0`` (a tie counts as wrong, as in the
trainer's metric). Calibration is read top-label style: each pair's confidence is
``max(sigma(m), 1 - sigma(m))`` and it is right when ``m > 0``; the expected calibration
error (ECE) is the count-weighted gap between mean confidence and accuracy over 10 equal
bins on [0.5, 1]. An RM that is right 65% of the time with margins of 5 (claims 99%) is
overconfident: PPO will chase its rewards far harder than the evidence allows.

Defaults (reference chapter: a useful RM reaches >= 0.70 held out): accuracy < 0.55
fails (barely above a coin), < 0.60 warns; ECE >= 0.15 warns; a category with at least
10 pairs and accuracy < 0.5 warns (the RM is inverted on a slice even if fine overall).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rmaudit.data.pairs import PreferencePair
from rmaudit.probes.base import Probe, ProbeSkipped, clip_evidence, register_probe
from rmaudit.results import Status

N_BINS = 10
EVIDENCE_ROWS = 20


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    return np.exp(-np.logaddexp(0.0, -x))


def calibration_bins(margins: np.ndarray, n_bins: int = N_BINS) -> tuple[float, list[dict[str, Any]]]:
    """(ECE, reliability bins) of sigma(margin), top-label, with equal bins on [0.5, 1].

    A tie (margin 0) has confidence 0.5 and counts as half right: it predicts nothing.
    """
    confidence = sigmoid(np.abs(margins))
    correct = np.where(margins > 0, 1.0, np.where(margins < 0, 0.0, 0.5))
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        member = which == b
        count = int(member.sum())
        conf = float(confidence[member].mean()) if count else None
        acc = float(correct[member].mean()) if count else None
        if count:
            ece += count / len(margins) * abs(acc - conf)
        bins.append({"lower": round(float(edges[b]), 3), "upper": round(float(edges[b + 1]), 3),
                     "confidence": None if conf is None else round(conf, 4),
                     "accuracy": None if acc is None else round(acc, 4), "count": count})
    return ece, bins


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion (sound for small n and extreme rates)."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


@register_probe
class AccuracyProbe(Probe):
    name = "accuracy"
    description = "Held-out accuracy, margin distribution and calibration (ECE) of sigma(margin), per category."
    why = ("How often the RM ranks held-out pairs the way people did, and whether sigma(margin) means what it says.\n"
           "An RM near chance gives PPO noise to optimise; an overconfident one makes PPO over-trust small differences.")
    default_thresholds = {
        "accuracy_fail_below": 0.55,
        "accuracy_warn_below": 0.60,
        "ece_warn_at": 0.15,
        "category_accuracy_warn_below": 0.5,
        "category_min_pairs": 10,
    }

    def run(self, ctx, thresholds):
        ctx.require(model=ctx.model, eval_pairs=ctx.eval_pairs)
        # A pair whose chosen equals its rejected carries no preference: it can only tie.
        pairs = [p for p in ctx.eval_pairs if p.chosen != p.rejected]
        if not pairs:
            raise ProbeSkipped("every held-out pair has identical chosen and rejected responses")
        chosen, rejected = ctx.pair_rewards(pairs)
        margins = chosen - rejected
        std = ctx.reward_std()
        ece, bins = calibration_bins(margins)
        categories = _per_category(pairs, margins)
        metrics = {**_overall(margins, std), "ece": _r(ece),
                   "identical_pairs_excluded": len(ctx.eval_pairs) - len(pairs), **_flatten(categories)}
        weak = _weak_categories(categories, thresholds)
        status = _grade(metrics, weak, thresholds)
        return self.result(
            status, _summary(metrics, weak), metrics=metrics, thresholds=thresholds,
            evidence=_evidence(pairs, chosen, rejected, margins),
            chart=_chart(margins, bins, ece, categories),
        )


def _overall(margins: np.ndarray, std: float) -> dict[str, Any]:
    n = len(margins)
    right = float((margins > 0).sum())
    low, high = wilson_interval(right, n)
    q = np.quantile(margins, [0.05, 0.25, 0.5, 0.75, 0.95])
    scale = std if math.isfinite(std) and std > 0 else float("nan")
    return {
        "n_pairs": n,
        "accuracy": _r(right / n),
        "accuracy_ci_low": _r(low),
        "accuracy_ci_high": _r(high),
        "ties": int((margins == 0).sum()),
        "bt_loss": _r(float(np.logaddexp(0.0, -margins).mean())),
        "mean_margin": _r(margins.mean()),
        "std_margin": _r(margins.std()),
        "margin_p05": _r(q[0]), "margin_p25": _r(q[1]), "margin_median": _r(q[2]),
        "margin_p75": _r(q[3]), "margin_p95": _r(q[4]),
        "mean_margin_std": _r(margins.mean() / scale),
        "mean_confidence": _r(sigmoid(np.abs(margins)).mean()),
        "reward_std": _r(std, 6),
    }


def _per_category(pairs: Sequence[PreferencePair], margins: np.ndarray) -> dict[str, dict[str, Any]]:
    """Accuracy and mean margin per category, when the data labels categories."""
    index: dict[str, list[int]] = defaultdict(list)
    for i, pair in enumerate(pairs):
        if pair.category:
            index[str(pair.category)].append(i)
    out = {}
    for category in sorted(index):
        m = margins[index[category]]
        out[category] = {"n": len(m), "accuracy": _r(float((m > 0).mean())), "mean_margin": _r(m.mean())}
    return out


def _flatten(categories: dict[str, dict[str, Any]]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for category, values in categories.items():
        flat[f"accuracy[{category}]"] = values["accuracy"]
        flat[f"n_pairs[{category}]"] = values["n"]
    return flat


def _weak_categories(categories: dict[str, dict[str, Any]], thresholds: dict[str, float]) -> list[str]:
    return [c for c, v in categories.items()
            if v["n"] >= thresholds["category_min_pairs"] and v["accuracy"] < thresholds["category_accuracy_warn_below"]]


def _grade(metrics: dict[str, Any], weak: list[str], thresholds: dict[str, float]) -> Status:
    accuracy = metrics["accuracy"]
    if accuracy < thresholds["accuracy_fail_below"]:
        return Status.FAIL
    if (accuracy < thresholds["accuracy_warn_below"] or weak
            or (metrics["ece"] is not None and metrics["ece"] >= thresholds["ece_warn_at"])):
        return Status.WARN
    return Status.PASS


def _summary(metrics: dict[str, Any], weak: list[str]) -> str:
    text = (f"accuracy {metrics['accuracy']:.3f} on {metrics['n_pairs']} held-out pairs "
            f"(95% CI {metrics['accuracy_ci_low']:.3f}–{metrics['accuracy_ci_high']:.3f}); "
            f"ECE {metrics['ece']:.3f}; mean margin {metrics['mean_margin']:+.3f}")
    if weak:
        text += f"; below chance on: {', '.join(weak)}"
    return text + "."


def _evidence(pairs, chosen, rejected, margins) -> list[dict[str, Any]]:
    """The most confidently wrong pairs: where the RM disagrees hardest with the labels."""
    rows = []
    for i in np.argsort(margins, kind="stable")[:EVIDENCE_ROWS]:
        pair = pairs[i]
        rows.append({
            "category": pair.category or "",
            "prompt": clip_evidence(pair.prompt_text()),
            "chosen": clip_evidence(pair.chosen),
            "rejected": clip_evidence(pair.rejected),
            "reward_chosen": _r(chosen[i]),
            "reward_rejected": _r(rejected[i]),
            "margin": _r(margins[i]),
            "p_chosen": _r(float(sigmoid(np.array(margins[i])))),
            "correct": bool(margins[i] > 0),
            "source": f"{Path(pair.source).name}:{pair.row}" if pair.source else "",
        })
    return rows


def _chart(margins, bins, ece, categories) -> dict[str, Any]:
    charts: list[dict[str, Any]] = [
        {"kind": "histogram", "title": "Held-out margins r(chosen) − r(rejected)",
         "x_label": "margin (reward units)", "series": [{"name": "margin", "values": [_r(m) for m in margins]}],
         "vlines": [{"x": 0.0, "label": "wrong order below"}]},
        {"kind": "reliability", "title": "Reliability of σ(margin)", "bins": bins, "ece": _r(ece),
         "x_label": "confidence max(σ(m), 1 − σ(m))"},
    ]
    if categories:
        names = sorted(categories)
        charts.append({"kind": "bar", "title": "Accuracy per category", "categories": names,
                       "y_label": "accuracy", "series": [{"name": "accuracy", "values": [categories[c]["accuracy"] for c in names]}],
                       "hlines": [{"y": 0.5, "label": "chance"}]})
    return {"charts": charts}
