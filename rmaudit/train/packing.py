"""A training batch as ONE packed row: each pair's shared prompt once, then each side's own tokens.

Chosen and rejected begin with the same prompt tokens. The plain stacked forward runs them
twice; the packed row runs ``shared + chosen's own + rejected's own`` tokens once per pair,
every pair of the batch one after another with no padding. Only attention needs to know the
layout, so it runs as rmaudit's tree attention (rmaudit/tree_attention.py, the audit's
prefix sharing uses it too): each side attends to its prompt and causally to itself, never
to the other side or another pair, and each side's positions continue from the prompt as in
its own sequence. A causal decoder then computes every hidden state exactly as in the plain
forward (up to summation order), so the loss and gradients are the plain ones (tested per
architecture in tests/test_packing.py). It is the prefix-shared packing of Wang & Hegde 2024
(arXiv:2410.20305), one forward and one backward per step.

On held-out hh-rlhf the prompt is about three quarters of each text: a packed batch forwards
about 0.64 tokens per real token, where the stacked one forwards 1.12 cells, its pads included
(docs/decisions.md "0.5.3").
Before 0.5.18 the pairs were padded rows under one (B, 1, W, W) tree mask, which attend over
the whole row width: 1.02-1.08x slower by the medians of two 5-round runs on an AVX2 EPYC
(benchmarks/ablate_tree_packing.py, results/train.md). Above all, a sliding window shorter
than --max-length could not be applied through one mask for every layer, so windowed models
(Gemma 2/3, Mistral) trained stacked. Tree attention is given each layer's window
and Gemma 2's logit cap, as the model's own attention applies them.

Packing needs what sharing a prefix needs (:func:`packing_support`): a tested causal
architecture whose rotary positions do not depend on the sequence length.
"""

from __future__ import annotations

from typing import Any

import torch

from rmaudit.modeling.pooling import apply_head, reward_body
from rmaudit.prefix_sharing import prefix_sharing_support
from rmaudit.tree_attention import SEGMENTS_KWARG, PackedSegment, ran_tree_attention, tree_attention_on


def packing_support(model: Any) -> tuple[bool, str]:
    """(whether a batch's pairs may be packed into one row for this model, why): the same
    exactness conditions as a cached prefix."""
    return prefix_sharing_support(model)


def packed_pair_rewards(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        shared: torch.Tensor) -> torch.Tensor:
    """(2B,) float32 rewards of a training batch, chosen rows then rejected rows as in the
    stacked (2B, L) right-padded input, pair i sharing its first ``shared[i]`` tokens (fewer
    than either side's length; 0 is allowed). One forward over one packed row; differentiable."""
    device = input_ids.device
    ids, positions, segments, reads = _pack(input_ids, attention_mask, shared, device)
    with tree_attention_on(model), ran_tree_attention(model):
        hidden = reward_body(model)(input_ids=ids[None].to(device), position_ids=positions[None].to(device),
                                    use_cache=False, **{SEGMENTS_KWARG: segments}).last_hidden_state[0]
    return apply_head(model, hidden[reads.to(device)])


def _pack(input_ids: torch.Tensor, attention_mask: torch.Tensor, shared: torch.Tensor,
          device: torch.device) -> tuple[torch.Tensor, torch.Tensor, list[PackedSegment], torch.Tensor]:
    """(ids, positions, segments) of the packed row, and the (2B,) columns where the chosen then
    the rejected rewards are read (each side's last token)."""
    n_pairs = len(shared)
    lengths = attention_mask.sum(dim=1).tolist()
    source = input_ids.cpu()
    ids: list[torch.Tensor] = []
    positions: list[torch.Tensor] = []
    segments: list[PackedSegment] = []
    reads = torch.zeros(2 * n_pairs, dtype=torch.long)
    start = 0
    for i in range(n_pairs):
        common, chosen, rejected = int(shared[i]), lengths[i], lengths[i + n_pairs]
        ids += [source[i, :chosen], source[i + n_pairs, common:rejected]]
        positions += [torch.arange(chosen), torch.arange(common, rejected)]
        prompt: tuple[tuple[int, int], ...] = ()
        if common:
            prompt = ((start, start + common),)
            segments.append(PackedSegment.build(start, start + common, (), device))
        end = start + chosen + rejected - common
        segments += [PackedSegment.build(start + common, start + chosen, prompt, device),
                     PackedSegment.build(start + chosen, end, prompt, device)]
        reads[i], reads[i + n_pairs] = start + chosen - 1, end - 1
        start = end
    return torch.cat(ids), torch.cat(positions), segments, reads
