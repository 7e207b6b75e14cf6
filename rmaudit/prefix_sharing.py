"""Rewards read at the last token of many token sequences, each shared prefix forwarded once.

A causal decoder's hidden state at position t depends on tokens 0..t only. The texts of an
audit share long prefixes: a chat template's system prompt, the chosen and rejected answers
to one prompt, a response and its style edits, one conversation as several consumers
tokenise it. So the sequences of a scoring call are arranged in a prefix tree
(:func:`prefix_tree`): each shared run of tokens is one *segment*, and each sequence is the
path of segments from the root to its own last one. The segments are packed, without
padding, into rows of at most a budget of tokens (:func:`packed_calls`), every segment after
its ancestors, and forwarded with tree attention (``rmaudit/tree_attention.py``): each
segment attends causally to itself and fully to its ancestors, so every token sees exactly
the tokens it would see in a plain forward of its own sequence, at its own positions. A
sequence that is itself a prefix of another (a text and the same ids without the trailing
newline) is not forwarded at all: it is read inside the longer one. The reward is the same
as a plain forward up to floating-point summation order (tested against the plain forward
per architecture in tests/test_prefix_sharing.py, and on the audited model itself by
``inference_invariance``'s ``prefix_sharing`` axis). It is the exact "prefix sharing" of
preference tuning (Wang & Hegde 2024, arXiv:2410.20305) taken to the whole tree.

On held-out hh-rlhf under SmolLM2's template a pair costs its prompt after the system prompt
and two answers instead of two whole conversations, and no row carries a pad: 64 texts of
32 pairs forward 8,140 tokens in five rows of at most 2,048 (26,464 in file-order batches
of 16; a trie of them has 7,903 nodes; benchmarks/results/scoring.md).

Only causal decoders are eligible (:func:`prefix_sharing_support`): an encoder attends both
ways, a length-dependent rotary scaling encodes a prefix forwarded alone differently, and an
architecture outside :data:`TESTED_MODEL_TYPES` has not been shown equal. A layer's sliding
window and soft-capped logits (Mistral, Gemma 2/3, Qwen2) are applied by the tree attention
as the model's own masks and eager attention apply them (0.5.14; a window shorter than the
texts is tested). Everything else takes the plain path: right-padded, length-sorted,
token-budgeted batches through the model's own attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterator, Sequence

import numpy as np
import torch

from rmaudit.modeling.pooling import apply_head, position_ids_for, reward_body
from rmaudit.tree_attention import (SEGMENTS_KWARG, PackedSegment, attention_implementation, ran_tree_attention,
                                    tree_attention_on)

# Architectures whose prefix-shared rewards (with their sliding windows and logit caps) and
# packed training rows were compared with their plain forward (tests/test_prefix_sharing.py,
# tests/test_packing.py), on transformers 5.x and 4.56 (olmo, olmo2 and gemma3_text: 5.x, the
# first with their sequence-classification heads). Left out, each for a reason seen: bloom,
# mpt (attention outside transformers' interface: ran_tree_attention refuses them), gptj,
# deepseek_v3 (shape errors in the packed forward), stablelm, nemotron (the segments are
# dropped on the way), qwen2_moe (its 4.56 forward takes no extra keyword arguments).
TESTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "olmo2",
                      "gpt_neox", "smollm3", "gpt2", "opt", "phi", "mixtral", "qwen3_moe", "gpt_bigcode", "starcoder2",
                      "olmo", "glm")
# Rotary scalings whose frequencies depend on the length of the sequence being forwarded.
LENGTH_DEPENDENT_ROPE = ("dynamic", "longrope")
# Tokens of one packed row on a CPU. Smaller rows forward the shared system prompt once per
# row and run shorter matmuls; bigger ones spill the MLP's (row, width) activations out of
# the caches. 64 hh texts on a 2-core AVX2 EPYC in float32 (benchmarks/ablate_packed_rows.py,
# 5 paired rounds): 1024, 3072 and 4096 tokens ran at 1.06x, 0.97x and 0.94x the speed of
# 2048, all within the rounds' spread (0.86-1.11x). Elsewhere the caller's token budget.
PACKED_TOKENS = {"cpu": 2048}


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
    attention = attention_implementation(model)
    if getattr(config, "attn_logit_softcapping", None) and attention != "eager":
        # Only eager attention caps the logits: transformers 4.x's sdpa skipped the cap, 5.x refuses it.
        return False, f"{model_type} soft-caps its attention logits, which its {attention} attention does not"
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type")) if isinstance(rope, dict) else None
    if rope_type in LENGTH_DEPENDENT_ROPE:
        # The rotary frequencies follow the forwarded sequence's length, so a prefix forwarded
        # alone is encoded differently (a tiny LongRoPE Llama moved by 3% of a reward-std;
        # transformers' dynamic NTK even keeps its frequencies from earlier calls).
        return False, f"{model_type} scales its rotary positions by the sequence length ({rope_type})"
    return True, f"{model_type}: causal decoder attending to every earlier token"


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


def last_token_rewards(model: Any, sequences: Sequence[Sequence[int]], *, batch_size: int, batch_tokens: int,
                       share: bool = True, max_padding: float | None = None,
                       advance: Callable[[int], None] = lambda n: None) -> tuple[np.ndarray, SharingStats]:
    """(N,) float64 rewards, the head applied at the last token of each sequence, and what
    was shared; batches carry at most ``max_padding`` pads. Run under the caller's
    ``inference_mode`` and autocast."""
    out, stats = last_token_readout(model, sequences, lambda hidden, rows: apply_head(model, hidden)[:, None],
                                    batch_size=batch_size, batch_tokens=batch_tokens, share=share,
                                    max_padding=max_padding, advance=advance)
    return out[:, 0], stats


def last_token_rewards_and_norms(model: Any, sequences: Sequence[Sequence[int]], *, batch_size: int,
                                 batch_tokens: int, share: bool = True, max_padding: float | None = None,
                                 advance: Callable[[int], None] = lambda n: None, keep_hidden: Collection[int] = ()
                                 ) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray], SharingStats]:
    """:func:`last_token_rewards`, the (N,) norms of the hidden states the head read
    (``reward_scale`` compares them with the head's norm) and, for the sequences whose index
    is in ``keep_hidden``, those (d,) float64 hidden states themselves (``policy_shift``
    reads them), all from the same forward."""
    keep, kept = set(keep_hidden), {}

    def read(hidden: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
        for j, row in enumerate(rows):
            if row in keep:
                kept[row] = hidden[j].double().cpu().numpy()
        return torch.stack([apply_head(model, hidden), hidden.float().norm(dim=-1)], dim=1)

    out, stats = last_token_readout(model, sequences, read, batch_size=batch_size, batch_tokens=batch_tokens,
                                    share=share, max_padding=max_padding, advance=advance)
    return out[:, 0], out[:, 1], kept, stats


def last_token_hidden(model: Any, sequences: Sequence[Sequence[int]], *, batch_size: int, batch_tokens: int,
                      share: bool = True, max_padding: float | None = None,
                      advance: Callable[[int], None] = lambda n: None) -> tuple[np.ndarray, SharingStats]:
    """(N, d) float64 hidden states at the last token of each sequence (where the head reads)."""
    return last_token_readout(model, sequences, lambda hidden, rows: hidden, batch_size=batch_size, batch_tokens=batch_tokens,
                              share=share, max_padding=max_padding, advance=advance)


def last_token_readout(model: Any, sequences: Sequence[Sequence[int]],
                       read: Callable[[torch.Tensor, Sequence[int]], torch.Tensor], *,
                       batch_size: int, batch_tokens: int, share: bool = True, max_padding: float | None = None,
                       advance: Callable[[int], None] = lambda n: None) -> tuple[np.ndarray, SharingStats]:
    """(N, k) float64: ``read`` applied to the (rows, d) hidden states at the last token of
    each sequence and to those sequences' indices, and what was shared. With ``share``, a
    sequence that is a prefix of another (or equal to it) is read inside it
    (:func:`fold_prefixes`) and the rest are forwarded as one prefix tree, packed rows of tree
    attention (:func:`packed_calls`); without, in the plain path's padded batches of at most
    ``batch_size`` rows, ``batch_tokens`` padded tokens and ``max_padding`` pads."""
    from rmaudit.scoring import length_sorted_batches  # scoring imports this module

    out: np.ndarray | None = None
    stats = SharingStats(sequences=len(sequences), tokens=sum(len(s) for s in sequences))

    def store(states: torch.Tensor, at: Sequence[int], rows: Sequence[int]) -> None:
        """Read the states (positions, d) at the positions ``at`` into the ``rows`` of ``out``."""
        nonlocal out
        values = read(states[torch.tensor(at, device=states.device)], rows).double().cpu().numpy()
        if out is None:
            out = np.zeros((len(sequences), values.shape[1]))
        out[list(rows)] = values
        advance(len(rows))

    if not share:
        for rows in length_sorted_batches([len(s) for s in sequences], batch_size, batch_tokens, max_padding):
            states = _plain_states(model, [sequences[i] for i in rows])
            store(states.reshape(-1, states.size(-1)), [r * states.size(1) + len(sequences[i]) - 1
                                                        for r, i in enumerate(rows)], rows)
            stats.tokens_forwarded += sum(len(sequences[i]) for i in rows)
        return (out if out is not None else np.zeros((0, 1))), stats
    host = fold_prefixes(sequences)
    reads: dict[int, list[int]] = {}  # host -> the sequences read in its forward
    for i, h in enumerate(host):
        reads.setdefault(h, []).append(i)
    hosts = list(reads)
    host_sequences = [sequences[h] for h in hosts]
    order, leaves = prefix_tree(host_sequences)
    # read from a forward that serves another sequence too: through a shared segment, or in a
    # host that reads several
    stats.grouped = sum(len(reads[hosts[k]]) for k, leaf in leaves.items()
                        if len(leaf.path()) > 1 or len(reads[hosts[k]]) > 1)
    budget = min(batch_tokens, PACKED_TOKENS.get(_device(model).type, batch_tokens))
    with tree_attention_on(model):
        for segments, members in packed_calls(order, leaves, budget):
            states, column = _packed_states(model, host_sequences, segments)
            at, rows = [], []
            for k in members:
                path = leaves[k].path()
                for i in reads[hosts[k]]:
                    last = len(sequences[i]) - 1  # in the segment of the host's path that holds it
                    segment = next(s for s in path if s.start <= last < s.end)
                    at.append(column[segment] + last - segment.start)
                    rows.append(i)
            store(states, at, rows)
            stats.tokens_forwarded += states.size(0)
    return (out if out is not None else np.zeros((0, 1))), stats


@dataclass(eq=False)  # identity: two segments with the same tokens are still two places in the tree
class Segment:
    """Tokens ``start:end`` of sequence ``source``, the same in every sequence whose path runs
    through it; ``parent`` is the segment before it (None for the tree's root)."""

    source: int
    start: int
    end: int
    parent: "Segment | None"

    def __len__(self) -> int:
        return self.end - self.start

    def path(self) -> list["Segment"]:
        """The segments from the root's first child down to this one."""
        path: list[Segment] = []
        segment: Segment | None = self
        while segment is not None and segment.parent is not None:
            path.append(segment)
            segment = segment.parent
        return path[::-1]


def prefix_tree(sequences: Sequence[Sequence[int]]) -> tuple[list[int], dict[int, Segment]]:
    """(the sequences in sorted order, the last segment of each), none of them a prefix of
    another (:func:`fold_prefixes` first). Sorted, sequences that share a prefix sit together
    and each shares the most with its neighbour, so the tree is built in one pass over the
    sorted order with a stack holding the previous sequence's path: a segment of it that the
    next sequence leaves part way is split where it leaves."""
    order = sorted(range(len(sequences)), key=lambda i: list(sequences[i]))
    root = Segment(-1, 0, 0, None)
    stack, leaves = [root], {}
    for n, i in enumerate(order):
        shared = common_prefix(sequences[order[n - 1]], sequences[i]) if n else 0
        while stack[-1] is not root and stack[-1].start >= shared:
            stack.pop()
        top = stack[-1]
        if top.end > shared:  # the previous path's segment runs on past the shared tokens: split it
            upper = Segment(top.source, top.start, shared, top.parent)
            top.start, top.parent = shared, upper
            stack[-1] = upper
        leaves[i] = Segment(i, shared, len(sequences[i]), stack[-1])
        stack.append(leaves[i])
    return order, leaves


def packed_calls(order: Sequence[int], leaves: dict[int, Segment], budget: int
                 ) -> Iterator[tuple[list[Segment], list[int]]]:
    """(segments, sequences) of each packed row: the sequences in tree order, each with the
    segments of its path not in the row yet, while the row holds at most ``budget`` tokens
    (a longer path runs alone); a row that fills up starts the next with the whole path, so
    the system prompt is forwarded once per row."""
    segments: list[Segment] = []
    members: list[int] = []
    placed: set[Segment] = set()
    width = 0
    for i in order:
        path = leaves[i].path()
        new = [s for s in path if s not in placed]
        if members and width + sum(map(len, new)) > budget:
            yield segments, members
            segments, members, placed, width, new = [], [], set(), 0, path
        segments += new
        members.append(i)
        placed.update(new)
        width += sum(map(len, new))
    if members:
        yield segments, members


def _packed_states(model: Any, sequences: Sequence[Sequence[int]], segments: Sequence[Segment]
                   ) -> tuple[torch.Tensor, dict[Segment, int]]:
    """((row, d) hidden states of the segments packed in one row in the given order, each at
    its own positions; the column each segment starts at)."""
    device = _device(model)
    column: dict[Segment, int] = {}
    ids: list[int] = []
    positions: list[int] = []
    packed = []
    for segment in segments:
        column[segment] = len(ids)
        ids += sequences[segment.source][segment.start:segment.end]
        positions += range(segment.start, segment.end)
        ancestors = [(column[a], column[a] + len(a)) for a in segment.path()[:-1]]
        packed.append(PackedSegment.build(column[segment], len(ids), ancestors, device))
    with ran_tree_attention(model):
        out = reward_body(model)(input_ids=torch.tensor([ids], device=device),
                                 position_ids=torch.tensor([positions], device=device), use_cache=False,
                                 **{SEGMENTS_KWARG: packed})
    return out.last_hidden_state[0], column


def _plain_states(model: Any, rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """(rows, width, d) hidden states of right-padded rows forwarded whole."""
    from rmaudit.scoring import pad_batch  # scoring imports this module

    input_ids, mask = pad_batch(rows, 0, "right")  # pads are masked and never read: any id
    device = _device(model)
    input_ids, mask = input_ids.to(device), mask.to(device)
    return reward_body(model)(input_ids=input_ids, attention_mask=mask, position_ids=position_ids_for(model, mask),
                              use_cache=False).last_hidden_state


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device
