"""Probe `policy_shift`: how far the policy's samples sit from what the RM was trained on.

A reward model is only reliable near its training distribution; PPO moves the policy away
from it, and the reward becomes a guess exactly where the policy goes. Measured in the RM's
own space - the pooled hidden state the head reads:

* a Gaussian fitted to the **training responses** (``--train-data``, or the manifest's train
  split; without one, half of the held-out responses, and the report says so), with a
  Ledoit-Wolf shrunk covariance (there are usually fewer responses than hidden dimensions);
* the Mahalanobis distance of **held-out human responses** to it calibrates the scale: their
  99th percentile is the line a sample from the same distribution crosses 1% of the time;
* the **policy's samples** (``--policy`` or ``--rollouts-file``, shared with
  ``policy_rollouts``): the share beyond that line (95% interval bootstrapped over prompts),
  their median distance over the held-out median, and how the reward moves with distance
  (Spearman; a reward that rises as samples leave the training distribution is what PPO
  climbs into the region where the RM is guessing).

Works on samples from any point of a PPO run (``--rollouts-file`` from step 1000): the
online check the reference chapter recommends.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from rmaudit.data.store import subset
from rmaudit.findings import Comparison, Finding, Limit, Setting, Status, note
from rmaudit.probes.base import Probe, ProbeSkipped, clip_evidence, metric, with_reasons
from rmaudit.stats import cluster_bootstrap_statistic

EVIDENCE_ROWS = 8


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, shrunk covariance, shrinkage) of the rows of ``x``: the Ledoit-Wolf (2004)
    estimate towards a scaled identity, well conditioned when rows < columns."""
    n, d = x.shape
    mean = x.mean(axis=0)
    centred = x - mean
    sample = centred.T @ centred / n
    target = np.trace(sample) / d
    delta = float(((sample - target * np.eye(d)) ** 2).sum()) / d
    # sum_i ||x_i x_i^T - S||_F^2 = sum_i ||x_i||^4 - n ||S||_F^2 (as S is the mean of x_i x_i^T):
    # no d x d outer product per row.
    beta = float((np.einsum("ij,ij->i", centred, centred) ** 2).sum() - n * (sample ** 2).sum()) / (n * n * d)
    shrinkage = min(beta, delta) / delta if delta > 0 else 1.0
    return mean, (1 - shrinkage) * sample + shrinkage * target * np.eye(d), shrinkage


def mahalanobis(x: np.ndarray, mean: np.ndarray, covariance: np.ndarray) -> np.ndarray:
    """Distance of each row of ``x`` to the Gaussian (mean, covariance)."""
    solved = np.linalg.solve(covariance, (x - mean).T)
    return np.sqrt(np.maximum(((x - mean).T * solved).sum(axis=0), 0.0))


