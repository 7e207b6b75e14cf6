"""Probe `accuracy`: held-out accuracy, margin distribution and calibration of sigma(margin).

Under Bradley-Terry the RM claims ``P(chosen beats rejected) = sigma(margin)``. Accuracy
is the fraction of held-out pairs with ``margin > 0``, a tie counting half (the one tie
rule, ``rmaudit/stats.py``). Its 95% interval is Wilson's when every pair has its own
prompt, and a bootstrap over prompts when prompts repeat (pairs that share a prompt are
not independent evidence). Calibration is read top-label style: each pair's confidence is
``max(sigma(m), 1 - sigma(m))`` and it is right when ``m > 0``; the expected calibration
error (ECE) is the count-weighted gap between mean confidence and accuracy over 10 equal
bins on [0.5, 1]. An RM that is right 65% of the time with margins of 5 (claims 99%) is
overconfident: PPO will chase its rewards far harder than the evidence allows.

Default limits (reference chapter: a useful RM reaches >= 0.70 held out): accuracy < 0.55
fails (barely above a coin), < 0.60 warns; ECE >= 0.15 warns; a category with at least
10 pairs and accuracy < 0.5 warns (the RM is inverted on a slice even if fine overall).

Precision: when the audit reads rewards in bfloat16 (``--dtype auto`` on hardware that runs
it natively), the short held-out pairs of ``ctx.short_pairs`` are read again in float32 from
the checkpoint's own weights, and the report gives how many pair verdicts bf16 flips and how
far the rewards moved (on SmolLM2 hh a median 0.04 reward-std, most of it the rounding of the
weights themselves). When 10% or more of them flip, that warns and the accuracy itself is
graded on every held-out pair read in float32, so bf16 noise cannot move its verdict.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from rmaudit.data.pairs import PreferencePair
from rmaudit.data.split import prompt_keys
from rmaudit.findings import Comparison, Finding, Limit, Setting, Status
from rmaudit.probes.base import Probe, ProbeSkipped, clip_evidence, dtype_name, metric, with_reasons
from rmaudit.probes.context import RenderedPairs
from rmaudit.probes.padding import model_dtype
from rmaudit.stats import cluster_bootstrap_interval, pair_credit, sigmoid, wilson_interval

N_BINS = 10
EVIDENCE_ROWS = 20


def calibration_bins(margins: np.ndarray, n_bins: int = N_BINS) -> tuple[float, list[dict[str, Any]]]:
    """(ECE, reliability bins) of sigma(margin), top-label, with equal bins on [0.5, 1].

    A tie (margin 0) has confidence 0.5 and counts as half right: it predicts nothing.
    """
    confidence = sigmoid(np.abs(margins))
    correct = pair_credit(margins)
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


class AccuracyProbe(Probe):
    """Held-out accuracy with its interval, margin quantiles, ECE of sigma(margin) and
    accuracy per category; fail near chance, warn on miscalibration or an inverted slice."""

    name = "accuracy"
    order = 70
    description = "Held-out accuracy, margin distribution and calibration (ECE) of sigma(margin), per category."
    why = ("How often the RM ranks held-out pairs the way people did, and whether sigma(margin) means what it says.\n"
           "An RM near chance gives PPO noise to optimise; an overconfident one makes PPO over-trust small differences.")
    inputs = ("model", "eval_pairs")
    limits = (
        Limit("accuracy", Comparison.BELOW, warn=0.60, fail=0.55, help="held-out accuracy (ties count half)"),
        Limit("ece", Comparison.AT_LEAST, warn=0.15, help="expected calibration error of sigma(margin)"),
        Limit("category_accuracy", Comparison.BELOW, warn=0.5,
              help="accuracy of one category with at least category_min_pairs pairs"),
        Limit("float32_flipped_share", Comparison.AT_LEAST, warn=0.1,
              help="share of the float32 check's pairs whose verdict differs between the audit's dtype and float32"),
    )
    settings = (Setting("category_min_pairs", 10, "categories with fewer pairs are not graded"),)

    def run(self, ctx):
        pairs = ctx.preference_pairs()
        if not pairs:
            raise ProbeSkipped("every held-out pair has identical chosen and rejected responses")
        std = ctx.reward_std()
        precision: dict[str, Any] = {}
        check = self._float32_check(ctx, precision, std)
        chosen, rejected = ctx.pair_rewards(pairs)
        regraded = any(f.status is not Status.PASS for f in check)
        if regraded:
            # bf16 flips too many checked verdicts to grade accuracy on it: grade it on float32.
            exact = ctx.float32_rewards(RenderedPairs(ctx, pairs), alone=False)  # rendered as scored
            chosen, rejected = exact[:len(pairs)], exact[len(pairs):]
            check[0].message += "; accuracy was therefore read in float32 on every held-out pair"
        margins = chosen - rejected
        ece, bins = calibration_bins(margins)
        categories = _per_category(pairs, margins)
        metrics = {**_overall(pairs, margins, std), "ece": metric(ece),
                   "identical_pairs_excluded": len(ctx.eval_pairs) - len(pairs), **_flatten(categories), **precision,
                   "read_in": "float32" if regraded else dtype_name(model_dtype(ctx))}
        findings = self._findings(metrics, categories) + check
        return self.result(
            findings, with_reasons(_summary(metrics), findings), metrics=metrics,
            evidence=_evidence(pairs, chosen, rejected, margins),
            chart=_chart(margins, bins, ece, categories),
        )

    def _findings(self, metrics: dict[str, Any], categories: dict[str, dict[str, Any]]) -> list[Finding]:
        findings = [
            self.limit("accuracy").check(metrics["accuracy"], (
                f"accuracy {metrics['accuracy']:.3f} on {metrics['n_pairs']} held-out pairs "
                f"({_interval(metrics)}, {metrics['accuracy_ci_method']})")),
            self.limit("ece").check(metrics["ece"], f"sigma(margin) is off from the observed accuracy by "
                                                    f"{metrics['ece']:.3f} on average (ECE)"),
        ]
        for category, values in categories.items():
            if values["n"] >= self.setting("category_min_pairs"):
                finding = self.limit("category_accuracy").check(
                    values["accuracy"], f"accuracy {values['accuracy']:.3f} on the {values['n']} pairs of "
                                        f"category {category!r}", metric=f"accuracy[{category}]")
                if finding.status is not Status.PASS:
                    finding.message += ": the RM is inverted on this slice"
                findings.append(finding)
        return findings

    def _float32_check(self, ctx, metrics: dict[str, Any], std: float) -> list[Finding]:
        """In an audit that reads rewards in bfloat16: the same short held-out pairs read in
        float32 from the checkpoint's own weights (``ctx.float32_rewards``, shared with
        inference_invariance), and how many pair verdicts the audit's dtype flips."""
        dtype = model_dtype(ctx)
        if dtype == torch.float32:
            return []
        pairs, audit, exact = ctx.precision_sample()
        n, name = len(pairs), dtype_name(dtype)
        audit_margin, exact_margin = audit[:n] - audit[n:], exact[:n] - exact[n:]
        flipped = int((np.sign(audit_margin) != np.sign(exact_margin)).sum())
        scale = std if math.isfinite(std) and std > 0 else float(exact.std()) or 1.0
        delta = np.abs(audit - exact) / scale
        metrics.update({
            "float32_check_pairs": n, "float32_flipped_pairs": flipped, "float32_flipped_share": metric(flipped / n),
            "float32_accuracy": metric(float(pair_credit(exact_margin).mean())),
            "float32_check_accuracy": metric(float(pair_credit(audit_margin).mean())),
            "float32_median_delta_std": metric(float(np.median(delta)), 6),
            "float32_max_delta_std": metric(float(delta.max()), 6),
        })
        finding = self.limit("float32_flipped_share").check(metrics["float32_flipped_share"], (
            f"{name} vs float32 on {n} short held-out pairs: {flipped} verdict(s) flip, rewards move by a median "
            f"{metrics['float32_median_delta_std']:.2g} reward-std (max {metrics['float32_max_delta_std']:.2g}); "
            f"accuracy on them {metrics['float32_check_accuracy']:.3f} in {name}, "
            f"{metrics['float32_accuracy']:.3f} in float32"))
        if finding.status is not Status.PASS:
            finding.message += ": the other probes' numbers near their limits may differ in float32 (--dtype float32 reads all exactly)"
        return [finding]


