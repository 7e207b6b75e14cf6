"""Rewards read at the last token of many token sequences, each shared prefix forwarded once.

A causal decoder's hidden state at position t depends on tokens 0..t only. The texts of an
audit share long prefixes: the chosen and rejected answers to one prompt, a response and its
style edits, one conversation as several consumers tokenise it. Their keys and values over
the shared tokens are the same in every layer, so the prefix is forwarded once, its key/value
cache copied to each member, and only each member's own tokens are run against it. The
reward is the same as a plain forward up to floating-point summation order (tested against
the plain forward per architecture in tests/test_prefix_sharing.py, and on the audited model
itself by ``inference_invariance``'s ``prefix_sharing`` axis). A sequence that is itself a
prefix of another (a text and the same ids without the trailing newline) is not forwarded at
all: it is read inside the longer one. It is the exact "prefix sharing" of preference tuning
(Wang & Hegde 2024, arXiv:2410.20305), done with the model's own key/value cache instead of
a block-sparse mask so every cache-capable architecture runs it unchanged.

On held-out hh-rlhf the prompt is about three quarters of each text, so a chosen/rejected
pair costs a prompt and two answers instead of two prompts and two answers. Sharing is two
levels deep: the prompts themselves share a root, the system prompt a chat template puts
first (:class:`SharedRoots`), which is forwarded once and each prompt's own tokens run
against it, so a pair costs its prompt after the system prompt and two answers.

Only causal decoders whose cache behaves as a plain forward are eligible
(:func:`prefix_sharing_support`): an encoder attends both ways, a sliding window forgets the
prefix, a length-dependent rotary scaling encodes a prefix forwarded alone differently, and
an architecture outside :data:`TESTED_MODEL_TYPES` has not been shown equal.
Everything else, and every sequence that shares no prefix worth a cache, takes the plain
path: right-padded, length-sorted, token-budgeted batches.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from rmaudit.modeling.pooling import apply_head, last_token_index, position_ids_from_mask, reward_body

# Architectures whose prefix-shared rewards were compared with their plain forward (tests).
TESTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "phi3", "olmo2", "gpt_neox", "smollm3")
# Rotary scalings whose frequencies depend on the length of the sequence being forwarded.
LENGTH_DEPENDENT_ROPE = ("dynamic", "longrope")
# A prefix shorter than this is not worth a cache: the copy costs more than the tokens saved.
MIN_SHARED_TOKENS = 16
# Bytes the copied key/value cache of one batch may take (it is copied once per member).
CACHE_BYTES = {"cpu": 256 * 2**20, "cuda": 2 * 2**30}


@dataclass
class PrefixGroup:
    """Sequences (by index) whose first ``shared`` tokens are equal; each is read at positions
    after them, in its own part."""

    members: list[int]
    shared: int


@dataclass
class CachedPrefixes:
    """One batch of prefixes forwarded left-padded: per-layer (keys, values), each (rows,
    heads, width, head dim), and the (rows, width) mask; every prefix ends at the last column."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    mask: torch.Tensor


