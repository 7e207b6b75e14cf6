"""Ancestral sampling from a causal LM, written for an audit's few hundred samples on any device.

``transformers``' ``generate`` spent most of its time on work a batch of policy samples does
not need (SmolLM2-135M-Instruct, 16 hh prompts x 4 samples of up to 128 tokens, float32 on a
2-core AVX2 CPU: 97 s in batches of 16 rows, no faster in batches of 64; this loop: 47 s at
no more memory, medians of 5 rounds in ``benchmarks/results/sampling.md``):

- its cache grows by ``torch.cat``, copying every layer's keys and values at every step (45%
  of the time at 64 rows): :class:`PreallocatedLayer` writes each new token in place;
- it prefills a prompt once per sample: here each prompt is prefilled once and its cache
  repeated for its ``n`` samples;
- it keeps stepping rows that have ended their turn until the whole batch has: here they
  leave the batch;
- ``torch.multinomial`` draws one exponential per vocabulary entry (18% of a step at 64
  rows): one uniform per row through the cumulative distribution draws from the same
  distribution.

Prompts are batched by length (little left padding), 16 to 64 rows under a cache budget. The
draws are from softmax(logits / temperature), nothing cut (no top-k, top-p or penalty from
the checkpoint's ``generation_config``): the distribution PPO samples from. ``temperature=0``
is greedy decoding, which the tests compare token for token with ``generate``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

MIN_ROWS = 16                # samples a batch may always hold (what 0.5.11 decoded together)
MAX_ROWS = 64                # ... and at most, within CACHE_BYTES: where a 2-core CPU stopped gaining
CACHE_BYTES = 512 * 2 ** 20  # key/value cache of one batch beyond MIN_ROWS (SmolLM2 in float32: 46 KB a token)


class PreallocatedLayer(DynamicLayer):
    """A :class:`DynamicLayer` whose keys and values live in storage sized once for the prompt
    plus every new token, so appending a token is an in-place write, not a copy of the cache.
    ``keys``/``values`` stay views of the filled part, as ``DynamicLayer``'s readers expect."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity, self.filled = capacity, 0
        self.storage: tuple[torch.Tensor, torch.Tensor] | None = None  # (keys, values), ``capacity`` long

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self.storage is None:  # is_initialized: what transformers 5 reads (4.56 reads keys only)
            self.is_initialized, self.device = True, key_states.device
            rows, heads, _, dim = key_states.shape
            self.storage = (key_states.new_empty(rows, heads, self.capacity, dim),
                            value_states.new_empty(rows, heads, self.capacity, value_states.shape[-1]))
        end = self.filled + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"cache layer full: {end} tokens in {self.capacity} slots")
        keys, values = self.storage
        keys[:, :, self.filled:end] = key_states
        values[:, :, self.filled:end] = value_states
        self.filled = end
        return self._hold(keys, values)

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.storage is not None:
            self._hold(*(t.repeat_interleave(repeats, dim=0) for t in self.storage))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.storage is not None:
            self._hold(*(t[indices] for t in self.storage))

    def _hold(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep (keys, values) as the storage; ``self.keys``/``self.values`` are views of its filled part."""
        self.storage = (keys, values)
        filled_keys, filled_values = keys[:, :, :self.filled], values[:, :, :self.filled]
        self.keys, self.values = filled_keys, filled_values
        return filled_keys, filled_values


def plan_batches(prompt_lengths: Sequence[int], n: int, max_new_tokens: int, cache_bytes_per_token: int | None,
                 ) -> list[list[int]]:
    """Prompt indices in batches, shortest prompts first. A batch takes prompts (``n`` rows each)
    while it holds at most MIN_ROWS rows, or at most MAX_ROWS whose cache (rows x (its longest
    prompt + ``max_new_tokens``) tokens) fits CACHE_BYTES; always at least one prompt. With the
    cache size unknown (``None``), MIN_ROWS."""
    batches: list[list[int]] = []
    for index in sorted(range(len(prompt_lengths)), key=lambda i: prompt_lengths[i]):
        rows = (len(batches[-1]) + 1) * n if batches else 0
        fits = cache_bytes_per_token is not None and (
            rows * (prompt_lengths[index] + max_new_tokens) * cache_bytes_per_token <= CACHE_BYTES)
        if batches and (rows <= MIN_ROWS or (rows <= MAX_ROWS and fits)):
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def cache_bytes_per_token(model: Any) -> int | None:
    """Key/value cache bytes one token takes in ``model`` (every layer's keys and values), from
    its config; None where the config does not say (an architecture without the usual names)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    try:
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        layers = config.num_hidden_layers
    except (AttributeError, TypeError):
        return None
    return 2 * layers * kv_heads * head_dim * next(model.parameters()).element_size()


def draw_tokens(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """One token per row from softmax(logits / temperature) by inverse CDF (one uniform per row);
    ``temperature=0``: the most likely token."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    cumulative = probs.cumsum(dim=-1)
    uniform = torch.rand(len(probs), 1, generator=generator, device=probs.device) * cumulative[:, -1:]
    # right=True: a zero-probability token (equal cumulative to its left) is never the first above u
    return torch.searchsorted(cumulative, uniform, right=True).clamp(max=probs.shape[-1] - 1).squeeze(1)


def sample_continuations(model: Any, prompts: Sequence[Sequence[int]], *, n: int, max_new_tokens: int,
                         temperature: float, generator: torch.Generator, stop_ids: set[int], pad_id: int,
                         ended: Callable[[int], None] = lambda count: None) -> list[list[int]]:
    """``n`` continuations of each prompt (token ids), prompt-major (prompt i's sample k at
    ``i * n + k``); a continuation ends with its first stop token or at ``max_new_tokens``.
    ``ended(count)`` hears of continuations as they end (a progress bar's advance)."""
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros_like(input_ids)
    for row, prompt in enumerate(prompts):  # left padding: every row's next token lands in one column
        input_ids[row, width - len(prompt):] = torch.tensor(list(prompt), device=device)
        mask[row, width - len(prompt):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache, forward = _cached_forward(model, width + max_new_tokens)
    logits = forward(input_ids, mask, positions, last_only=True).repeat_interleave(n, dim=0)
    cache.batch_repeat_interleave(n)
    mask, next_position = mask.repeat_interleave(n, dim=0), positions[:, -1:].repeat_interleave(n, dim=0) + 1
    rows = torch.arange(len(prompts) * n, device=device)  # which continuation each batch row extends
    continuations: list[list[int]] = [[] for _ in range(len(prompts) * n)]
    stop = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device)
    for step in range(max_new_tokens):
        tokens = draw_tokens(logits, temperature, generator)
        for row, token in zip(rows.tolist(), tokens.tolist()):
            continuations[row].append(token)
        going = ~torch.isin(tokens, stop)
        if step == max_new_tokens - 1 or not going.any():
            ended(len(rows))
            break
        ended(len(rows) - int(going.sum()))
        if not going.all():  # ended rows leave the batch, and their cache with them
            keep = going.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            rows, tokens, mask, next_position = rows[keep], tokens[keep], mask[keep], next_position[keep]
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
        logits = forward(tokens[:, None], mask, next_position, last_only=False)
        next_position = next_position + 1
    return continuations


def _cached_forward(model: Any, capacity: int) -> tuple[DynamicCache, Callable[..., torch.Tensor]]:
    """(the cache, ``forward(ids, mask, positions, last_only)`` -> the last position's logits).
    The cache is the model's own, each plain attention layer preallocated for ``capacity``
    tokens, passed under the name this transformers version takes (5.x ``cache``, 4.x
    ``past_key_values``); the LM head runs on the last position only where the model can
    (``logits_to_keep``). A model with no key/value cache, or a layer that cannot be repeated
    and cut by row (a state-space model), is refused."""
    parameters = inspect.signature(model.forward).parameters
    cache_name = next((name for name in ("cache", "past_key_values") if name in parameters), None)
    if cache_name is None:
        raise TypeError(f"the policy ({type(model).__name__}) takes no key/value cache, which rmaudit's sampler "
                        "decodes with (decoder-only transformers do): pass its samples with --rollouts-file")
    cache = DynamicCache(config=model.config)
    cache.layers = [PreallocatedLayer(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    rowless = {type(layer).__name__ for layer in cache.layers
               if not (hasattr(layer, "batch_repeat_interleave") and hasattr(layer, "batch_select_indices"))}
    if rowless:
        raise TypeError(f"the policy ({type(model).__name__}) keeps a cache rmaudit's sampler cannot split by row "
                        f"({', '.join(sorted(rowless))}): pass its samples with --rollouts-file")

    def forward(input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, last_only: bool) -> torch.Tensor:
        extra = {"logits_to_keep": 1} if last_only and "logits_to_keep" in parameters else {}
        out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                    **{cache_name: cache}, **extra)
        return out.logits[:, -1]

    return cache, forward
