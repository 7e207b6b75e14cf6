"""The Bradley-Terry pairwise loss and the per-batch statistics logged with it."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def split_stacked(rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split rewards of a stacked forward (chosen rows first, then rejected) into (chosen, rejected)."""
    chosen, rejected = rewards.chunk(2)
    return chosen, rejected


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor,
                       margin: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``-log sigmoid(r_chosen - r_rejected - margin)`` over pairs.

    ``F.logsigmoid`` keeps the loss finite for large negative margins, where
    ``log(sigmoid(x))`` underflows to ``-inf``. ``margin`` (Llama-2 style) demands
    that the chosen reward beat the rejected one by at least that much.
    """
    diff = chosen.float() - rejected.float()
    if margin is not None:
        diff = diff - margin.float()
    return -F.logsigmoid(diff).mean()


@torch.no_grad()
def pair_statistics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
    """Accuracy, mean margin and reward mean/std of a set of pairs (for logs and evaluation)."""
    chosen, rejected = chosen.float(), rejected.float()
    both = torch.cat([chosen, rejected])
    return {
        "accuracy": (chosen > rejected).float().mean().item(),
        "margin": (chosen - rejected).mean().item(),
        "reward_mean": both.mean().item(),
        "reward_std": both.std(unbiased=False).item(),
    }
