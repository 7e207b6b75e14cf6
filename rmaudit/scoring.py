"""Score conversations with a reward model: the one scorer every probe uses.

Texts are rendered with the chat template, tokenized without a second BOS, sorted by
length into batches (little padding), run under ``inference_mode`` and returned in input
order. A text's reward does not depend on its batch companions or on the padding side:
position ids come from the attention mask, and pooling reads the last real token.

Scoring streams: :data:`CHUNK_TEXTS` texts at a time are tokenized, batched and scored, so
memory holds one chunk's token ids whatever the size of the eval set, and a batch holds at
most :data:`BATCH_TOKENS` padded tokens, so activations stay bounded whatever the text
lengths (issue 11; measured in benchmarks/results/memory.md).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterator, Sequence

import numpy as np
import torch

from rmaudit.errors import RmauditInputError
from rmaudit.modeling.pooling import attends_causally, native_prefixes, pooled_rewards, position_ids_for
from rmaudit.prefix_sharing import SharingStats, last_token_rewards_and_norms, prefix_sharing_support

log = logging.getLogger(__name__)

POOLINGS = ("auto", "mask", "native")

# Texts tokenized and scored at a time. Length-sorting within a chunk of this size pads
# about as little as sorting the whole set, and the chunk's token ids are all we hold.
CHUNK_TEXTS = 2048
# Padded tokens (rows x longest row) per forward pass, besides the batch-size row cap: short
# texts batch wide, a 4k-token text runs with few companions.
BATCH_TOKENS = 16384
# What one more forward call costs, in tokens: a call reads every weight, however few its rows
# (SmolLM2-135M on a 2-core AMD EPYC with AVX512-BF16: about 40 ms a call in bf16 against
# 0.9 ms a token, 80 against 1.4 in float32). A capped batch may carry this many pads rather
# than split.
CALL_COST_TOKENS = 48

# Used only when a tokenizer has no chat template (base models, encoders); recorded in notes.
FALLBACK_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}: {{ message['content'] }}\n\n{% endfor %}"
)


@dataclass
class ScoreResult:
    """Rewards in input order, which pooling produced them, and token counts."""

    rewards: np.ndarray
    pooling: str
    n_tokens: np.ndarray
    n_truncated: int = 0
    sharing: SharingStats | None = None  # what shared prefixes saved (None: every text forwarded whole)
    also_rewards: np.ndarray | None = None  # rewards of the ``also`` readings (None: not read with the texts)
    # norms of the hidden states the head read, NaN where not read (only shared-prefix forwards read them)
    hidden_norms: np.ndarray | None = None
    # text index -> (d,) hidden state the head read, for the ``keep_hidden`` texts shared-prefix forwards read
    hidden: dict[int, np.ndarray] = field(default_factory=dict)


# A chat template comes from the checkpoint, i.e. from whoever wrote it. transformers renders
# it in jinja2's immutable sandbox (no file or attribute access); these bound the rest.
TEMPLATE_SECONDS = 5.0
TEMPLATE_MAX_CHARS = 10_000_000


def render(tokenizer: Any, messages: Sequence[dict], chat_template: str | None = None) -> str:
    """The full conversation as the model sees it (a complete turn: no generation prompt),
    rendered within :data:`TEMPLATE_SECONDS` and :data:`TEMPLATE_MAX_CHARS`."""
    template = chat_template or getattr(tokenizer, "chat_template", None) or FALLBACK_TEMPLATE
    with template_time_limit(TEMPLATE_SECONDS):
        text = tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=False, chat_template=template
        )
    if len(text) > TEMPLATE_MAX_CHARS:
        raise RmauditInputError(f"chat template: rendered {len(text):,} characters for one conversation "
                                f"(limit {TEMPLATE_MAX_CHARS:,}); the template expands its input")
    return text


@contextlib.contextmanager
def template_time_limit(seconds: float) -> Iterator[None]:
    """Interrupt a template that loops (SIGALRM; only in the main thread, where signals land)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expired(signum: int, frame: Any) -> None:
        raise RmauditInputError(f"chat template: rendering one conversation took over {seconds:g} s "
                                "(nested loops?); the template was stopped")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def starts_with_bos(tokenizer: Any, text: str) -> bool:
    bos = getattr(tokenizer, "bos_token", None)
    return bool(bos) and text.startswith(bos)