class PolicyShift(Probe):
    """Mahalanobis distance of the policy's samples from the RM's training responses in its own
    hidden space, calibrated on held-out responses: the share past their 99th percentile and
    how the reward moves with distance."""

    name = "policy_shift"
    order = 92
    section = "On-policy preflight: the policy's own samples"
    description = "Policy samples vs the RM's training responses in its hidden space: share beyond held-out p99, reward vs distance."
    why = ("The RM is reliable near its training data; PPO moves the policy away from it. Samples already far out, or a\n"
           "reward that grows with the distance, mean PPO will optimise where the RM is guessing.")
    inputs = ("model", "eval_pairs")
    limits = (
        Limit("beyond_p99_share", Comparison.AT_LEAST, warn=0.2, fail=0.5,
              help="share of policy samples farther than the 99th percentile of held-out human responses (expected 0.01)"),
        Limit("reward_distance_spearman", Comparison.AT_LEAST, warn=0.3,
              help="Spearman correlation of reward with distance on policy samples, graded when its interval excludes 0"),
    )
    settings = (Setting("max_responses", 256, "training and held-out responses embedded (each), sampled in file order"),)

    def plan(self, ctx):
        """The labelled pairs and the human responses whose hidden states ``run`` reads, kept
        from the scoring plan's forward of them, as the policy samples' are kept from the
        forward that scores them: each text forwarded once, where prefixes are shared."""
        plans = list(super().plan(ctx))
        if not ctx.has_policy_samples():
            return plans  # the probe will skip: forwarding its responses would be wasted
        reference, held_out, _ = self._human_responses(ctx)
        texts = [ctx.render(c) for c in reference + held_out]
        ctx.keep_hidden(texts)
        ctx.keep_policy_sample_hidden = True
        return [*plans, texts]

    def run(self, ctx):
        rollouts, source = ctx.policy_samples()
        reference, held_out, reference_name = self._human_responses(ctx)
        samples = [r.messages() for r in rollouts]
        texts = [ctx.render(c) for c in samples]
        ctx.keep_hidden(texts)  # read by the forward that scores them, if it is this one
        rewards = ctx.score_texts(texts)
        h_ref = ctx.pooled_hidden(reference)
        h_held = ctx.pooled_hidden(held_out)
        h_policy = ctx.pooled_hidden(samples)
        mean, covariance, shrinkage = ledoit_wolf(h_ref)
        d_held, d_policy = mahalanobis(h_held, mean, covariance), mahalanobis(h_policy, mean, covariance)
        prompts = np.array([r.prompt_id for r in rollouts])
        metrics = {"rollouts_source": source, "reference": reference_name, "n_reference": len(reference),
                   "n_held_out": len(held_out), "n_samples": len(rollouts), "hidden_dim": int(h_ref.shape[1]),
                   "shrinkage": metric(shrinkage), **_distances(d_held, d_policy, prompts),
                   **_reward_trend(d_policy, rewards, prompts)}
        findings = self._findings(metrics)
        return self.result(findings, with_reasons(_summary(metrics), findings), metrics=metrics,
                           evidence=_evidence(rollouts, d_policy, rewards, metrics["held_out_p99"]),
                           chart=_chart(d_held, d_policy, rewards, metrics["held_out_p99"]))

    def _human_responses(self, ctx) -> tuple[list, list, str]:
        """(reference conversations, held-out conversations, what the reference is)."""
        cap = int(self.setting("max_responses"))
        if ctx.train_pairs:
            return (_conversations(ctx.train_pairs, 0, cap), _conversations(ctx.eval_pairs, 0, cap),
                    "training responses")
        n = 2 * len(ctx.eval_pairs)
        if n < 8:
            raise ProbeSkipped("no training responses (--train-data) and too few held-out ones to split")
        half = n // 2
        return (_conversations(ctx.eval_pairs, 0, min(half, cap)), _conversations(ctx.eval_pairs, half, half + cap),
                "half of the held-out responses (no --train-data or manifest split)")

    def _findings(self, m: dict[str, Any]) -> list[Finding]:
        findings = [self.limit("beyond_p99_share").check(m["beyond_p99_share"], (
            f"{m['beyond_p99_share']:.1%} of {m['n_samples']} policy samples lie beyond the 99th percentile of held-out "
            f"human responses (95% CI {m['beyond_p99_share_ci_low']:.1%}–{m['beyond_p99_share_ci_high']:.1%}; 1% "
            f"expected); median distance {m['distance_ratio']:.2f}x the held-out median"))]
        if m["n_held_out"] < 100:
            findings.append(note(Status.PASS, f"only {m['n_held_out']} held-out responses calibrate the 99th percentile "
                                              "(with fewer than 100 it is close to their maximum): give a larger --data"))
        if m["reference"] != "training responses":
            findings.append(note(Status.PASS, f"the reference distribution is {m['reference']}: train-split data would "
                                              "measure the shift from what the RM was actually trained on"))
        rho, low = m["reward_distance_spearman"], m["reward_distance_spearman_ci_low"]
        if rho is None:
            return findings
        message = (f"on policy samples the reward's Spearman correlation with distance is {rho:+.2f} (95% CI "
                   f"{low:+.2f} to {m['reward_distance_spearman_ci_high']:+.2f})")
        if low is not None and low > 0:
            finding = self.limit("reward_distance_spearman").check(rho, message)
            if finding.status is not Status.PASS:
                finding.message += ": the reward grows as samples leave the RM's training distribution"
            findings.append(finding)
        else:
            findings.append(note(Status.PASS, message, "reward_distance_spearman", rho))
        return findings


