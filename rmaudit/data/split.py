"""Deterministic train/eval split by prompt, identical on every process and machine.

The key of a pair is ``prompt_hash(prompt)``: the sha256 of the normalised prompt, where
normalising means, per message, Unicode NFKC, whitespace runs collapsed to one space, ends
trimmed, case folded (``str.casefold``) and NFKC again (folding can leave a decomposed
sequence: 'ῒ' folds to iota and two combining marks, its capital to 'ϊ' and one, until NFKC
composes both; before 0.5.3 that last step was missing, see :func:`legacy_prompt_hash`), then
``role: content`` lines joined by newlines.
Case is folded on purpose: the split exists to keep near-identical prompts on one side, and
"What is 2+2?" / "what is 2+2?" in train and eval would be leakage; merging two prompts that
differ only in case costs nothing. Python's salted ``hash()`` is never used.

A pair goes to eval when ``int(h[:16], 16) / 2**64 < eval_fraction``, where ``h`` is the
prompt hash itself (no salt) or ``sha256(f"{salt}:{prompt_hash}")`` (with a salt), so the split
can be recomputed from the prompt hashes alone.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Sequence

import numpy as np

from rmaudit.data.pairs import Message, PreferencePair
from rmaudit.data.store import column, subset

_WHITESPACE = re.compile(r"\s+")


def normalize_prompt(prompt_messages: list[Message], recompose: bool = True) -> str:
    """The canonical text of a prompt that `prompt_hash` hashes (see module docstring);
    ``recompose=False`` leaves out the NFKC after case folding, as rmaudit did before 0.5.3."""
    return "\n".join(f"{_fold(m['role'], recompose)}: {_fold(m['content'], recompose)}" for m in prompt_messages)


def _fold(text: str, recompose: bool) -> str:
    # Collapsing whitespace also removes newlines, so the "\n" between messages is unambiguous.
    folded = _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()
    return unicodedata.normalize("NFKC", folded) if recompose else folded


def prompt_hash(prompt_messages: list[Message]) -> str:
    """sha256 hex digest of the normalised prompt."""
    return hashlib.sha256(normalize_prompt(prompt_messages).encode("utf-8")).hexdigest()


def prompt_keys(pairs: Sequence[PreferencePair]) -> np.ndarray:
    """(N,) uint64: the first 8 bytes of each pair's prompt hash, the prompt's cluster label for
    intervals; 8 bytes a pair where the hex digests held 0.5 KiB as strings and a numpy array.
    Two prompts share a label with probability about n^2 / 2^65."""
    return column(pairs, "rmaudit.prompt_key", lambda p: int(prompt_hash(p.prompt)[:16], 16), np.uint64)


def legacy_prompt_hash(prompt_messages: list[Message]) -> str:
    """The hash before 0.5.3 (no NFKC after case folding): the split files of checkpoints
    trained then hold it, and differ from :func:`prompt_hash` only for the rare prompts
    whose case folding is not NFKC-normal."""
    return hashlib.sha256(normalize_prompt(prompt_messages, recompose=False).encode("utf-8")).hexdigest()


def split_position(hash_hex: str, salt: str = "") -> float:
    """Where a prompt hash falls in [0, 1); the eval side is everything below the eval fraction."""
    if salt:
        hash_hex = hashlib.sha256(f"{salt}:{hash_hex}".encode()).hexdigest()
    return int(hash_hex[:16], 16) / 2**64


def on_eval_side(pair: PreferencePair, eval_fraction: float, salt: str = "") -> bool:
    """Whether the pair's prompt falls on the eval side of a split with this fraction."""
    return split_position(prompt_hash(pair.prompt), salt) < eval_fraction


def split_by_prompt(pairs: Sequence[PreferencePair], eval_fraction: float,
                    salt: str = "") -> tuple[Sequence[PreferencePair], Sequence[PreferencePair]]:
    """Split pairs into (train, eval) by prompt; pairs sharing a prompt stay together.

    Input order is kept within each side. ``salt`` gives a different, equally deterministic
    split of the same prompts. A list gives two lists, a :class:`PairStore` two views of it.
    """
    return split_by_hashes(pairs, [prompt_hash(pair.prompt) for pair in pairs], eval_fraction, salt)


def split_by_hashes(pairs: Sequence[PreferencePair], hashes: Sequence[str], eval_fraction: float,
                    salt: str = "") -> tuple[Sequence[PreferencePair], Sequence[PreferencePair]]:
    """:func:`split_by_prompt` with each pair's :func:`prompt_hash` already computed (the
    trainer keeps them for its split file: one pass over a stored file, not two)."""
    if not 0.0 <= eval_fraction <= 1.0:
        raise ValueError(f"eval_fraction must be between 0 and 1, got {eval_fraction}")
    held_out = [split_position(h, salt) < eval_fraction for h in hashes]
    return (subset(pairs, [i for i, side in enumerate(held_out) if not side]),
            subset(pairs, [i for i, side in enumerate(held_out) if side]))
