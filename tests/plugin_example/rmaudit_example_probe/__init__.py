"""An example third-party probe: fails a reward model whose rewards barely vary."""

from __future__ import annotations

import numpy as np

from rmaudit.findings import Comparison, Limit
from rmaudit.probes.base import Probe, metric


class RewardSpread(Probe):
    """Score the canonical battery and fail when the reward std is close to zero: a reward
    PPO cannot tell apart gives it no signal (a collapsed or untrained head)."""

    name = "reward_spread"
    description = "Is there any spread in the reward over the canonical battery?"
    why = ("A reward that is nearly constant gives PPO no gradient to follow.\n"
           "Scores the canonical pairs and grades the standard deviation of their rewards.")
    inputs = ("model", "canonical_pairs")
    limits = (Limit("reward_std", Comparison.BELOW, fail=1e-6, help="std of rewards over the battery"),)

    def run(self, ctx):
        chosen, rejected = ctx.pair_rewards(ctx.canonical_pairs)
        std = float(np.concatenate([chosen, rejected]).std())
        finding = self.limit("reward_std").check(metric(std, 8), f"rewards vary by {std:.3g} (std) over the battery")
        return self.result([finding], f"reward std {std:.3g}", metrics={"reward_std": metric(std, 8)})
