"""A preference pair as ONE packed row: the shared prompt once, then each side's own tokens.

Chosen and rejected begin with the same prompt tokens. The plain stacked forward runs them
twice; a packed row runs ``shared + chosen's own + rejected's own`` tokens once, with a tree
mask: every token attends causally to the shared tokens and to earlier tokens of its own
side, never to the other side, and each side's positions continue from the shared tokens as
in its own sequence. A causal decoder then computes every hidden state exactly as in the
plain forward (up to summation order), so the loss and gradients are the plain ones (tested
per architecture in tests/test_packing.py). It is the prefix-shared packing of Wang & Hegde
2024 (arXiv:2410.20305), one forward and one backward per step.

On held-out hh-rlhf the prompt is about three quarters of each text: grouped by packed width,
a packed batch of 400 pairs forwards 0.65 cells per real token where the stacked one forwards
1.12 (docs/decisions.md "0.5.3"). An earlier version ran the prompt first and both sides
against copies of its key/value cache: two forwards and two weight-gradient passes per step,
slower than the plain forward on a 2-core AMD EPYC with AVX512-BF16 (221 against 265 real
tokens/s on SmolLM2-135M). One packed forward has no such cost.

Only models whose attention takes an arbitrary 4-D mask are packed (:func:`packing_support`):
``sdpa`` takes a boolean one, ``eager`` an additive one; flash-attention kernels take none.
"""

from __future__ import annotations

from typing import Any

import torch

from rmaudit.modeling.pooling import apply_head, reward_body
from rmaudit.prefix_sharing import prefix_sharing_support
from rmaudit.tree_attention import attention_implementation

# Attention implementations that read a custom (batch, 1, query, key) mask, and how they read it.
MASKED_ATTENTION = ("sdpa", "eager")
PAD, SHARED, CHOSEN, REJECTED = -1, 0, 1, 2  # what each column of a packed row holds


def packing_support(model: Any, max_length: int | None = None) -> tuple[bool, str]:
    """(whether a pair may be packed into one row for this model, why). ``max_length``: the
    longest sequence trained on, which a sliding window must cover."""
    supported, why = prefix_sharing_support(model)  # the same exactness conditions as a cached prefix
    if not supported:
        return False, why
    config = model.config
    window = getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None
    if window and (max_length is None or max_length > window):
        # One 4-D tree mask serves every layer, so a windowed layer would see past its window
        # in a sequence longer than it; within it, the window hides nothing.
        return False, (f"{config.model_type} attends through a sliding window of {window} tokens, shorter than "
                       f"the longest sequence ({max_length or 'unbounded'}), which one packed mask cannot window")
    attention = attention_implementation(model)
    if attention not in MASKED_ATTENTION:
        return False, f"attention {attention!r} takes no custom mask (packing needs {' or '.join(MASKED_ATTENTION)})"
    return True, f"{why}, {attention} attention"


def packed_widths(attention_mask: torch.Tensor, shared: torch.Tensor) -> list[int]:
    """Columns of each pair's packed row, from the stacked (2B, L) mask: chosen + rejected - shared."""
    lengths = attention_mask.sum(dim=1).tolist()
    n_pairs = len(shared)
    return [lengths[i] + lengths[i + n_pairs] - int(shared[i]) for i in range(n_pairs)]


def packed_padded_fraction(attention_mask: torch.Tensor, shared: torch.Tensor) -> float:
    """Share of a packed batch's cells that are padding."""
    widths = packed_widths(attention_mask, shared)
    return 1.0 - sum(widths) / (len(widths) * max(widths))


def packed_pair_rewards(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        shared: torch.Tensor) -> torch.Tensor:
    """(2B,) float32 rewards of a training batch, chosen rows then rejected rows as in the
    stacked (2B, L) right-padded input, pair i sharing its first ``shared[i]`` tokens (fewer
    than either side's length; 0 is allowed). One forward over B packed rows; differentiable."""
    ids, positions, segments, reads = _pack(input_ids, attention_mask, shared)
    device = input_ids.device
    attention = attention_implementation(model)
    mask = _tree_mask(segments.to(device), additive=attention == "eager")
    hidden = reward_body(model)(input_ids=ids.to(device), attention_mask=mask, position_ids=positions.to(device),
                                use_cache=False).last_hidden_state
    rows = torch.arange(len(shared), device=device).repeat(2)
    return apply_head(model, hidden[rows, reads.to(device)])


def _pack(input_ids: torch.Tensor, attention_mask: torch.Tensor,
          shared: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, positions, segments) of the (B, W) packed rows, and the (2B,) columns where the
    chosen then the rejected rewards are read (each side's last token)."""
    n_pairs = len(shared)
    lengths = attention_mask.sum(dim=1).tolist()
    widths = packed_widths(attention_mask, shared)
    width = max(widths)
    ids = torch.zeros((n_pairs, width), dtype=torch.long)
    positions = torch.zeros((n_pairs, width), dtype=torch.long)
    segments = torch.full((n_pairs, width), PAD, dtype=torch.long)
    reads = torch.zeros(2 * n_pairs, dtype=torch.long)
    source = input_ids.cpu()
    for i in range(n_pairs):
        common, chosen, rejected = int(shared[i]), lengths[i], lengths[i + n_pairs]
        ids[i, :chosen] = source[i, :chosen]
        ids[i, chosen:widths[i]] = source[i + n_pairs, common:rejected]
        positions[i, :chosen] = torch.arange(chosen)
        positions[i, chosen:widths[i]] = torch.arange(common, rejected)
        segments[i, :common], segments[i, common:chosen], segments[i, chosen:widths[i]] = SHARED, CHOSEN, REJECTED
        reads[i], reads[i + n_pairs] = chosen - 1, widths[i] - 1
    return ids, positions, segments, reads


def _tree_mask(segments: torch.Tensor, additive: bool) -> torch.Tensor:
    """(B, 1, W, W) mask: query q sees key k when k <= q and k is a shared token or of q's own
    side. A pad column sees itself only, so no softmax row is empty (its output is never read).
    Boolean (True: attend) for sdpa; 0 / the float32 minimum for eager, which adds it."""
    width = segments.size(1)
    columns = torch.arange(width, device=segments.device)
    causal = columns[None, :] <= columns[:, None]
    key, query = segments[:, None, :], segments[:, :, None]
    allowed = causal[None] & (key != PAD) & ((key == SHARED) | (key == query))
    allowed |= torch.eye(width, dtype=torch.bool, device=segments.device)[None]
    if not additive:
        return allowed[:, None]
    blocked = torch.zeros(allowed.shape, dtype=torch.float32, device=segments.device)
    return blocked.masked_fill(~allowed, torch.finfo(torch.float32).min)[:, None]
