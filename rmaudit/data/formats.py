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
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from rmaudit.errors import RmauditInputError, input_error

JSON_LIST_KEYS = ("data", "rows", "train", "examples")


def read_rows(path: str | Path) -> list[dict]:
    """All rows of a preference file as plain dicts, in file order."""
    return [row for _, row in iter_rows(path)]


def iter_rows(path: str | Path, *, bad_rows: list | None = None) -> Iterator[tuple[int, dict]]:
    """Yield ``(row_number, row)`` pairs; row numbers are 1-based and match error messages.

    A row that cannot be parsed raises its one-line error, or, when ``bad_rows`` is a list,
    is appended to it as ``(row_number, message)`` and skipped (``--skip-bad-rows``).
    """
    path = Path(path)
    if not path.exists():
        raise input_error(path, None, None, "file not found")
    reader = _reader_for(path)
    empty = True
    try:
        for number, row in reader(path):
            if not isinstance(row, (dict, RmauditInputError)):
                row = input_error(path, number, None, f"expected an object per row, got {type(row).__name__}")
            if isinstance(row, RmauditInputError):
                if bad_rows is None:
                    raise row
                bad_rows.append((number, str(row)))
                continue
            empty = False
            yield number, row
    except UnicodeDecodeError as exc:
        raise _not_utf8(path) from exc
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise input_error(path, None, None, f"corrupt or truncated gzip file: {exc}") from exc
    if empty:
        raise input_error(path, None, None, "file holds no rows")


def _not_utf8(path: Path) -> Exception:
    """Name the line and byte of the first invalid UTF-8 sequence (the streaming decoder's
    offsets are relative to a buffer, so the raw bytes are decoded once more to find it)."""
    raw = gzip.open(path, "rb").read() if path.suffix.lower() == ".gz" else path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        return input_error(path, None, None, f"line {line}, column {column}: not UTF-8 text (byte "
                           f"0x{raw[exc.start]:02x}); re-save the file as UTF-8")
    return input_error(path, None, None, "not UTF-8 text; re-save the file as UTF-8")


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
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, _parse_json_line(path, number, line)


def _parse_json_line(path: Path, number: int, line: str) -> object:
    """The parsed line, or its error as a value (so one bad line need not end the file)."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        return input_error(path, number, None, f"invalid JSON: {exc.msg} at column {exc.colno}")


def _read_json(path: Path) -> Iterator[tuple[int, object]]:
    with _open_text(path) as handle:
        text = handle.read()
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
                    yield number, input_error(path, number, None, "more cells than header columns")
                    continue
                # CSV cannot tell an empty cell from empty text; read it as a missing value
                # so a required column reports "missing" instead of scoring "".
                yield number, {key: (None if value == "" else value) for key, value in record.items()}
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
