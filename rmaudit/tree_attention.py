"""Attention over a packed prefix tree: many token sequences in one row, shared prefixes once.

The linear layers, norms and MLPs of a decoder treat every token alike; only attention mixes
them. So sequences can be packed into one row of a forward pass with no padding, and only
attention needs to know the structure: each *segment* of the row (a run of tokens of one
sequence) attends causally to itself and fully to its *ancestors*, the segments that come
before it in its sequence (a shared system prompt, a shared user turn). A chosen and a
rejected answer are two segments whose one ancestor is their prompt, placed once in the row.

transformers looks the attention function up by name at every forward
(``config._attn_implementation``, ``ALL_ATTENTION_FUNCTIONS``), so :func:`tree_attention_on`
swaps it in for the duration of the packed forward and restores the model's own; the segment
layout travels as a keyword argument, which the decoder layers hand to the attention function
unchanged. Each segment is one ``scaled_dot_product_attention`` call, the same kernel a
plain forward runs (rmaudit/prefix_sharing.py; tests/test_prefix_sharing.py compares every
tested architecture with its plain forward).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

NAME = "rmaudit_tree"
SEGMENTS_KWARG = "rmaudit_segments"
CALLS = [0]  # tree_attention calls so far: a packed forward that made none read its rows unisolated


@dataclass
class PackedSegment:
    """Columns ``start:end`` of the packed row, attending to the ``ancestors`` spans (start,
    end) in order before them; ``mask`` is the (own, ancestors + own) boolean mask, None where
    there are no ancestors (plain causal attention)."""

    start: int
    end: int
    ancestors: tuple[tuple[int, int], ...]
    mask: torch.Tensor | None = None

    @classmethod
    def build(cls, start: int, end: int, ancestors: Sequence[tuple[int, int]], device: torch.device) -> "PackedSegment":
        if not ancestors:
            return cls(start, end, ())
        own, before = end - start, sum(e - s for s, e in ancestors)
        mask = torch.ones(own, before + own, dtype=torch.bool, device=device)
        mask[:, before:] = torch.ones(own, own, dtype=torch.bool, device=device).tril()
        return cls(start, end, tuple(ancestors), mask)


def tree_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                   **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: ``query`` (1, heads, row, head dim),
    ``key``/``value`` (1, key/value heads, row, head dim); returns (1, row, heads, head dim)."""
    segments: Sequence[PackedSegment] = kwargs[SEGMENTS_KWARG]
    CALLS[0] += 1
    if kwargs.get("softcap") is not None or kwargs.get("sliding_window") is not None:
        raise ValueError("tree attention has no softcap or sliding window (prefix_sharing_support excludes them)")
    gqa = query.size(1) != key.size(1)
    out = query.new_empty(*query.shape[:3], value.size(3))
    ancestors: dict[tuple[tuple[int, int], ...], tuple[torch.Tensor, torch.Tensor]] = {}  # siblings share theirs
    for seg in segments:
        own = slice(seg.start, seg.end)
        keys, values = key[:, :, own], value[:, :, own]
        if seg.ancestors:
            if seg.ancestors not in ancestors:
                ancestors[seg.ancestors] = (torch.cat([key[:, :, s:e] for s, e in seg.ancestors], dim=2),
                                            torch.cat([value[:, :, s:e] for s, e in seg.ancestors], dim=2))
            before_keys, before_values = ancestors[seg.ancestors]
            keys, values = torch.cat([before_keys, keys], dim=2), torch.cat([before_values, values], dim=2)
        out[:, :, own] = torch.nn.functional.scaled_dot_product_attention(
            query[:, :, own], keys, values, attn_mask=seg.mask, is_causal=seg.mask is None, scale=scaling,
            enable_gqa=gqa)
    return out.transpose(1, 2).contiguous(), None


def _no_mask(*args: Any, **kwargs: Any) -> None:
    """The packed row needs no 4D mask: :func:`tree_attention` builds each segment's own."""
    return None


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, tree_attention)
    AttentionMaskInterface.register(NAME, _no_mask)


@contextlib.contextmanager
def tree_attention_on(model: Any) -> Iterator[None]:
    """Run ``model``'s attention as :func:`tree_attention` inside the block, its own after."""
    register()
    config = model.config
    own = config._attn_implementation
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = own


@contextlib.contextmanager
def ran_tree_attention(model: Any) -> Iterator[None]:
    """Fail loudly where a forward inside the block never called :func:`tree_attention`: an
    architecture whose attention does not go through transformers' attention interface (or
    drops the keyword arguments on the way) would let every text of a row attend to the
    texts packed before it, a wrong reward that nothing else would flag at once."""
    before = CALLS[0]
    yield
    if CALLS[0] == before:
        raise RuntimeError(f"{getattr(model.config, 'model_type', '?')}: the packed forward never ran rmaudit's tree "
                           "attention (its attention bypasses transformers' attention interface); score with "
                           "--no-share-prefixes and report it")

