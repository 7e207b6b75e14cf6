"""`PairStore`: preference pairs kept in a temporary file, 8 bytes each in memory.

An audit reads its eval (and training) pairs many times over, in several probes, but holds
only one or a few of them at once. Held as Python objects an hh pair costs about 3 KiB
(issue 13: 100k pairs were the largest part of the whole audit's growth of about 5 KiB a
pair, benchmarks/results/scale.md), so the loader streams the file's pairs into a store
instead: each pair is one JSON record in an unlinked temporary file (:class:`SpillFile`) and
the store keeps its byte offset. Reading a pair back costs a seek in the file's read buffer
and a ``json.loads`` (about 8 us for an hh pair on a 2-core EPYC), so a pass over 100k pairs
costs about a second.

A store is a read-only :class:`~collections.abc.Sequence`; :meth:`PairStore.subset` is a
view (the file is shared, the view keeps an array of row numbers). Each read returns a new
:class:`PreferencePair`, equal to the stored one but not the same object: code that needs
the same pair again keys it by content (``AuditContext.pair_rewards``), not by ``id``.
Plain lists of pairs (the canonical battery, the Python API's callers) work where a store
does: :func:`subset`, :func:`keep_where` and :class:`PairChain` take either.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from rmaudit.data.pairs import PreferencePair
from rmaudit.data.spill import SpillFile


def sequence_index(index: int, length: int) -> int:
    """``index`` of a sequence of ``length`` as a position from the start (negative counts from
    the end); IndexError when out of range, which also ends ``Sequence.__iter__``."""
    position = index + length if index < 0 else index
    if not 0 <= position < length:
        raise IndexError(index)
    return position


class _PairFile:
    """The file under one or more stores: a JSON record per pair and the offset where each starts."""

    def __init__(self) -> None:
        self._file = SpillFile("pair store")
        self._offsets = array("q")
        self._sources: dict[str, int] = {}  # a file's pairs share a source name: stored once
        self._source_names: list[str] = []

    def __len__(self) -> int:
        return len(self._offsets)

    def append(self, pair: PreferencePair) -> None:
        source = self._sources.get(pair.source)
        if source is None:
            source = self._sources[pair.source] = len(self._source_names)
            self._source_names.append(pair.source)
        line = json.dumps(_record(pair, source),
                          ensure_ascii=False, separators=(",", ":"), default=_plain)
        self._offsets.append(self._file.append(line.encode("utf-8", "surrogatepass")))

    def read(self, line: int) -> PreferencePair:
        start = self._offsets[line]
        end = self._offsets[line + 1] if line + 1 < len(self._offsets) else len(self._file)
        return _pair(json.loads(self._file.read(start, end - start).decode("utf-8", "surrogatepass")),
                     self._source_names)


class PairStore(Sequence[PreferencePair]):
    """Pairs in a temporary file (see the module docstring); ``append`` while loading, then read."""

    def __init__(self, pairs: Iterable[PreferencePair] = (), *, _file: _PairFile | None = None,
                 _rows: np.ndarray | None = None):
        self._file = _file if _file is not None else _PairFile()
        self._rows = _rows  # None: every pair of the file, in order; else a view's row numbers
        self._columns: dict[str, np.ndarray] = {}  # see column()
        for pair in pairs:
            self.append(pair)

    def append(self, pair: PreferencePair) -> None:
        if self._rows is not None:
            raise TypeError("a PairStore view (subset) is read-only")
        self._file.append(pair)
        self._columns.clear()

    def __len__(self) -> int:
        return len(self._file) if self._rows is None else len(self._rows)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return self.subset(range(*index.indices(len(self))))
        index = sequence_index(index, len(self))
        return self._file.read(index if self._rows is None else int(self._rows[index]))

    def __iter__(self) -> Iterator[PreferencePair]:
        lines = range(len(self._file)) if self._rows is None else self._rows.tolist()
        for line in lines:
            yield self._file.read(line)

    def __repr__(self) -> str:
        return f"PairStore({len(self)} pairs)"

    def subset(self, indices: Iterable[int]) -> "PairStore":
        """A read-only view of the pairs at ``indices`` (in that order), sharing the file."""
        picked = np.fromiter(indices, dtype=np.int64) if not isinstance(indices, np.ndarray) else indices.astype(np.int64)
        rows = picked if self._rows is None else self._rows[picked]
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self._file)):
            raise IndexError("subset index out of range")
        view = PairStore(_file=self._file, _rows=rows)
        view._columns = {name: values[picked] for name, values in self._columns.items()}
        return view


class PairChain(Sequence[PreferencePair]):
    """Several pair sequences read as one, without copying them (held-out then canonical)."""

    def __init__(self, *parts: Sequence[PreferencePair]):
        self._parts = [p for p in parts if len(p)]
        self._ends = np.cumsum([len(p) for p in self._parts], dtype=np.int64)

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return subset(self, range(*index.indices(len(self))))
        index = sequence_index(index, len(self))
        part = int(np.searchsorted(self._ends, index, side="right"))
        return self._parts[part][index - (int(self._ends[part - 1]) if part else 0)]

    def __iter__(self) -> Iterator[PreferencePair]:
        for part in self._parts:
            yield from part


def subset(pairs: Sequence[PreferencePair], indices: Iterable[int]) -> Sequence[PreferencePair]:
    """The pairs at ``indices``, in that order: a view of a store (8 bytes a pair), else a list
    (a chain's subsets are the few pairs of a sample)."""
    if isinstance(pairs, PairStore):
        return pairs.subset(indices)
    return [pairs[i] for i in indices]


def keep_where(pairs: Sequence[PreferencePair], keep: Callable[[PreferencePair], bool]) -> Sequence[PreferencePair]:
    """The pairs for which ``keep`` holds, in order: one streaming pass, a view of a store."""
    if isinstance(pairs, list):
        return [p for p in pairs if keep(p)]
    return subset(pairs, [i for i, pair in enumerate(pairs) if keep(pair)])


def first_of_each(pairs: Iterable[PreferencePair], key: Callable[[PreferencePair], Any]) -> list[int]:
    """Indices of the first pair of each distinct ``key(pair)``, in order (``None``: the pair is
    left out). Keys (JSON-able) are compared by a 16-byte digest, so this holds no pair text."""
    rows, digests = [], []
    for i, pair in enumerate(pairs):
        value = key(pair)
        if value is not None:
            rows.append(i)
            text = json.dumps(value, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass")
            digests.append(hashlib.blake2b(text, digest_size=16).digest())
    if not rows:
        return []
    _, first = np.unique(np.array(digests, dtype="V16"), return_index=True)
    return [rows[j] for j in np.sort(first).tolist()]


def column(pairs: Sequence[PreferencePair], name: str, value: Callable[[PreferencePair], Any],
           dtype: Any) -> np.ndarray:
    """(N,) ``value(pair)`` for every pair, as an array: a store computes it once and keeps it
    (its views inherit it), so the probes that need a pair's fingerprint or prompt label do not
    each read every pair back from disk (a pass over 100k pairs costs about a second). ``name`` must
    say what ``value`` computes: it is the cache key."""
    if isinstance(pairs, PairStore):
        if name not in pairs._columns:
            pairs._columns[name] = np.fromiter(map(value, pairs), dtype=dtype, count=len(pairs))
        return pairs._columns[name]
    if isinstance(pairs, PairChain):
        return np.concatenate([column(part, name, value, dtype) for part in pairs._parts] or [np.empty(0, dtype)])
    return np.fromiter(map(value, pairs), dtype=dtype, count=len(pairs))


def head(pairs: Sequence[PreferencePair], n: int) -> list[PreferencePair]:
    """The first ``n`` pairs as a list, reading no further."""
    out: list[PreferencePair] = []
    for pair in pairs:
        if len(out) >= n:
            break
        out.append(pair)
    return out


def _record(pair: PreferencePair, source: int) -> dict[str, Any]:
    record: dict[str, Any] = {"p": pair.prompt, "c": pair.chosen, "r": pair.rejected, "s": source, "n": pair.row}
    if pair.margin is not None:
        record["m"] = pair.margin
    if pair.category is not None:
        record["k"] = pair.category
    if pair.meta:
        record["x"] = pair.meta
    return record


def _pair(record: dict[str, Any], sources: list[str]) -> PreferencePair:
    return PreferencePair(prompt=record["p"], chosen=record["c"], rejected=record["r"], margin=record.get("m"),
                          source=sources[record["s"]], row=record["n"], category=record.get("k"),
                          meta=record.get("x", {}))


def _plain(value: Any) -> Any:
    """numpy scalars (a parquet column's ints and floats) as the Python numbers they equal."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot store a {type(value).__name__} in a pair")
