"""Read raw rows (dicts) from the file formats rmaudit accepts.

Supported, detected by extension or folder:
- JSON Lines: ``.jsonl`` / ``.jsonl.gz`` (row number = line number, blank lines skipped);
- JSON: ``.json`` / ``.json.gz`` holding an array of objects, or an object with such an
  array under ``data``, ``rows``, ``train`` or ``examples``; a ``.json`` file that is really
  JSON Lines is read as JSON Lines;
- Parquet: ``.parquet`` (nested list/struct columns come back as Python lists/dicts);
- CSV / TSV: ``.csv``, ``.tsv`` (optionally ``.gz``); every cell is a string and row 1 is the
  first record after the header;
- a folder written by ``datasets.Dataset.save_to_disk`` (needs the optional ``datasets``
  package). A saved ``DatasetDict`` is read from its ``train`` split, or its only split.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from rmaudit.errors import input_error

JSON_LIST_KEYS = ("data", "rows", "train", "examples")


def read_rows(path: str | Path) -> list[dict]:
    """All rows of a preference file as plain dicts, in file order."""
    return [row for _, row in iter_rows(path)]


def iter_rows(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(row_number, row)`` pairs; row numbers are 1-based and match error messages."""
    path = Path(path)
    if not path.exists():
        raise input_error(path, None, None, "file not found")
    reader = _reader_for(path)
    empty = True
    for number, row in reader(path):
        if not isinstance(row, dict):
            raise input_error(path, number, None, f"expected an object per row, got {type(row).__name__}")
        empty = False
        yield number, row
    if empty:
        raise input_error(path, None, None, "file holds no rows")


def _reader_for(path: Path):
    if path.is_dir():
        return _read_saved_dataset
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    kind = suffixes[-1] if suffixes else ""
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet,
               ".csv": _read_csv, ".tsv": _read_csv}
    if kind not in readers:
        raise input_error(path, None, None,
                          "unsupported file type (use .jsonl, .json, .parquet, .csv, .tsv, "
                          "optionally .gz, or a datasets save_to_disk folder)")
    return readers[kind]


def _open_text(path: Path) -> IO[str]:
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _read_jsonl(path: Path) -> Iterator[tuple[int, object]]:
    with _open_text(path) as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield number, _parse_json_line(path, number, line)
        except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as exc:
            raise input_error(path, None, None, f"cannot read file: {exc}") from exc


def _parse_json_line(path: Path, number: int, line: str) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise input_error(path, number, None, f"invalid JSON: {exc.msg} at column {exc.colno}") from exc


def _read_json(path: Path) -> Iterator[tuple[int, object]]:
    try:
        with _open_text(path) as handle:
            text = handle.read()
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as exc:
        raise input_error(path, None, None, f"cannot read file: {exc}") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # several top-level values: really JSON Lines
            yield from _read_jsonl(path)
            return
        raise input_error(path, None, None,
                          f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    yield from enumerate(_row_list(path, document), start=1)


def _row_list(path: Path, document: object) -> list:
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        for key in JSON_LIST_KEYS:
            if isinstance(document.get(key), list):
                return document[key]
    raise input_error(path, None, None,
                      f"expected a JSON array of rows or an object with one under {list(JSON_LIST_KEYS)}")


def _read_parquet(path: Path) -> Iterator[tuple[int, object]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise input_error(path, None, None, f"cannot read Parquet: {exc}") from exc
    yield from enumerate(table.to_pylist(), start=1)


def _read_csv(path: Path) -> Iterator[tuple[int, object]]:
    csv.field_size_limit(2**31 - 1)  # preference cells can be whole transcripts
    delimiter = "\t" if ".tsv" in [s.lower() for s in path.suffixes] else ","
    with _open_text(path) as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        try:
            for number, record in enumerate(reader, start=1):
                if None in record:
                    raise input_error(path, number, None, "more cells than header columns")
                yield number, record
        except csv.Error as exc:
            raise input_error(path, reader.line_num, None, f"invalid CSV: {exc}") from exc


def _read_saved_dataset(path: Path) -> Iterator[tuple[int, object]]:
    try:
        import datasets
    except ImportError as exc:
        raise input_error(path, None, None,
                          "reading a datasets folder needs the optional 'datasets' package "
                          "(pip install 'rmaudit[datasets]')") from exc
    if not (path / "dataset_info.json").exists() and not (path / "dataset_dict.json").exists():
        raise input_error(path, None, None, "folder is not a datasets save_to_disk folder")
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        loaded = _pick_split(path, loaded)
    yield from enumerate(loaded.to_list(), start=1)


def _pick_split(path: Path, splits):
    if "train" in splits:
        return splits["train"]
    if len(splits) == 1:
        return next(iter(splits.values()))
    raise input_error(path, None, None,
                      f"saved DatasetDict has splits {sorted(splits)}; point at one split's folder")
