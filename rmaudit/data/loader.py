"""`load_pairs()`: one entry point from any supported file to `PreferencePair`s."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from rmaudit.data.adapters import ADAPTERS, detect_adapter
from rmaudit.data.formats import iter_rows
from rmaudit.data.pairs import PreferencePair
from rmaudit.data.shapes import ColumnMap, SkipRow, detect_shape, row_to_pair
from rmaudit.data.store import PairStore
from rmaudit.errors import RmauditInputError, input_error

log = logging.getLogger(__name__)


@dataclass
class LoadedPairs:
    """The pairs of one file plus what the loader had to set aside."""

    pairs: list[PreferencePair] | PairStore
    """A list, or with ``store=True`` a :class:`PairStore` (pairs in a temporary file)."""
    shape: str
    """"explicit", "conversational", "hh", "llmbar" or "pandalm"."""
    skipped: dict[str, list[int]] = field(default_factory=dict)
    """Reason -> 1-based rows of well-formed rows that could not become a pair."""
    identical: list[int] = field(default_factory=list)
    """Rows whose chosen equals rejected; kept, but they carry no preference signal."""
    bad_rows: list[tuple[int, str]] = field(default_factory=list)
    """(row, one-line error) of malformed rows skipped under ``skip_bad_rows``."""


def load_pairs(path: str | Path, *, columns: ColumnMap | None = None, adapter: str | None = None,
               limit: int | None = None, skip_bad_rows: bool = False) -> list[PreferencePair]:
    """Read preference pairs from a file or `save_to_disk` folder.

    ``columns`` renames the generic columns; ``adapter`` forces "llmbar" or "pandalm" (they
    are auto-detected from the fields otherwise); ``limit`` keeps the first N pairs;
    ``skip_bad_rows`` skips malformed rows (counted and logged) instead of stopping at the first.
    Skipped rows and identical chosen/rejected pairs are logged as warnings with counts.
    """
    return list(read_pairs(path, columns=columns, adapter=adapter, limit=limit, skip_bad_rows=skip_bad_rows).pairs)


def read_pairs(path: str | Path, *, columns: ColumnMap | None = None, adapter: str | None = None,
               limit: int | None = None, skip_bad_rows: bool = False, store: bool = False) -> LoadedPairs:
    """Like `load_pairs`, but also report the skipped rows and identical pairs. ``store``: the
    pairs go to a :class:`PairStore` as they are read, so memory does not grow with the file
    (the audit's way; rows are checked as before, the first bad one stops the read)."""
    path = Path(path)
    if adapter is not None and adapter not in ADAPTERS:
        raise input_error(path, None, None, f"unknown adapter {adapter!r} (known: {', '.join(ADAPTERS)})")
    if adapter is not None and columns is not None:
        raise input_error(path, None, None, "column overrides cannot be combined with an adapter")
    if limit is not None and limit < 1:
        raise input_error(path, None, None, f"limit must be at least 1, got {limit}")
    columns = columns or ColumnMap()
    loaded: LoadedPairs | None = None
    bad_rows: list[tuple[int, str]] | None = [] if skip_bad_rows else None
    for number, row in iter_rows(path, bad_rows=bad_rows):
        if loaded is None:
            loaded = LoadedPairs(PairStore() if store else [], _pick_shape(row, path, number, columns, adapter))
        try:
            _add_row(loaded, row, path, number, columns)
        except RmauditInputError as exc:
            if bad_rows is None:
                raise
            bad_rows.append((number, str(exc)))
        if limit is not None and len(loaded.pairs) >= limit:
            break  # before reading further: a huge file need not be read to the end
    if loaded is None:
        raise input_error(path, None, None, f"no readable rows ({len(bad_rows or [])} malformed)")
    loaded.bad_rows = sorted(bad_rows or [])
    _report(loaded, path)
    if not loaded.pairs:
        raise input_error(path, None, None, "no usable pairs (every row was skipped)")
    return loaded


def _pick_shape(row: dict, path: Path, number: int, columns: ColumnMap, adapter: str | None) -> str:
    if adapter is not None:
        return adapter
    if not any(columns.is_set(f) for f in ("prompt", "chosen", "rejected")):
        detected = detect_adapter(row)
        if detected is not None:
            return detected
    return detect_shape(row, columns, path, number)


def _add_row(loaded: LoadedPairs, row: dict, path: Path, number: int, columns: ColumnMap) -> None:
    try:
        if loaded.shape in ADAPTERS:
            pair = ADAPTERS[loaded.shape](row, path, number)
        else:
            pair = row_to_pair(row, loaded.shape, columns, path, number)
    except SkipRow as skip:
        loaded.skipped.setdefault(skip.reason, []).append(number)
        return
    if pair.chosen == pair.rejected:
        loaded.identical.append(number)
    loaded.pairs.append(pair)


def _report(loaded: LoadedPairs, path: Path) -> None:
    if loaded.bad_rows:
        log.warning("%s: skipped %d malformed row(s) (--skip-bad-rows); first: %s", path,
                    len(loaded.bad_rows), loaded.bad_rows[0][1])
    for reason, rows in loaded.skipped.items():
        log.warning("%s: skipped %d row(s): %s (rows %s)", path, len(rows), reason, _few(rows))
    if loaded.identical:
        log.warning("%s: %d pair(s) have identical chosen and rejected; kept, but they carry no "
                    "preference signal (rows %s)", path, len(loaded.identical), _few(loaded.identical))


def _few(rows: list[int]) -> str:
    shown = ", ".join(map(str, rows[:10]))
    return shown + (f", ... ({len(rows) - 10} more)" if len(rows) > 10 else "")
