"""AdamW with a separate head learning rate, and the warmup + decay schedule."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

HEAD_PREFIXES = ("score.",)


def is_head_parameter(name: str) -> bool:
    """True for the reward head's parameters (transformers names the head ``score``)."""
    return name.startswith(HEAD_PREFIXES)


def _decays(name: str, param: torch.nn.Parameter) -> bool:
    # Weight decay on biases and norm scales only shrinks them towards 0; the usual practice skips them.
    return param.ndim >= 2 and "norm" not in name


def param_groups(model: torch.nn.Module, lr: float, head_lr_mult: float, weight_decay: float) -> list[dict]:
    """Four AdamW groups: {body, head} x {decay, no decay}; empty groups are left out."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((is_head_parameter(name), _decays(name, param)), []).append(param)
    return [
        {"params": params, "lr": lr * (head_lr_mult if head else 1.0),
         "weight_decay": weight_decay if decay else 0.0, "name": f"{'head' if head else 'body'}"
                                                                  f"{'' if decay else '_no_decay'}"}
        for (head, decay), params in sorted(groups.items())
    ]


# Devices whose fused AdamW kernel torch ships (torch>=2.4, the project's floor).
FUSED_DEVICES = ("cpu", "cuda")


def build_optimizer(model: torch.nn.Module, lr: float, head_lr_mult: float = 1.0,
                    weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW (betas 0.9/0.999, eps 1e-8: the transformers/TRL defaults) with a head lr multiplier,
    the fused kernel where every parameter lives on a device that has it (transformers' default
    optimizer, ``adamw_torch_fused``, since torch 2.8): on SmolLM2-135M on a 2-core AMD EPYC
    with AVX512-BF16 one step took 0.08 s fused against 0.39 s with ``foreach``."""
    fused = all(p.device.type in FUSED_DEVICES and p.dtype.is_floating_point for p in model.parameters())
    return torch.optim.AdamW(param_groups(model, lr, head_lr_mult, weight_decay), lr=lr,
                             betas=(0.9, 0.999), eps=1e-8, fused=fused or None)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float,
                    kind: str) -> LambdaLR:
    """transformers' schedule over ``total_steps`` optimizer steps, warming up for
    ``ceil(warmup_ratio * total)`` (``constant`` warms up, then holds: transformers'
    ``constant_with_warmup``). The warmup stops one step short of the end: transformers'
    warmup runs step 0 at learning rate 0, so a 1-step run would otherwise not train at all."""
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup"}.get(str(kind), str(kind))
    warmup = min(math.ceil(warmup_ratio * total_steps), max(total_steps - 1, 0))
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
