"""`EncodedPairStore`: the trainer's token ids in a temporary file, 28 bytes a pair in memory.

The trainer encodes every pair once before step 1 and reads a batch of them per step. As
Python lists an hh pair's token ids cost about 36 bytes a token (an int object and its
pointer), some 18 KiB a pair at 512 tokens; with the texts and the tokenizer's output for the
whole file besides, 100k hh pairs peaked at 4.7 GiB (benchmarks/results/train_scale.md). The
store writes each pair's ids as int32 to an unlinked temporary file (``SpillFile``) and keeps,
per pair, where they start, both sides' lengths, the shared-prefix length (the packed widths
the sampler sorts by) and the margin. Reading a pair back is one read of both sides,
microseconds against a training step's seconds.

It is the training-side twin of :class:`rmaudit.data.store.PairStore`, which holds the pairs'
texts for the audit and for encoding.
"""

from __future__ import annotations

from array import array
from typing import Sequence

import numpy as np

from rmaudit.data.spill import SpillFile
from rmaudit.data.store import sequence_index
from rmaudit.train.batching import EncodedPair

_TOKEN = np.dtype("<i4")  # token ids: every vocabulary has fewer than 2**31 tokens


class EncodedPairStore(Sequence[EncodedPair]):
    """Encoded pairs in a temporary file (see the module docstring): ``append`` while encoding,
    then index; each read returns a new :class:`EncodedPair`."""

    def __init__(self) -> None:
        self._file = SpillFile("token store")
        self._starts = array("q")
        self._chosen = array("i")
        self._rejected = array("i")
        self._shared = array("i")
        self._margins = array("d")  # NaN: the pair has no margin

    def append(self, pair: EncodedPair) -> None:
        ids = np.asarray(pair.chosen_ids + pair.rejected_ids, dtype=_TOKEN)
        self._starts.append(self._file.append(ids.tobytes()))
        self._chosen.append(len(pair.chosen_ids))
        self._rejected.append(len(pair.rejected_ids))
        self._shared.append(pair.shared)
        self._margins.append(float("nan") if pair.margin is None else pair.margin)

    def __len__(self) -> int:
        return len(self._starts)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = sequence_index(index, len(self))
        n_chosen, n_rejected = self._chosen[index], self._rejected[index]
        raw = self._file.read(self._starts[index], (n_chosen + n_rejected) * _TOKEN.itemsize)
        ids = np.frombuffer(raw, dtype=_TOKEN).tolist()
        margin = self._margins[index]
        return EncodedPair(ids[:n_chosen], ids[n_chosen:], None if margin != margin else margin)

    def __repr__(self) -> str:
        return f"EncodedPairStore({len(self)} pairs)"

    def lengths(self) -> np.ndarray:
        """(N,) each pair's longer side: its width in a stacked batch."""
        return np.maximum(np.frombuffer(self._chosen, dtype=np.int32), np.frombuffer(self._rejected, dtype=np.int32))

    def packed_lengths(self) -> np.ndarray:
        """(N,) each pair's packed row width: the shared tokens once, then each side's own."""
        chosen = np.frombuffer(self._chosen, dtype=np.int32).astype(np.int64)
        return chosen + np.frombuffer(self._rejected, dtype=np.int32) - np.frombuffer(self._shared, dtype=np.int32)


def pair_lengths(pairs: Sequence[EncodedPair], packed: bool) -> list[int]:
    """Each pair's width in its batch (packed row, or the longer side), from a store's arrays
    without reading a token back, or from the pairs themselves."""
    if isinstance(pairs, EncodedPairStore):
        return (pairs.packed_lengths() if packed else pairs.lengths()).tolist()
    return [p.packed_length if packed else p.length for p in pairs]