def accuracy_interval(pairs: Sequence[PreferencePair], credit: np.ndarray) -> tuple[float, float, str]:
    """95% interval of the accuracy: Wilson when every prompt is unique, else clustered by prompt."""
    prompts = prompt_keys(pairs)
    n_prompts = len(np.unique(prompts))
    if n_prompts == len(prompts):
        return (*wilson_interval(float(credit.sum()), len(credit)), "Wilson")
    low, high = cluster_bootstrap_interval(credit, prompts)
    return low, high, f"bootstrap over {n_prompts} prompts"


def _overall(pairs: Sequence[PreferencePair], margins: np.ndarray, std: float) -> dict[str, Any]:
    n = len(margins)
    credit = pair_credit(margins)
    low, high, method = accuracy_interval(pairs, credit)
    q = np.quantile(margins, [0.05, 0.25, 0.5, 0.75, 0.95])
    scale = std if math.isfinite(std) and std > 0 else float("nan")
    return {
        "n_pairs": n,
        "accuracy": metric(float(credit.mean())),
        "accuracy_ci_low": metric(low),
        "accuracy_ci_high": metric(high),
        "accuracy_ci_method": method,
        "ties": int((margins == 0).sum()),
        "bt_loss": metric(float(np.logaddexp(0.0, -margins).mean())),
        "mean_margin": metric(margins.mean()),
        "std_margin": metric(margins.std()),
        "margin_p05": metric(q[0]), "margin_p25": metric(q[1]), "margin_median": metric(q[2]),
        "margin_p75": metric(q[3]), "margin_p95": metric(q[4]),
        "mean_margin_std": metric(margins.mean() / scale),
        "mean_confidence": metric(sigmoid(np.abs(margins)).mean()),
        "reward_std": metric(std, 6),
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
        out[category] = {"n": len(m), "accuracy": metric(float(pair_credit(m).mean())), "mean_margin": metric(m.mean())}
    return out


def _flatten(categories: dict[str, dict[str, Any]]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for category, values in categories.items():
        flat[f"accuracy[{category}]"] = values["accuracy"]
        flat[f"n_pairs[{category}]"] = values["n"]
    return flat


def _summary(metrics: dict[str, Any]) -> str:
    return (f"accuracy {metrics['accuracy']:.3f} on {metrics['n_pairs']} held-out pairs "
            f"({_interval(metrics)}); "
            f"ECE {metrics['ece']:.3f}; mean margin {metrics['mean_margin']:+.3f}")


def _interval(metrics: dict[str, Any]) -> str:
    """The accuracy's 95% interval, or why there is none (every pair shares one prompt: one
    cluster cannot be resampled, and its pairs are not independent evidence)."""
    low, high = metrics["accuracy_ci_low"], metrics["accuracy_ci_high"]
    if low is None or high is None:
        return "no 95% CI: every pair shares one prompt"
    return f"95% CI {low:.3f}–{high:.3f}"


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
            "reward_chosen": metric(chosen[i]),
            "reward_rejected": metric(rejected[i]),
            "margin": metric(margins[i]),
            "p_chosen": metric(float(sigmoid(np.array(margins[i])))),
            "correct": bool(margins[i] > 0),
            "source": f"{Path(pair.source).name}:{pair.row}" if pair.source else "",
        })
    return rows


def _chart(margins, bins, ece, categories) -> dict[str, Any]:
    charts: list[dict[str, Any]] = [
        {"kind": "histogram", "title": "Held-out margins r(chosen) − r(rejected)",
         "x_label": "margin (reward units)", "series": [{"name": "margin", "values": [metric(m) for m in margins]}],
         "vlines": [{"x": 0.0, "label": "wrong order below"}]},
        {"kind": "reliability", "title": "Reliability of σ(margin)", "bins": bins, "ece": metric(ece),
         "x_label": "confidence max(σ(m), 1 − σ(m))"},
    ]
    if categories:
        names = sorted(categories)
        charts.append({"kind": "bar", "title": "Accuracy per category", "categories": names,
                       "y_label": "accuracy", "series": [{"name": "accuracy", "values": [categories[c]["accuracy"] for c in names]}],
                       "hlines": [{"y": 0.5, "label": "chance"}]})
    return {"charts": charts}
