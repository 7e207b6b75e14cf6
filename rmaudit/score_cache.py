"""The audit's score cache: one reward per distinct text, in two flat arrays.

A text is keyed by an 8-byte salted blake2b digest held as a uint64, so the cache costs 16
bytes per text (key and float64 reward) however long the text, where a dict of digests
cost about 300 (issue 13: peak RSS must not grow with the eval set). Two different texts
share a key with probability about n^2 / 2^65: 1e-9 for the 200k texts of 100k pairs, 3e-4
for 100M texts; a collision gives one text the other's reward, it never fails an audit.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np


def text_keys(texts: Sequence[str], salt: bytes) -> np.ndarray:
    """(N,) uint64 keys: the salt (the pooling rule) keeps one text's rewards under two
    readouts apart."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=8, key=salt).digest(),
                        "little") for t in texts), dtype=np.uint64, count=len(texts))


class ScoreCache:
    """Rewards by key, sorted by key for ``np.searchsorted`` lookups."""

    def __init__(self) -> None:
        self.keys = np.empty(0, dtype=np.uint64)
        self.values = np.empty(0, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.keys)

    def _find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        where = np.searchsorted(self.keys, keys)
        found = where < len(self.keys)
        found[found] = self.keys[where[found]] == keys[found]
        return where, found

    def has(self, keys: np.ndarray) -> np.ndarray:
        """(N,) bool: which keys are cached."""
        return self._find(keys)[1]

    def missing(self, keys: np.ndarray) -> np.ndarray:
        """Indices into ``keys`` of the first occurrence of each key not cached, in input order."""
        absent = np.flatnonzero(~self.has(keys))
        _, first = np.unique(keys[absent], return_index=True)
        return absent[np.sort(first)]

    def get(self, keys: np.ndarray) -> np.ndarray:
        """(N,) float64 rewards; every key must be cached."""
        where, found = self._find(keys)
        if not found.all():
            raise KeyError(f"{int((~found).sum())} texts were never scored")
        return self.values[where]

    def update(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Add rewards; a key already cached keeps its first reward (the same text, scored once)."""
        keys, first = np.unique(np.asarray(keys, dtype=np.uint64), return_index=True)
        new = ~self._find(keys)[1]
        keys, values = keys[new], np.asarray(values, dtype=np.float64)[first][new]
        at = np.searchsorted(self.keys, keys)
        self.keys, self.values = np.insert(self.keys, at, keys), np.insert(self.values, at, values)

    def export(self, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(keys, rewards) of every entry whose key is not in ``exclude``: what one process
        hands the others."""
        keep = slice(None) if exclude is None else ~np.isin(self.keys, exclude)
        return self.keys[keep].copy(), self.values[keep].copy()
