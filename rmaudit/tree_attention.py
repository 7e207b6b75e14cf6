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
    ``key``/``value`` (1, key/value heads, row, head dim); returns (1, row, heads, head dim).

    A layer's ``sliding_window`` (Mistral, Gemma 2/3, Qwen2) and ``softcap`` (Gemma 2) keyword
    arguments are honoured as the model's own masks and eager attention apply them."""
    segments: Sequence[PackedSegment] = kwargs[SEGMENTS_KWARG]
    window, softcap = kwargs.get("sliding_window"), kwargs.get("softcap")
    CALLS[0] += 1
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
        windowed = window is not None and keys.size(2) > window  # a path within its window is plain causal
        mask = (_segment_mask(seg, keys.size(2), window if windowed else None, query.device)
                if windowed or softcap is not None else seg.mask)
        out[:, :, own] = _attention(query[:, :, own], keys, values, mask, scaling, softcap)
    return out.transpose(1, 2).contiguous(), None


def _segment_mask(seg: PackedSegment, width: int, window: int | None, device: torch.device) -> torch.Tensor:
    """(own, width) boolean: what each of the segment's tokens may attend to. Its ancestors are
    the whole path from the sequence's first token, so key j sits at position j and query i at
    ``width - own + i``; a sliding window keeps the keys less than ``window`` positions back
    (transformers' ``sliding_window_overlay``: kv_idx > q_idx - window)."""
    own = seg.end - seg.start
    mask = seg.mask if seg.mask is not None else torch.ones(own, own, dtype=torch.bool, device=device).tril()
    if window is not None:
        query_positions = torch.arange(width - own, width, device=device)[:, None]
        mask = mask & (torch.arange(width, device=device)[None, :] > query_positions - window)
    return mask


def _attention(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None,
               scaling: float | None, softcap: float | None) -> torch.Tensor:
    """Softmax attention under a boolean ``mask`` (None: causal), the SDPA kernel a plain forward
    runs; with ``softcap``, the logits capped as Gemma 2's eager attention caps them
    (transformers' gemma2 ``eager_attention_forward``: scale, tanh cap, mask, softmax in
    float32; its callers pass a mask)."""
    if softcap is None:
        return torch.nn.functional.scaled_dot_product_attention(
            query, keys, values, attn_mask=mask, is_causal=mask is None, scale=scaling,
            enable_gqa=query.size(1) != keys.size(1))
    assert mask is not None
    groups = query.size(1) // keys.size(1)
    keys, values = keys.repeat_interleave(groups, dim=1), values.repeat_interleave(groups, dim=1)
    scale = scaling if scaling is not None else query.size(-1) ** -0.5
    logits = torch.tanh(query @ keys.transpose(2, 3) * scale / softcap) * softcap
    logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
    return torch.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype) @ values


def attention_implementation(model: Any) -> str:
    """The attention implementation ``model``'s config names; unset means eager, as in transformers."""
    return getattr(model.config, "_attn_implementation", None) or "eager"


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

