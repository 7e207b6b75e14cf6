"""Render pairs with the chat template, tokenize them, and apply the over-length policy.

The policy is explicit and counted, never silent:
``drop``      pairs whose chosen or rejected conversation exceeds ``max_length`` are left out;
``truncate``  the prompt loses tokens from the LEFT (a leading BOS is kept, and for an encoder
              the leading [CLS] its pooler reads) so that the whole response and its
              end-of-turn token survive; a pair whose response alone does not fit is dropped.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rmaudit.data.pairs import PreferencePair
from rmaudit.scoring import render, tokenize_rendered
from rmaudit.train.batching import EncodedPair
from rmaudit.train.encoded_store import EncodedPairStore
from rmaudit.train.metrics import stage_bar

ENCODE_CHUNK = 512  # pairs rendered and tokenized at once: the fast tokenizer's batches stay large


@dataclass
class LengthReport:
    """How the over-length policy treated a set of pairs (goes into the log and the manifest)."""

    policy: str
    max_length: int
    total: int = 0
    kept: int = 0
    truncated: int = 0
    dropped: int = 0
    dropped_rows: list[int] = field(default_factory=list)  # source rows, for the user to inspect

    def as_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "max_length": self.max_length, "total": self.total, "kept": self.kept,
                "truncated": self.truncated, "dropped": self.dropped, "dropped_rows": self.dropped_rows[:100]}


def _prompt_token_count(tokenizer: Any, pair: PreferencePair, full_text: str, full_ids: list[int]) -> int | None:
    """Tokens of ``full_ids`` that belong to the prompt, or None when the template does not render the
    prompt as a clean token prefix of the conversation (then the boundary is unknown)."""
    if not pair.prompt:
        return 0
    prompt_text = render(tokenizer, pair.prompt)
    if not full_text.startswith(prompt_text):
        return None
    (prompt_ids,), _ = tokenize_rendered(tokenizer, [prompt_text])
    n = len(prompt_ids)
    return n if full_ids[:n] == prompt_ids else None


def _truncate_prompt(ids: list[int], n_prompt: int | None, max_length: int,
                     keep_first: frozenset[int]) -> list[int] | None:
    """Drop prompt tokens from the left until ``ids`` fits, keeping a first token that is one of
    ``keep_first``; None when the response alone does not fit."""
    if n_prompt is None:
        return None
    keep = bool(ids) and ids[0] in keep_first and n_prompt > 0
    head = ids[:1] if keep else []
    cut = len(ids) - max_length  # tokens to remove
    first = len(head)
    if first + cut > n_prompt:  # would eat into the response
        return None
    return head + ids[first + cut:]


def kept_leading_tokens(tokenizer: Any, pooling: str) -> frozenset[int]:
    """Token ids that --truncation truncate keeps at the start of a sequence: a BOS, and for a
    model read by its own pooler every special token (BERT's [CLS], which the pooler reads)."""
    keep = {tokenizer.bos_token_id} if tokenizer.bos_token_id is not None else set()
    if pooling == "native":
        keep |= set(tokenizer.all_special_ids)
    return frozenset(keep)


def encode_pairs(tokenizer: Any, pairs: Sequence[PreferencePair], max_length: int, policy: str,
                 progress: str | None = None, keep_first: frozenset[int] | None = None,
                 ) -> tuple[EncodedPairStore, LengthReport]:
    """Token ids for every pair that survives the over-length policy, and the counts. Pairs are
    rendered and tokenized ENCODE_CHUNK at a time into an :class:`EncodedPairStore`, so neither
    the texts nor the tokenizer's output for the whole file are held at once. ``progress``:
    the description of a bar with the time left (about a minute per 100k hh pairs), or None;
    ``keep_first``: the first tokens truncation keeps (default: a decoder's, the BOS)."""
    if keep_first is None:
        keep_first = kept_leading_tokens(tokenizer, "mask")
    report = LengthReport(policy=policy, max_length=max_length, total=len(pairs))
    encoded = EncodedPairStore()
    stream = iter(pairs)
    with stage_bar(len(pairs), progress or "", progress is not None, "pair") as bar:
        while chunk := list(itertools.islice(stream, ENCODE_CHUNK)):
            _encode_chunk(tokenizer, chunk, max_length, policy, report, encoded, keep_first)
            bar.update(len(chunk))
    return encoded, report


def _encode_chunk(tokenizer: Any, pairs: list[PreferencePair], max_length: int, policy: str,
                  report: LengthReport, encoded: EncodedPairStore, keep_first: frozenset[int]) -> None:
    chosen_texts = [render(tokenizer, p.chosen_messages()) for p in pairs]
    rejected_texts = [render(tokenizer, p.rejected_messages()) for p in pairs]
    chosen_ids, _ = tokenize_rendered(tokenizer, chosen_texts)
    rejected_ids, _ = tokenize_rendered(tokenizer, rejected_texts)
    for i, pair in enumerate(pairs):
        sides = [chosen_ids[i], rejected_ids[i]]
        if max(len(s) for s in sides) > max_length:
            if policy == "truncate":
                texts = (chosen_texts[i], rejected_texts[i])
                sides = [ids if len(ids) <= max_length else _truncate_prompt(
                    ids, _prompt_token_count(tokenizer, pair, text, ids), max_length, keep_first)
                    for ids, text in zip(sides, texts)]
            if policy == "drop" or any(s is None for s in sides):
                report.dropped += 1
                report.dropped_rows.append(pair.row)
                continue
            report.truncated += 1
        report.kept += 1
        encoded.append(EncodedPair(sides[0], sides[1], pair.margin))
