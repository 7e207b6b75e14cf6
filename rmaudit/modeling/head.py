"""The scalar reward head: ``Linear(d, 1, bias=False)``, initialised N(0, 1/d) or zeros.

Under Bradley-Terry the loss only sees reward differences, so a bias gets exactly zero
gradient: it is unidentifiable and rmaudit leaves it off. ``bias=True`` exists only as an
ablation so that the ``bias_term`` probe has a real case to find.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rmaudit.modeling.pooling import scalar_head

HEAD_INITS = ("normal", "zeros")


def init_head(model: nn.Module, *, init: str = "normal", bias: bool = False, seed: int = 0) -> dict:
    """Replace the model's scalar head with a fresh one and return its init statistics.

    The statistics go into the manifest so an audit can tell later whether anything but
    the optimiser touched the head (e.g. a bias that drifted although its gradient is 0).
    Where the model's class gives its head a bias (BERT's ``classifier``, RoBERTa's
    ``classifier.out_proj``) the head keeps one at exactly 0, which Bradley-Terry never moves:
    a checkpoint without the key would load with it "missing" and freshly initialised.
    """
    if init not in HEAD_INITS:
        raise ValueError(f"head init must be one of {HEAD_INITS}, got {init!r}")
    name, old = scalar_head(model)
    d = old.in_features
    generator = torch.Generator().manual_seed(seed)
    head = nn.Linear(d, 1, bias=bias or old.bias is not None, dtype=old.weight.dtype, device=old.weight.device)
    with torch.no_grad():
        if init == "normal":
            weight = torch.randn(1, d, generator=generator) / math.sqrt(d)
        else:
            weight = torch.zeros(1, d)
        head.weight.copy_(weight)
        if bias:
            # A deliberately non-zero bias (the ablation): BT never moves it.
            head.bias.copy_(torch.empty(1).uniform_(-0.5, 0.5, generator=generator))
        elif head.bias is not None:
            # Frozen: its gradient is zero only up to rounding, and Adam divides a gradient of
            # 1e-9 by its own size, so a trainable zero bias drifts by about lr a step.
            head.bias.zero_()
            head.bias.requires_grad_(False)
    parent, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent), attribute, head)
    return head_stats(head, init=init)


def head_stats(head: nn.Linear, *, init: str | None = None) -> dict:
    """Summary of a head's parameters, for the manifest."""
    weight = head.weight.detach().float()
    stats = {
        "in_features": head.in_features,
        "weight_mean": float(weight.mean()),
        "weight_std": float(weight.std()),
        "weight_norm": float(weight.norm()),
        "bias": float(head.bias.detach().float().item()) if head.bias is not None else None,
    }
    if init is not None:
        stats["init"] = init
    return stats
