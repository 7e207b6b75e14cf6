"""Probe `reward_scale`: are the rewards finite, of a sane size, and still on the loss's slope?

PPO reads the raw reward (or a running normalisation of it), so its scale is part of the
handoff. Measured on every labelled pair the audit has (held-out pairs, then the canonical
battery):

* **Non-finite rewards.** One NaN or Inf reaches the advantages and poisons every update
  after it; any fails.
* **Saturated pairs.** The Bradley-Terry gradient of a pair is ``sigmoid(-|m|)`` times its
  features: at ``|m| > 4`` it is below 0.018, so the loss has stopped shaping those pairs.
  A large share means the reward scale ran away during training (the chapter's "exploding
  reward"): PPO then sees differences of many units between answers people rated alike.
  The share carries a 95% interval, bootstrapped over prompts.
* **Heavy tails.** The largest robust ``|z|`` of any response's reward: the distance from the
  median in units of 1.4826 x the median absolute deviation (the std for normal data). A
  classical z cannot see an outlier in a small sample - with n rewards it never exceeds
  (n - 1) / sqrt(n), 8.8 for 80 - and the outlier inflates the std it is measured in. A few
  responses far out in the upper tail are what PPO climbs; the evidence lists them.
* **Scale.** Mean, spread and percentiles of the rewards (reported), and the head's weight
  norm against the body's mean pooled hidden-state norm (on a sample; the scoring plan reads
  those norms with the rewards where it shares prefixes, else they are forwarded): their
  product is the largest reward a response aligned with the head could get, and ``reward
  std / that product`` shows how much of the head's reach the data uses.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rmaudit.data.split import prompt_keys
from rmaudit.findings import Comparison, Finding, Limit, Setting
from rmaudit.probes.base import Probe, ProbeSkipped, clip_evidence, metric, percent, with_reasons
from rmaudit.stats import cluster_bootstrap_interval

EVIDENCE_ROWS = 10


class RewardScale(Probe):
    """Finite rewards, the share of saturated pairs (|margin| above the BT slope), the heaviest
    tail in reward-std units, and the head's norm against the body's hidden-state norm."""

    name = "reward_scale"
    order = 78
    section = "Handoff: how PPO will read the reward"
    description = "Rewards finite; share of pairs past the Bradley-Terry slope (|margin| > 4); heavy tails; head vs body norm."
    why = ("PPO optimises the reward's raw numbers: a NaN poisons every update, and a scale that ran away in training\n"
           "gives PPO multi-unit differences between similar answers and a heavy upper tail to climb.")
    inputs = ("model",)
    limits = (
        Limit("nonfinite_rewards", Comparison.ABOVE, fail=0, help="responses whose reward is NaN or infinite"),
        Limit("saturated_share", Comparison.AT_LEAST, warn=0.25, fail=0.5,
              help="share of labelled pairs with |margin| > saturation_margin (the loss gives them almost no gradient)"),
        Limit("max_abs_z", Comparison.AT_LEAST, warn=6.0, fail=10.0,
              help="largest robust |z| = |reward - median| / (1.4826 MAD) over every scored response"),
    )
    settings = (
        Setting("saturation_margin", 4.0, "|margin| above which a pair counts as saturated (sigmoid(-4) = 0.018)"),
        Setting("hidden_sample", 32, "responses whose pooled hidden state is measured for the norm comparison"),
    )

    def run(self, ctx):
        pairs = ctx.labelled_pairs()
        if not pairs:
            raise ProbeSkipped("no labelled pairs: give --data or keep the canonical pairs")
        chosen, rejected = ctx.pair_rewards(pairs)
        rewards = np.concatenate([chosen, rejected])
        finite = np.isfinite(rewards)
        pair_finite = np.isfinite(chosen) & np.isfinite(rejected)
        margins = (chosen - rejected)[pair_finite]
        prompts = prompt_keys(pairs)[pair_finite]
        z = np.full(len(rewards), np.inf)     # signed robust z; a non-finite reward is the most extreme
        if finite.any():
            z[finite] = robust_z(rewards[finite]) * np.sign(rewards[finite] - np.median(rewards[finite]))
        metrics = {
            "n_pairs": len(pairs), "n_responses": len(rewards), "nonfinite_rewards": int((~finite).sum()),
            **_distribution(rewards[finite], np.abs(z[finite])),
            **_saturation(margins, prompts, float(self.setting("saturation_margin"))),
            **_head_reach(ctx, pairs, int(self.setting("hidden_sample")), float(np.std(rewards[finite]))),
        }
        findings = self._findings(metrics)
        return self.result(findings, with_reasons(_summary(metrics), findings), metrics=metrics,
                           evidence=_evidence(pairs, rewards, z) if metrics["reward_mean"] is not None else [],
                           chart=_chart(rewards[finite], margins, float(self.setting("saturation_margin"))))

    def _findings(self, m: dict[str, Any]) -> list[Finding]:
        findings = [self.limit("nonfinite_rewards").check(
            m["nonfinite_rewards"], f"{m['nonfinite_rewards']} of {m['n_responses']} rewards are NaN or infinite")]
        if m["saturated_share"] is not None:
            findings.append(self.limit("saturated_share").check(m["saturated_share"], (
                f"{m['saturated_share']:.1%} of {m['n_scored_pairs']} pairs have |margin| > {m['saturation_margin']:g} "
                f"(95% CI {percent(m['saturated_share_ci_low'])}–{percent(m['saturated_share_ci_high'])}, "
                f"{m['saturated_share_ci_method']}): past the loss's slope")))
        if m["max_abs_z"] is not None:
            findings.append(self.limit("max_abs_z").check(m["max_abs_z"], (
                f"the most extreme reward is {m['max_abs_z']:.1f} robust std from the median (p99 {m['p99_abs_z']:.1f})")))
        return findings


def _distribution(rewards: np.ndarray, z: np.ndarray) -> dict[str, Any]:
    """Statistics of the finite rewards; ``z`` their robust |z|."""
    if len(rewards) < 2:
        return {"reward_mean": None, "reward_std": None, "max_abs_z": None, "p99_abs_z": None}
    mean, std = float(rewards.mean()), float(rewards.std())
    q = np.quantile(rewards, [0.01, 0.05, 0.5, 0.95, 0.99])
    return {"reward_mean": metric(mean), "reward_std": metric(std), "reward_min": metric(rewards.min()),
            "reward_max": metric(rewards.max()), "reward_p01": metric(q[0]), "reward_p05": metric(q[1]),
            "reward_median": metric(q[2]), "reward_p95": metric(q[3]), "reward_p99": metric(q[4]),
            "mean_abs_reward": metric(np.abs(rewards).mean()),
            "max_abs_z": metric(z.max(), 3), "p99_abs_z": metric(np.quantile(z, 0.99), 3)}


def robust_z(rewards: np.ndarray) -> np.ndarray:
    """|reward - median| / (1.4826 MAD); the std stands in when more than half the rewards tie."""
    median = float(np.median(rewards))
    scale = 1.4826 * float(np.median(np.abs(rewards - median))) or float(rewards.std())
    return np.abs(rewards - median) / scale if scale > 0 else np.zeros_like(rewards)


def _saturation(margins: np.ndarray, prompts: np.ndarray, limit: float) -> dict[str, Any]:
    out: dict[str, Any] = {"n_scored_pairs": len(margins), "saturation_margin": limit, "saturated_share": None,
                           "saturated_share_ci_low": None, "saturated_share_ci_high": None,
                           "saturated_share_ci_method": ""}
    if not len(margins):
        return out
    saturated = (np.abs(margins) > limit).astype(np.float64)
    low, high = cluster_bootstrap_interval(saturated, prompts)
    out.update(saturated_share=metric(saturated.mean()), saturated_share_ci_low=metric(low),
               saturated_share_ci_high=metric(high), saturated_share_ci_method=f"bootstrap over {len(set(prompts))} prompts",
               median_abs_margin=metric(np.median(np.abs(margins))))
    return out


def _head_reach(ctx, pairs, sample: int, reward_std: float) -> dict[str, Any]:
    """||w||, the mean pooled hidden norm on a sample of responses, their product and the
    share of it the reward spread uses."""
    from rmaudit.modeling.pooling import scalar_head

    try:
        _, head = scalar_head(ctx.model)
    except (AttributeError, ValueError):
        return {"head_weight_norm": None}
    weight_norm = float(head.weight.detach().float().norm())
    conversations = [p.chosen_messages() for p in pairs[: (sample + 1) // 2]] + [p.rejected_messages() for p in pairs[: sample // 2]]
    norms = ctx.hidden_norms(conversations)  # read with the rewards by the scoring plan where it shared prefixes
    hidden_norm = float(norms.mean()) if len(norms) else float("nan")
    reach = weight_norm * hidden_norm
    return {"head_weight_norm": metric(weight_norm), "hidden_norm_mean": metric(hidden_norm),
            "head_reach": metric(reach), "reward_std_over_reach": metric(reward_std / reach if reach > 0 else float("nan"))}


def _summary(m: dict[str, Any]) -> str:
    parts = [f"{m['n_responses']} rewards, {m['nonfinite_rewards']} non-finite"]
    if m["reward_std"] is not None:
        parts.append(f"mean {m['reward_mean']:+.3f}, std {m['reward_std']:.3f}, max robust |z| {m['max_abs_z']:.1f}")
    if m["saturated_share"] is not None:
        parts.append(f"{m['saturated_share']:.1%} of pairs with |margin| > {m['saturation_margin']:g}")
    if m.get("head_weight_norm") is not None:
        parts.append(f"head norm {m['head_weight_norm']:.3g} x hidden norm {m['hidden_norm_mean']:.3g}")
    return "; ".join(parts)


def _evidence(pairs, rewards: np.ndarray, z: np.ndarray) -> list[dict[str, Any]]:
    """The responses furthest from the median (non-finite first): the tail PPO would climb.
    ``rewards`` and ``z``: every pair's chosen response, then every rejected one."""
    finite = np.isfinite(rewards)
    rows = []
    for i in np.argsort(-np.abs(z), kind="stable")[:EVIDENCE_ROWS]:
        pair, chosen = pairs[i % len(pairs)], i < len(pairs)  # only the rows shown are read back
        rows.append({"prompt": clip_evidence(pair.prompt_text()),
                     "response": clip_evidence(pair.chosen if chosen else pair.rejected),
                     "side": "chosen" if chosen else "rejected",
                     "reward": metric(rewards[i]) if np.isfinite(rewards[i]) else str(rewards[i]),
                     "robust_z": metric(z[i], 2) if finite[i] else None})
    return rows


def _chart(rewards: np.ndarray, margins: np.ndarray, limit: float) -> dict[str, Any]:
    return {"charts": [
        {"kind": "histogram", "title": "Rewards of every scored response", "x_label": "reward",
         "series": [{"name": "reward", "values": [metric(r) for r in rewards]}]},
        {"kind": "histogram", "title": "|margin| of labelled pairs", "x_label": "|r(chosen) − r(rejected)|",
         "series": [{"name": "|margin|", "values": [metric(abs(m)) for m in margins]}],
         "vlines": [{"x": limit, "label": "saturated beyond"}]},
    ]}