def tokenize_rendered(tokenizer: Any, texts: Sequence[str], max_length: int | None = None,
                      keep: str = "end") -> tuple[list[list[int]], int]:
    """Token ids per text, without padding; (ids, number truncated).

    Special tokens are added only to texts the template did not already start with BOS,
    so there is never a double BOS. Over-long texts keep their END (truncated from the
    left), because the reward is read at the last token; with ``keep="start"`` (a model
    whose own pooling reads its first token, :func:`truncation_keep`) their start and a
    closing special token, as the tokenizer's own truncation keeps ``[CLS] ... [SEP]``.
    """
    ids: list[list[int]] = [[] for _ in texts]
    for add_special in (False, True):
        index = [i for i, t in enumerate(texts) if starts_with_bos(tokenizer, t) != add_special]
        if not index:
            continue
        encoded = tokenizer([texts[i] for i in index], add_special_tokens=add_special)["input_ids"]
        for i, row in zip(index, encoded):
            ids[i] = list(row)
    truncated = 0
    if max_length:
        closing = set(tokenizer.all_special_ids) if keep == "start" else set()
        for i, row in enumerate(ids):
            if len(row) > max_length:
                if keep == "end":
                    ids[i] = row[-max_length:]
                else:
                    ids[i] = row[:max_length - 1] + row[-1:] if row[-1] in closing else row[:max_length]
                truncated += 1
    return ids, truncated


def truncation_keep(model: Any, pooling: str) -> str:
    """Which end of an over-long text the reward needs: "end" where it is read at the last
    token (mask pooling, and a causal model's own pooling), "start" where the model's own
    pooling reads states of the whole row (an encoder's first-token pooler, BERT's [CLS])."""
    return "end" if pooling == "mask" or attends_causally(model) else "start"


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) padded to the longest row on ``side``."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
        input_ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return input_ids, mask


def resolve_pooling(model: Any, pooling: str) -> str:
    """"auto" -> mask for rmaudit checkpoints and fresh heads, native for foreign RMs.
    Native pooling of a causal model needs ``config.pad_token_id``; without it transformers
    cannot pool a padded batch, so we fall back to mask pooling and say so (an encoder's
    pooler reads a fixed position and needs no pad id)."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if pooling == "auto":
        pooling = getattr(model, "rmaudit_pooling", "native")
    if pooling == "native" and getattr(model.config, "pad_token_id", None) is None and attends_causally(model):
        log.warning("config.pad_token_id is unset: native pooling impossible, using mask pooling")
        return "mask"
    return pooling


def forward_rewards(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(N,) float32 rewards for one padded batch with an already-resolved pooling."""
    device = next(model.parameters()).device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    if pooling == "mask":
        rewards = pooled_rewards(model, input_ids, attention_mask)
    else:
        logits = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_for(model, attention_mask),
            use_cache=False,
        ).logits
        rewards = logits[:, 0]
    return rewards.float().cpu()