@dataclass
class SharingStats:
    """What one call shared: the report context says it (``prefix_sharing``)."""

    sequences: int = 0
    grouped: int = 0
    tokens: int = 0
    tokens_forwarded: int = 0
    unshared_reason: str | None = None  # why some texts could not share (the read position depends on the batch)

    def add(self, other: "SharingStats") -> None:
        for name in ("sequences", "grouped", "tokens", "tokens_forwarded"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.unshared_reason = other.unshared_reason or self.unshared_reason

    def as_dict(self) -> dict[str, Any]:
        return {"sequences": self.sequences, "in_shared_groups": self.grouped, "tokens": self.tokens,
                "tokens_forwarded": self.tokens_forwarded,
                "share_of_tokens_forwarded": round(self.tokens_forwarded / self.tokens, 4) if self.tokens else None,
                **({"unshared_reason": self.unshared_reason} if self.unshared_reason else {})}


def prefix_sharing_support(model: Any) -> tuple[bool, str]:
    """(whether ``model``'s rewards may be read with shared prefixes, why)."""
    config = model.config
    model_type = getattr(config, "model_type", "?")
    if getattr(config, "is_encoder_decoder", False):
        return False, f"{model_type} is an encoder-decoder"
    if model_type not in TESTED_MODEL_TYPES:
        return False, f"{model_type} is not among the architectures tested for it ({', '.join(TESTED_MODEL_TYPES)})"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False, f"{model_type} attends through a sliding window (a cached prefix may fall outside it)"
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type")) if isinstance(rope, dict) else None
    if rope_type in LENGTH_DEPENDENT_ROPE:
        # The rotary frequencies follow the forwarded sequence's length, so a prefix forwarded
        # alone is encoded differently (a tiny LongRoPE Llama moved by 3% of a reward-std;
        # transformers' dynamic NTK even keeps its frequencies from earlier calls).
        return False, f"{model_type} scales its rotary positions by the sequence length ({rope_type})"
    return True, f"{model_type}: causal decoder with a key/value cache"


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def fold_prefixes(sequences: Sequence[Sequence[int]]) -> list[int]:
    """host[i]: the sequence whose forward reads sequence i. A sequence equal to another, or
    a prefix of one, is read inside it at its own last position (a causal decoder's state at
    position t depends on tokens 0..t only): a text and the same ids without its trailing
    newline, as OpenRLHF reads it, cost one forward. Sorted, a prefix sits right before a
    sequence it begins, so one pass from the end finds every host."""
    order = sorted(range(len(sequences)), key=lambda i: list(sequences[i]))
    host = list(range(len(sequences)))
    for k in range(len(order) - 2, -1, -1):
        here, after = sequences[order[k]], sequences[order[k + 1]]
        if common_prefix(here, after) == len(here):
            host[order[k]] = host[order[k + 1]]
    return host


def prefix_groups(sequences: Sequence[Sequence[int]], min_shared: int = MIN_SHARED_TOKENS,
                  longest_run: int = 256, first_read: Sequence[int] | None = None) -> tuple[list[PrefixGroup], list[int]]:
    """(groups sharing at least ``min_shared`` tokens, indices of sequences sharing with none).

    Sorted, any sequences with a common prefix sit together, so groups are runs of the sorted
    order. The runs are chosen to save the most tokens, sum of (members - 1) x shared, by
    dynamic programming over at most ``longest_run`` members a run: a long shared prompt is
    not given up for a short shared system prompt, nor for one short text that ends early.
    ``first_read[i]``: the first position read in sequence i (default its last), which must
    lie in its own tokens, after the shared ones."""
    own_from = list(first_read) if first_read is not None else [len(s) - 1 for s in sequences]
    order = sorted(range(len(sequences)), key=lambda i: list(sequences[i]))
    n = len(order)
    lcp = [0] + [common_prefix(sequences[order[k - 1]], sequences[order[k]]) for k in range(1, n)]
    best = [0] * (n + 1)   # best[j]: tokens saved by the first j sorted sequences
    start = list(range(n + 1))  # start[j]: where the run ending at sequence j - 1 begins
    for j in range(1, n + 1):
        best[j], start[j] = best[j - 1], j - 1  # sequence j - 1 alone
        shared = own_from[order[j - 1]]  # every member keeps its read positions as its own
        for i in range(j - 2, max(-1, j - 1 - longest_run), -1):
            shared = min(shared, lcp[i + 1], own_from[order[i]])
            if shared < min_shared:
                break
            if best[i] + (j - 1 - i) * shared > best[j]:
                best[j], start[j] = best[i] + (j - 1 - i) * shared, i
    groups: list[PrefixGroup] = []
    alone: list[int] = []
    j = n
    while j > 0:
        i = start[j]
        members = [order[k] for k in range(i, j)]
        if len(members) == 1:
            alone.append(members[0])
        else:
            shared = min([own_from[m] for m in members] + lcp[i + 1:j])
            groups.append(PrefixGroup(members, shared))
        j = i
    return groups[::-1], alone[::-1]


def last_token_rewards(model: Any, sequences: Sequence[Sequence[int]], *, batch_size: int, batch_tokens: int,
                       share: bool = True, max_padding: float | None = None,
                       advance: Callable[[int], None] = lambda n: None) -> tuple[np.ndarray, SharingStats]:
    """(N,) float64 rewards, the head applied at the last token of each sequence, and what
    was shared; batches carry at most ``max_padding`` pads. Run under the caller's
    ``inference_mode`` and autocast."""
    out, stats = last_token_readout(model, sequences, lambda hidden: apply_head(model, hidden)[:, None],
                                    batch_size=batch_size, batch_tokens=batch_tokens, share=share,
                                    max_padding=max_padding, advance=advance)
    return out[:, 0], stats


def last_token_rewards_and_norms(model: Any, sequences: Sequence[Sequence[int]], *, batch_size: int,
                                 batch_tokens: int, share: bool = True, max_padding: float | None = None,
                                 advance: Callable[[int], None] = lambda n: None
                                 ) -> tuple[np.ndarray, np.ndarray, SharingStats]:
    """:func:`last_token_rewards` and the (N,) norms of the hidden states the head read, from
    the same forward (``reward_scale`` compares them with the head's norm)."""
    def read(hidden: torch.Tensor) -> torch.Tensor:
        return torch.stack([apply_head(model, hidden), hidden.float().norm(dim=-1)], dim=1)

    out, stats = last_token_readout(model, sequences, read, batch_size=batch_size, batch_tokens=batch_tokens,
                                    share=share, max_padding=max_padding, advance=advance)
    return out[:, 0], out[:, 1], stats


def last_token_hidden(model: Any, sequences: Sequence[Sequence[int]], *, batch_size: int, batch_tokens: int,
                      share: bool = True, max_padding: float | None = None) -> tuple[np.ndarray, SharingStats]:
    """(N, d) float64 hidden states at the last token of each sequence (where the head reads)."""
    return last_token_readout(model, sequences, lambda hidden: hidden, batch_size=batch_size, batch_tokens=batch_tokens,
                              share=share, max_padding=max_padding)


def last_token_readout(model: Any, sequences: Sequence[Sequence[int]], read: Callable[[torch.Tensor], torch.Tensor], *,
                       batch_size: int, batch_tokens: int, share: bool = True, max_padding: float | None = None,
                       advance: Callable[[int], None] = lambda n: None) -> tuple[np.ndarray, SharingStats]:
    """(N, k) float64: ``read`` applied to the (rows, d) hidden states at the last token of
    each sequence, and what was shared. With ``share``, a sequence that is a prefix of
    another (or equal to it) is read inside it (:func:`fold_prefixes`), shared prefixes
    are forwarded once (:func:`prefix_groups`), and so are their own common roots
    (:func:`shared_roots`)."""
    from rmaudit.scoring import length_sorted_batches  # scoring imports this module

    out: np.ndarray | None = None
    stats = SharingStats(sequences=len(sequences), tokens=sum(len(s) for s in sequences))
    host = fold_prefixes(sequences) if share else list(range(len(sequences)))
    reads: dict[int, list[int]] = {}  # host -> the sequences read in its forward
    for i, h in enumerate(host):
        reads.setdefault(h, []).append(i)
    hosts = list(reads)
    first_read = [min(len(sequences[i]) for i in reads[h]) - 1 for h in hosts]
    groups, alone = (prefix_groups([sequences[h] for h in hosts], first_read=first_read) if share
                     else ([], list(range(len(hosts)))))

    def store(states: torch.Tensor, rows: Sequence[tuple[int, int]]) -> None:
        """Read the states (rows, width, d) of forwarded hosts: (row, host) each, whose
        position 0 is the host's token ``offset`` (``offsets[host]``)."""
        nonlocal out
        index = [(r, i, len(sequences[i]) - 1 - offsets[h]) for r, h in rows for i in reads[h]]
        at = torch.tensor([[r, p] for r, _, p in index], device=states.device)
        values = read(states[at[:, 0], at[:, 1]]).double().cpu()
        if out is None:
            out = np.zeros((len(sequences), values.shape[1]))
        out[[i for _, i, _ in index]] = values.numpy()
        advance(len(index))

    offsets: dict[int, int] = {}
    budget = min(batch_tokens, _cache_positions(model))

    def read_tails(window: list[tuple[list[PrefixGroup], CachedPrefixes]]) -> None:
        """Forward the own tokens of every member of the window's groups, length-sorted across
        all of its prefix batches, each against its own prefix's cache."""
        batch = [g for groups_, _ in window for g in groups_]
        caches = [cache for _, cache in window]
        where = [(c, row) for c, (groups_, _) in enumerate(window) for row in range(len(groups_))]
        members = [(k, h) for k, g in enumerate(batch) for h in g.members]
        offsets.update((h, batch[k].shared) for k, h in members)
        tails = [len(sequences[h]) - batch[k].shared for k, h in members]
        # a member's copied cache holds the longest prefix of the window and its own tokens
        widest = max(g.shared for g in batch)
        for part_rows in length_sorted_batches(tails, len(members), budget, max_padding, row_overhead=widest):
            part = sorted((members[r] for r in part_rows), key=lambda m: where[m[0]])  # rows of one cache together
            store(_tail_states(model, caches, where, batch, part, sequences), list(enumerate(h for _, h in part)))
        stats.grouped += sum(len(reads[h]) for _, h in members)
        stats.tokens_forwarded += sum(len(sequences[h]) - g.shared for g in batch for h in g.members)

    prefixes = [sequences[hosts[g.members[0]]][:g.shared] for g in groups]
    roots = shared_roots(model, prefixes, batch_size=batch_size, batch_tokens=batch_tokens, max_padding=max_padding)
    stats.tokens_forwarded += roots.tokens
    # Prefix batches are held in a window whose caches, counted at its widest, fit a tail
    # call's budget, and their members' tails are batched together: a prefix batch of a dozen
    # prompts has tails too few and too varied in length to fill a call, and every call reads
    # all the weights (256 hh pairs: 159 tail calls without the window, 69 with it, 0.5.5).
    window: list[tuple[list[PrefixGroup], CachedPrefixes]] = []
    for rows in length_sorted_batches([g.shared for g in groups], batch_size, batch_tokens, max_padding):
        batch = [PrefixGroup([hosts[m] for m in groups[k].members], groups[k].shared) for k in rows]
        held = [g for b, _ in window for g in b] + batch
        if window and len(held) * max(g.shared for g in held) > budget:
            read_tails(window)
            window = []
        cache, forwarded = roots.prefix_cache(model, list(rows), prefixes)
        stats.tokens_forwarded += forwarded
        window.append((batch, cache))
    if window:
        read_tails(window)
    alone_hosts = [hosts[k] for k in alone]
    offsets.update((h, 0) for h in alone_hosts)
    stats.grouped += sum(len(reads[h]) - 1 for h in alone_hosts)  # read inside another: shared too
    for batch_rows in length_sorted_batches([len(sequences[h]) for h in alone_hosts], batch_size, batch_tokens,
                                            max_padding):
        rows = [alone_hosts[k] for k in batch_rows]
        store(_plain_states(model, [sequences[h] for h in rows]), list(enumerate(rows)))
        stats.tokens_forwarded += sum(len(sequences[h]) for h in rows)
    return (out if out is not None else np.zeros((0, 1))), stats


@dataclass
class SharedRoots:
    """Roots: the beginnings shared by several groups' prefixes, forwarded once per call.

    A chat template's system prompt begins every prompt (SmolLM2's default one and the user
    turn's header are 24 tokens; Llama 3.1 puts a date header there): the groups' prefixes
    are prompts that differ after it, so each is forwarded as its own tokens against its
    root's cache, the way a group's members run against their prefix (32 held-out hh pairs
    under SmolLM2's template: 8.6% fewer tokens forwarded, benchmarks/results/scoring.md)."""

    groups: list[PrefixGroup]  # members: indices of the groups' prefixes; shared: the root's length
    caches: list[CachedPrefixes]
    where: list[tuple[int, int]]  # root k is row where[k][1] of caches[where[k][0]]
    of_prefix: dict[int, int]  # prefix index -> its root
    tokens: int  # tokens forwarded for the roots

    @classmethod
    def none(cls) -> "SharedRoots":
        """No roots: every prefix forwarded whole (the one level of sharing before 0.5.7)."""
        return cls([], [], [], {}, 0)

    def prefix_cache(self, model: Any, rows: Sequence[int], prefixes: Sequence[Sequence[int]]) -> tuple[CachedPrefixes, int]:
        """(the cache of ``prefixes[r]`` for r in ``rows``, in that order, left-padded; tokens
        forwarded): those with a root forwarded after it, the others whole."""
        rooted = [r for r in rows if r in self.of_prefix]
        whole = [r for r in rows if r not in self.of_prefix]
        parts: list[tuple[list[int], CachedPrefixes]] = []
        if whole:
            parts.append((whole, _prefix_cache(model, [prefixes[r] for r in whole])))
        if rooted:
            part = sorted(((self.of_prefix[r], r) for r in rooted), key=lambda m: self.where[m[0]])  # one cache's rows together
            parts.append(([r for _, r in part], _extended_cache(model, self.caches, self.where, self.groups, part, prefixes)))
        forwarded = sum(len(prefixes[r]) - (self.groups[self.of_prefix[r]].shared if r in self.of_prefix else 0)
                        for r in rows)
        return _in_order(parts, list(rows)), forwarded


def shared_roots(model: Any, prefixes: Sequence[Sequence[int]], *, batch_size: int, batch_tokens: int,
                 max_padding: float | None) -> SharedRoots:
    """The roots worth a cache among ``prefixes`` (:func:`prefix_groups` over them: each keeps
    a token of its own), forwarded now; those saving most are held, within a quarter of a
    call's cache budget, as they stay in memory for the whole call."""
    from rmaudit.scoring import length_sorted_batches  # scoring imports this module

    found, _ = prefix_groups(prefixes)
    room = _cache_positions(model) // 4
    held: list[PrefixGroup] = []
    for group in sorted(found, key=lambda g: -(len(g.members) - 1) * g.shared):
        if group.shared <= room:
            held.append(group)
            room -= group.shared
    caches: list[CachedPrefixes] = []
    where: list[tuple[int, int]] = [(0, 0)] * len(held)
    for rows in length_sorted_batches([g.shared for g in held], batch_size, batch_tokens, max_padding):
        caches.append(_prefix_cache(model, [prefixes[held[k].members[0]][:held[k].shared] for k in rows]))
        for row, k in enumerate(rows):
            where[k] = (len(caches) - 1, row)
    return SharedRoots(held, caches, where, {m: k for k, g in enumerate(held) for m in g.members},
                       sum(g.shared for g in held))


def _in_order(parts: Sequence[tuple[list[int], CachedPrefixes]], order: list[int]) -> CachedPrefixes:
    """The rows of several left-padded caches (each with the ids of its rows) joined in ``order``."""
    if len(parts) == 1 and parts[0][0] == order:
        return parts[0][1]
    width = max(cache.mask.size(1) for _, cache in parts)
    ids = [r for rows, _ in parts for r in rows]
    index = torch.tensor([ids.index(r) for r in order], device=parts[0][1].mask.device)

    def joined(tensors: Sequence[torch.Tensor], dim: int) -> torch.Tensor:
        return torch.cat([_last_columns(t, width, dim) for t in tensors]).index_select(0, index)
    layers = [(joined([c.layers[n][0] for _, c in parts], 2), joined([c.layers[n][1] for _, c in parts], 2))
              for n in range(len(parts[0][1].layers))]
    return CachedPrefixes(layers, joined([c.mask for _, c in parts], 1))


def _plain_states(model: Any, rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """(rows, width, d) hidden states of right-padded rows forwarded whole."""
    from rmaudit.scoring import pad_batch  # scoring imports this module

    input_ids, mask = pad_batch(rows, 0, "right")  # pads are masked and never read: any id
    device = _device(model)
    input_ids, mask = input_ids.to(device), mask.to(device)
    return reward_body(model)(input_ids=input_ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                              use_cache=False).last_hidden_state


def _prefix_cache(model: Any, prefixes: Sequence[Sequence[int]]) -> CachedPrefixes:
    """The prefixes forwarded left-padded in one batch: left padding puts every prefix's end at
    the last column, so any narrower slice of the columns still holds each shorter prefix whole."""
    device = _device(model)
    width = max(len(p) for p in prefixes)
    ids = torch.tensor([[0] * (width - len(p)) + list(p) for p in prefixes], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prefixes], device=device)
    out = reward_body(model)(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=True)
    return CachedPrefixes(_cache_layers(out.cache if getattr(out, "cache", None) is not None else out.past_key_values),
                          mask)


def _cache_layers(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) per layer of a transformers cache."""
    if hasattr(cache, "layers"):  # transformers 5.x
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))  # transformers 4.x


def _last_columns(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """The last ``width`` columns of a left-padded ``tensor`` along ``dim``, zeros (masked
    pads) in front where it has fewer."""
    have = tensor.size(dim)
    if have >= width:
        return tensor.narrow(dim, have - width, width)
    shape = list(tensor.shape)
    shape[dim] = width - have
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _tail_states(model: Any, caches: Sequence[CachedPrefixes], where: Sequence[tuple[int, int]],
                 groups: Sequence[PrefixGroup], part: Sequence[tuple[int, int]],
                 sequences: Sequence[Sequence[int]]) -> torch.Tensor:
    """(rows, width, d) hidden states of each member's own tokens in ``part`` ((group index,
    sequence index) pairs, the rows of one cache together), right-padded and run against a
    copy of its group's cached prefix (group k is row ``where[k][1]`` of cache ``where[k][0]``),
    every copy cut or left-padded to the longest prefix of the part: column c is the member's
    token ``shared + c``."""
    return _forward_against(model, caches, where, groups, part, sequences)[0]


def _extended_cache(model: Any, caches: Sequence[CachedPrefixes], where: Sequence[tuple[int, int]],
                    groups: Sequence[PrefixGroup], part: Sequence[tuple[int, int]],
                    sequences: Sequence[Sequence[int]]) -> CachedPrefixes:
    """The cache of each sequence in ``part`` whole, its own tokens forwarded as in
    :func:`_tail_states` against its group's cached prefix; rows in ``part`` order, left-padded."""
    _, cache, mask = _forward_against(model, caches, where, groups, part, sequences)
    return _right_aligned(_cache_layers(cache), mask)