def _distances(d_held: np.ndarray, d_policy: np.ndarray, prompts: np.ndarray) -> dict[str, Any]:
    p99 = float(np.quantile(d_held, 0.99))
    beyond = (d_policy > p99).astype(np.float64)
    low, high = cluster_bootstrap_statistic(lambda rows: float(beyond[rows].mean()), prompts)
    return {"held_out_p99": metric(p99), "held_out_median": metric(np.median(d_held)),
            "policy_median": metric(np.median(d_policy)),
            "distance_ratio": metric(float(np.median(d_policy) / np.median(d_held)) if np.median(d_held) > 0 else None),
            "beyond_p99_share": metric(beyond.mean()), "beyond_p99_share_ci_low": metric(low),
            "beyond_p99_share_ci_high": metric(high)}


def _reward_trend(distance: np.ndarray, rewards: np.ndarray, prompts: np.ndarray) -> dict[str, Any]:
    keep = np.isfinite(rewards)
    if keep.sum() < 5 or np.ptp(distance[keep]) == 0 or np.ptp(rewards[keep]) == 0:
        return {"reward_distance_spearman": None, "reward_distance_spearman_ci_low": None,
                "reward_distance_spearman_ci_high": None}
    d, r, p = distance[keep], rewards[keep], prompts[keep]

    def rho(rows: np.ndarray) -> float:
        if np.ptp(d[rows]) == 0 or np.ptp(r[rows]) == 0:
            return float("nan")
        return float(stats.spearmanr(d[rows], r[rows]).statistic)

    low, high = cluster_bootstrap_statistic(rho, p)
    return {"reward_distance_spearman": metric(rho(np.arange(len(d)))), "reward_distance_spearman_ci_low": metric(low),
            "reward_distance_spearman_ci_high": metric(high)}


def _summary(m: dict[str, Any]) -> str:
    text = (f"{m['beyond_p99_share']:.0%} of {m['n_samples']} policy samples beyond the held-out p99 distance; "
            f"median distance {m['distance_ratio']:.2f}x held-out")
    if m["reward_distance_spearman"] is not None:
        text += f"; reward vs distance Spearman {m['reward_distance_spearman']:+.2f}"
    return text


def _evidence(rollouts, distance: np.ndarray, rewards: np.ndarray, p99: float) -> list[dict[str, Any]]:
    """The farthest policy samples."""
    return [{"prompt": clip_evidence(rollouts[i].prompt[-1]["content"]), "response": clip_evidence(rollouts[i].response),
             "distance": metric(distance[i], 2), "over_held_out_p99": metric(distance[i] / p99 if p99 else None, 2),
             "reward": metric(rewards[i])}
            for i in np.argsort(-distance, kind="stable")[:EVIDENCE_ROWS]]


def _chart(d_held: np.ndarray, d_policy: np.ndarray, rewards: np.ndarray, p99: float) -> dict[str, Any]:
    return {"charts": [
        {"kind": "histogram", "title": "Distance to the RM's training responses (its hidden space)",
         "x_label": "Mahalanobis distance", "series": [
             {"name": "held-out human responses", "values": [metric(v) for v in d_held]},
             {"name": "policy samples", "values": [metric(v) for v in d_policy]}],
         "vlines": [{"x": p99, "label": "held-out p99"}]},
        {"kind": "scatter", "title": "Reward vs distance on policy samples", "x_label": "Mahalanobis distance",
         "y_label": "reward", "series": [{"name": "sample", "x": [metric(v) for v in d_policy],
                                           "y": [metric(v) for v in rewards]}]},
    ]}


def _conversations(pairs, start: int, stop: int) -> list:
    """Conversations ``start:stop`` of the pairs' chosen, rejected, chosen, ... sequence,
    reading only the pairs they come from."""
    out = []
    for k, pair in enumerate(subset(pairs, range(start // 2, min(len(pairs), (stop + 1) // 2))), start=start // 2):
        out += [c for j, c in ((2 * k, pair.chosen_messages()), (2 * k + 1, pair.rejected_messages())) if start <= j < stop]
    return out
