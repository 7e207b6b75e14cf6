"""Bad input gives one-line errors that name the file, the 1-based row and the field."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from rmaudit.data import ColumnMap, load_pairs
from rmaudit.errors import RmauditInputError

GOOD = {"prompt": "2+2?", "chosen": "4", "rejected": "5"}


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(RmauditInputError) as caught:
        load_pairs(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_invalid_json_on_line_17(tmp_path: Path):
    path = _jsonl(tmp_path / "bad.jsonl", [GOOD] * 16 + ['{"prompt": "x", "chosen": '] + [GOOD])
    assert _error(path).startswith(f"{path}: row 17: invalid JSON: Expecting value")


def test_invalid_json_array_names_the_line(tmp_path: Path):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"prompt": "q",\n   "chosen": }\n]', encoding="utf-8")
    assert _error(path) == f"{path}: invalid JSON at line 3, column 14: Expecting value"


@pytest.mark.parametrize("field", ["prompt", "chosen", "rejected"])
def test_a_lone_surrogate_names_its_row_and_field(tmp_path: Path, field: str):
    """A JSON escape like \\ud800 decodes to half a character; it is refused on load, not by
    the tokenizer halfway through an audit."""
    row = '{"prompt": "2+2?", "chosen": "4", "rejected": "5"}'.replace(f'"{field}": "', f'"{field}": "ok \\ud800 ')
    path = _jsonl(tmp_path / "bad.jsonl", [GOOD, row])
    assert _error(path) == f"{path}: row 2: field '{field}': character 4 is a lone surrogate (U+D800), not Unicode text"


def test_missing_rejected(tmp_path: Path):
    path = _jsonl(tmp_path / "d.jsonl", [GOOD, GOOD, {"prompt": "q", "chosen": "a"}])
    assert _error(path) == f"{path}: row 3: field 'rejected': missing"


def test_non_string_chosen(tmp_path: Path):
    path = _jsonl(tmp_path / "d.jsonl", [GOOD, {**GOOD, "chosen": 4}])
    assert _error(path) == f"{path}: row 2: field 'chosen': expected a string, got int"


def test_empty_files(tmp_path: Path):
    for name in ("empty.jsonl", "empty.csv"):
        (tmp_path / name).write_text("", encoding="utf-8")
        assert _error(tmp_path / name) == f"{tmp_path / name}: file holds no rows"
    (tmp_path / "empty.json").write_text("[]", encoding="utf-8")
    assert _error(tmp_path / "empty.json").endswith("file holds no rows")


def test_missing_file_and_unknown_extension(tmp_path: Path):
    assert _error(tmp_path / "nope.jsonl").endswith("nope.jsonl: file not found")
    (tmp_path / "data.xlsx").write_bytes(b"PK")
    assert "unsupported file type" in _error(tmp_path / "data.xlsx")


def test_corrupt_gzip(tmp_path: Path):
    path = tmp_path / "broken.jsonl.gz"
    path.write_bytes(b"plain text, not gzip")
    assert "corrupt or truncated gzip file" in _error(path)


def test_bad_margin_in_csv_names_row_and_column(tmp_path: Path):
    path = tmp_path / "m.csv"
    pd.DataFrame([{**GOOD, "margin": "1.0"}, {**GOOD, "margin": "lots"}]).to_csv(path, index=False)
    assert _error(path) == f"{path}: row 2: field 'margin': expected a number, got text 'lots'"


def test_message_with_non_string_content(tmp_path: Path):
    rows = [{"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ["a"]}],
             "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]}]
    path = _jsonl(tmp_path / "c.jsonl", rows)
    assert _error(path) == f"{path}: row 1: field 'chosen': message 2: 'content' must be a string, got list"


def test_conversation_not_ending_with_assistant(tmp_path: Path):
    rows = [{"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
             "rejected": [{"role": "user", "content": "q"}, {"role": "user", "content": "b"}]}]
    path = _jsonl(tmp_path / "c.jsonl", rows)
    assert _error(path) == f"{path}: row 1: field 'rejected': last message has role 'user', expected 'assistant'"


def test_hh_transcript_not_ending_with_assistant(tmp_path: Path):
    rows = [{"chosen": "\n\nHuman: hi\n\nAssistant: yo", "rejected": "\n\nHuman: hi\n\nAssistant: yo\n\nHuman: ?"}]
    path = _jsonl(tmp_path / "h.jsonl", rows)
    assert _error(path) == (f"{path}: row 1: field 'rejected': not an hh-rlhf transcript: "
                            "transcript does not end with an 'Assistant:' turn")


def test_no_prompt_column_and_no_transcript(tmp_path: Path):
    path = _jsonl(tmp_path / "p.jsonl", [{"chosen": "a", "rejected": "b"}])
    assert _error(path).startswith(f"{path}: row 1: field 'prompt': missing")


def test_named_column_that_does_not_exist(tmp_path: Path):
    path = _jsonl(tmp_path / "p.jsonl", [GOOD])
    assert _error(path, columns=ColumnMap(margin="gap")) == f"{path}: row 1: field 'gap': column not found"


def test_csv_row_with_too_many_cells(tmp_path: Path):
    path = tmp_path / "wide.csv"
    path.write_text("prompt,chosen,rejected\nq,a,b\nq,a,b,extra\n", encoding="utf-8")
    assert _error(path) == f"{path}: row 2: more cells than header columns"


def test_datasets_folder_without_datasets_installed(tmp_path: Path, monkeypatch):
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "dataset_info.json").write_text("{}", encoding="utf-8")
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    assert "needs the optional 'datasets' package" in _error(folder)


def test_every_row_skipped_is_an_error(tmp_path: Path):
    path = tmp_path / "ties.json"
    tie = {"instruction": "i", "input": "", "response1": "a", "response2": "b",
           "annotator1": 0, "annotator2": 0, "annotator3": 0}
    path.write_text(json.dumps([tie, tie]), encoding="utf-8")
    assert _error(path) == f"{path}: no usable pairs (every row was skipped)"