def _right_aligned(layers: Sequence[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor) -> CachedPrefixes:
    """A cache whose rows each hold their tokens in one run of columns (a left-padded prefix
    then right-padded own tokens) turned left-padded: each row rotated so its last real column
    is the last column, its trailing pads wrapping round to the front, where they stay masked."""
    width = mask.size(1)
    shift = width - 1 - last_token_index(mask)
    index = (torch.arange(width, device=mask.device)[None, :] - shift[:, None]) % width

    def rotated(tensor: torch.Tensor) -> torch.Tensor:  # (rows, heads, width, head dim)
        return tensor.gather(2, index[:, None, :, None].expand(-1, tensor.size(1), -1, tensor.size(3)))
    return CachedPrefixes([(rotated(keys), rotated(values)) for keys, values in layers], mask.gather(1, index))


def _forward_against(model: Any, caches: Sequence[CachedPrefixes], where: Sequence[tuple[int, int]],
                     groups: Sequence[PrefixGroup], part: Sequence[tuple[int, int]],
                     sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, Any, torch.Tensor]:
    """(the last hidden states, the cache: the copied prefixes and the own tokens, their joint
    mask) for the members' own tokens of ``part`` run as :func:`_tail_states` describes."""
    from transformers import DynamicCache

    device = _device(model)
    width = max(groups[k].shared for k, _ in part)
    picks: dict[int, list[int]] = {}  # cache -> its rows, in part order (grouped by cache)
    for k, _ in part:
        picks.setdefault(where[k][0], []).append(where[k][1])
    index = {c: torch.tensor(rows, device=device) for c, rows in picks.items()}

    def gathered(per_cache: Sequence[torch.Tensor], dim: int) -> torch.Tensor:
        """The part's rows of one tensor of each cache, ``width`` columns each."""
        return torch.cat([_last_columns(per_cache[c][index[c]], width, dim) for c in picks])

    copy = DynamicCache()
    for layer in range(len(caches[0].layers)):
        copy.update(gathered([c.layers[layer][0] for c in caches], 2), gathered([c.layers[layer][1] for c in caches], 2),
                    layer)
    tails = [list(sequences[i][groups[k].shared:]) for k, i in part]
    tail_width = max(len(t) for t in tails)
    ids = torch.tensor([t + [0] * (tail_width - len(t)) for t in tails], device=device)
    mask = torch.tensor([[1] * len(t) + [0] * (tail_width - len(t)) for t in tails], device=device)
    shared = torch.tensor([groups[k].shared for k, _ in part], device=device)
    body = reward_body(model)
    joint = torch.cat([gathered([c.mask for c in caches], 1), mask], dim=1)
    out = body(input_ids=ids, attention_mask=joint,
               position_ids=shared[:, None] + torch.arange(tail_width, device=device)[None, :], use_cache=True,
               **{_cache_argument(body): copy})
    return out.last_hidden_state, copy, joint


def _cache_argument(body: Any) -> str:
    """transformers 5.x names a body's cache argument ``cache``; 4.x ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"


def _cache_bytes_per_position(model: Any) -> int:
    config = model.config
    heads = getattr(config, "num_attention_heads", 1)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * next(model.parameters()).element_size()


def _cache_positions(model: Any) -> int:
    """Key/value positions (rows x width) one batch's copied cache may hold."""
    device = _device(model).type
    return max(1024, CACHE_BYTES.get(device, CACHE_BYTES["cpu"]) // _cache_bytes_per_position(model))


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device