def autocast_for(model: Any, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` where it differs from the weights' dtype; nothing otherwise."""
    param = next(model.parameters())
    if dtype is None or dtype == param.dtype:
        return contextlib.nullcontext()
    return torch.autocast(device_type=param.device.type, dtype=dtype)


def length_sorted_batches(lengths: Sequence[int], batch_size: int, batch_tokens: int | None = None,
                          max_padding: float | None = None, row_overhead: int = 0) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length (longest first), to minimise padding.

    A batch holds at most ``batch_size`` rows and, when ``batch_tokens`` is set, at most that
    many padded tokens, ``row_overhead`` more per row (a text longer than the budget runs
    alone); with ``max_padding`` it also stops growing before pads would exceed that share of
    its padded tokens and :data:`CALL_COST_TOKENS` (fewer pads cost less than another call)."""
    batch: list[int] = []
    real = 0
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        rows = len(batch) + 1
        width = max(1, lengths[batch[0]] if batch else lengths[i])  # the longest row of the batch: sorted first
        full = (rows > batch_size or (batch_tokens is not None and rows * (width + row_overhead) > batch_tokens)
                or (max_padding is not None and rows * width - real - lengths[i] > max(max_padding * rows * width,
                                                                                      CALL_COST_TOKENS)))
        if batch and full:
            yield batch
            batch, real = [], 0
        batch.append(i)
        real += lengths[i]
    if batch:
        yield batch


def padding_cap(device: Any) -> float | None:
    """The padding a batch may carry: on a CPU a batch of a few rows runs almost as fast per
    token as a wide one (one hh text alone ran at 91% of length-sorted batches of 16,
    benchmarks/results/scoring.md), so pads are pure waste and kept to a tenth; a GPU needs
    wide batches and gets the token budget alone."""
    return None if torch.device(device).type == "cuda" else 0.1


def score_texts(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 16,
    batch_tokens: int | None = BATCH_TOKENS,
    dtype: torch.dtype | None = None,
    pooling: str = "auto",
    padding_side: str = "right",
    max_length: int | None = None,
    progress: bool | Callable[[int], None] = False,
    share_prefixes: bool = False,
    max_padding: float | None = None,
    also: Sequence[Sequence[int]] = (),
    keep_hidden: Collection[int] = (),
) -> ScoreResult:
    """Rewards for already-rendered texts, in input order, streamed :data:`CHUNK_TEXTS` at a time.

    ``progress``: True shows a bar; a callable is called with the number of texts after each batch.
    ``share_prefixes``: texts of a chunk that share a prefix forward it once
    (``rmaudit/prefix_sharing.py``): the same rewards up to rounding, where the architecture
    allows it and the pooling reads a plain prefix of the ids; ``padding_side`` is then moot.
    ``max_padding``: the share of a batch's tokens that may be pads (:func:`padding_cap`).
    ``also``: token ids read at their last token besides the texts (another trainer's
    tokenisation of them), forwarded with the first chunk where prefixes are shared, so one
    that begins a text is read inside its forward; their rewards in ``also_rewards``.
    ``keep_hidden``: indices of texts whose hidden state the head read is kept, in ``hidden``,
    where prefixes are shared (the plain path reads rewards only)."""
    pooling = resolve_pooling(model, pooling)
    share = share_prefixes and prefix_sharing_support(model)[0]
    rewards = np.zeros(len(texts), dtype=np.float64)
    norms = np.full(len(texts), np.nan)
    lengths = np.zeros(len(texts), dtype=np.int64)
    truncated = 0
    sharing = SharingStats() if share else None
    also_rewards = None
    hidden: dict[int, np.ndarray] = {}
    with torch.inference_mode(), autocast_for(model, dtype), _progress(progress, len(texts)) as advance:
        for start in range(0, len(texts), CHUNK_TEXTS):
            ids, n_truncated = tokenize_rendered(tokenizer, texts[start:start + CHUNK_TEXTS], max_length,
                                                 truncation_keep(model, pooling) if max_length else "end")
            truncated += n_truncated
            chunk_lengths = [len(r) for r in ids]
            lengths[start:start + len(ids)] = chunk_lengths
            if sharing is not None:
                readings = plain_readings(model, tokenizer, ids, pooling)
                if readings is not None:
                    extra = list(also) if start == 0 else []
                    keep = [i - start for i in keep_hidden if start <= i < start + len(ids)]
                    chunk, chunk_norms, chunk_hidden, stats = last_token_rewards_and_norms(
                        model, readings + extra, batch_size=batch_size, batch_tokens=batch_tokens or BATCH_TOKENS,
                        advance=_scaled(advance, len(ids), len(ids) + len(extra)), max_padding=max_padding,
                        keep_hidden=keep)
                    rewards[start:start + len(ids)] = chunk[:len(ids)]
                    norms[start:start + len(ids)] = chunk_norms[:len(ids)]
                    hidden.update((start + i, state) for i, state in chunk_hidden.items())
                    if extra:
                        also_rewards = chunk[len(ids):]
                    sharing.add(stats)
                    continue
                sharing.unshared_reason = ("native pooling with config.pad_token_id unlike the tokenizer's pad id: "
                                           "the read position depends on the batch")
            for batch in length_sorted_batches(chunk_lengths, batch_size, batch_tokens, max_padding):
                input_ids, mask = pad_batch([ids[i] for i in batch], tokenizer.pad_token_id, padding_side)
                rewards[[start + i for i in batch]] = forward_rewards(model, input_ids, mask, pooling).double().numpy()
                advance(len(batch))
    return ScoreResult(rewards=rewards, pooling=pooling, n_tokens=lengths, n_truncated=truncated, sharing=sharing,
                       also_rewards=also_rewards, hidden_norms=norms, hidden=hidden)


def plain_readings(model: Any, tokenizer: Any, ids: Sequence[Sequence[int]], pooling: str) -> list[list[int]] | None:
    """The ids each text's reward is read from, ending at the read token: all of them under
    mask pooling; up to the last non-pad id under native pooling of a causal model when the
    config's pad id is the one the scorer pads with (None otherwise: the read position
    depends on the batch, or the model's own pooling reads states of the whole row)."""
    if pooling == "mask":
        return [list(r) for r in ids]
    return native_prefixes(model, tokenizer, ids, "right")


def score(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Sequence[dict]],
    *,
    chat_template: str | None = None,
    **kwargs: Any,
) -> ScoreResult:
    """Rewards for conversations (lists of ``{role, content}`` messages), in input order."""
    texts = [render(tokenizer, c, chat_template) for c in conversations]
    return score_texts(model, tokenizer, texts, **kwargs)


def _scaled(advance: Callable[[int], None], texts: int, readings: int) -> Callable[[int], None]:
    """``advance`` in texts, called with readings (texts plus ``also`` readings) done."""
    done = [0]

    def step(n: int) -> None:
        before, done[0] = done[0], done[0] + n
        advance(done[0] * texts // readings - before * texts // readings)
    return step


@contextlib.contextmanager
def _progress(progress: bool | Callable[[int], None], total: int) -> Iterator[Callable[[int], None]]:
    if callable(progress):
        yield progress
        return
    if not progress:
        yield lambda n: None
        return
    with scoring_progress(total) as advance:
        yield advance


@contextlib.contextmanager
def scoring_progress(total: int, description: str = "scoring") -> Iterator[Callable[[int], None]]:
    """A bar with the time left (stderr, removed when done); yields ``advance(n_texts)``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("left"), TimeRemainingColumn())
    with Progress(*columns, transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
