"""Every file format x every shape, written with the real libraries and read back."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rmaudit.data import ColumnMap, load_pairs, read_pairs, read_rows

# Texts that stress the writers: commas, quotes, newlines, tabs, non-ASCII.
EXPECTED = [
    {"prompt": [{"role": "user", "content": 'Say "hi", then stop.'}],
     "chosen": "hi", "rejected": "Hello there,\nfriend!", "margin": 1.5, "category": "greeting"},
    {"prompt": [{"role": "user", "content": "Qu'est-ce que « π » ?"},
                {"role": "assistant", "content": "Une constante.\tEnviron 3,14."},
                {"role": "user", "content": "Plus de chiffres ?"}],
     "chosen": "3,14159", "rejected": "3,15", "margin": None, "category": "maths"},
    {"prompt": [{"role": "user", "content": "Empty answer is fine?"}],
     "chosen": "Yes.", "rejected": "No, never.", "margin": 0.25, "category": None},
]


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def _hh(prompt: list[dict], response: str) -> str:
    speakers = {"user": "Human", "assistant": "Assistant"}
    turns = [*prompt, _assistant(response)]
    return "".join(f"\n\n{speakers[m['role']]}: {m['content']}" for m in turns)


def rows_for(shape: str) -> list[dict]:
    """The EXPECTED pairs written in one shape, as a user's file would hold them."""
    rows = []
    for pair in EXPECTED:
        prompt, chosen, rejected = pair["prompt"], pair["chosen"], pair["rejected"]
        if shape == "explicit" and len(prompt) == 1:
            row = {"prompt": prompt[0]["content"], "chosen": chosen, "rejected": rejected}
        elif shape == "explicit":  # multi-turn prompt written as an hh transcript awaiting a reply
            row = {"prompt": _hh(prompt, "").rstrip(), "chosen": chosen, "rejected": rejected}
        elif shape == "conversational_prompt":
            row = {"prompt": prompt, "chosen": [_assistant(chosen)], "rejected": [_assistant(rejected)]}
        elif shape == "conversational_implicit":
            row = {"chosen": [*prompt, _assistant(chosen)], "rejected": [*prompt, _assistant(rejected)]}
        else:
            row = {"chosen": _hh(prompt, chosen), "rejected": _hh(prompt, rejected)}
        rows.append({**row, "margin": pair["margin"], "category": pair["category"]})
    return rows


def _encoded(rows: list[dict]) -> list[dict]:
    """Message lists JSON-encoded into strings, as CSV (and some Parquet) cells hold them."""
    return [{k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()} for row in rows]


def write_jsonl(rows, path):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_jsonl_gz(rows, path):
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in rows)


def write_json_array(rows, path):
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")


def write_json_object(rows, path):
    path.write_text(json.dumps({"version": 1, "data": rows}), encoding="utf-8")


def write_parquet_native(rows, path):
    pq.write_table(pa.Table.from_pylist(rows), path)


def write_parquet_encoded(rows, path):
    pd.DataFrame(_encoded(rows)).to_parquet(path)


def write_csv(rows, path):
    pd.DataFrame(_encoded(rows)).to_csv(path, index=False)


def write_tsv_gz(rows, path):
    pd.DataFrame(_encoded(rows)).to_csv(path, index=False, sep="\t", compression="gzip")


def write_saved_dataset(rows, path):
    datasets = pytest.importorskip("datasets", reason="the optional datasets package is not installed")
    datasets.Dataset.from_list(rows).save_to_disk(str(path))


WRITERS = {
    "data.jsonl": write_jsonl,
    "data.jsonl.gz": write_jsonl_gz,
    "data.json": write_json_array,
    "wrapped.json": write_json_object,
    "native.parquet": write_parquet_native,
    "encoded.parquet": write_parquet_encoded,
    "data.csv": write_csv,
    "data.tsv.gz": write_tsv_gz,
    "saved_dataset": write_saved_dataset,
}
SHAPES = {"explicit": "explicit", "conversational_prompt": "conversational",
          "conversational_implicit": "conversational", "hh": "hh"}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("filename", WRITERS)
def test_round_trip(tmp_path: Path, filename: str, shape: str):
    path = tmp_path / filename
    WRITERS[filename](rows_for(shape), path)
    loaded = read_pairs(path)
    assert loaded.shape == SHAPES[shape]
    assert len(loaded.pairs) == len(EXPECTED)
    for number, (pair, expected) in enumerate(zip(loaded.pairs, EXPECTED), start=1):
        assert pair.prompt == expected["prompt"]
        assert (pair.chosen, pair.rejected) == (expected["chosen"], expected["rejected"])
        assert pair.margin == expected["margin"]
        assert pair.category == expected["category"]
        assert (pair.source, pair.row) == (str(path), number)
        assert pair.chosen_messages() == [*expected["prompt"], _assistant(expected["chosen"])]
        assert pair.rejected_messages()[-1] == _assistant(expected["rejected"])


def test_saved_dataset_dict_reads_train_split(tmp_path: Path):
    datasets = pytest.importorskip("datasets", reason="the optional datasets package is not installed")
    splits = datasets.DatasetDict({
        "train": datasets.Dataset.from_list(rows_for("explicit")),
        "test": datasets.Dataset.from_list(rows_for("explicit")[:1]),
    })
    splits.save_to_disk(str(tmp_path / "dd"))
    assert [p.chosen for p in load_pairs(tmp_path / "dd")] == [p["chosen"] for p in EXPECTED]


def test_column_map_renames_columns(tmp_path: Path):
    rows = [{"question": "2+2?", "good": "4", "bad": "5", "weight": "2", "topic": "sums"}]
    write_csv(rows, tmp_path / "renamed.csv")
    columns = ColumnMap(prompt="question", chosen="good", rejected="bad", margin="weight", category="topic")
    (pair,) = load_pairs(tmp_path / "renamed.csv", columns=columns)
    assert (pair.prompt, pair.chosen, pair.rejected) == ([{"role": "user", "content": "2+2?"}], "4", "5")
    assert (pair.margin, pair.category, pair.meta) == (2.0, "sums", {})


def test_rewardbench_subset_is_the_category_unless_a_category_is_there_or_named(tmp_path: Path):
    # RewardBench's release files (allenai/reward-bench, split "filtered") name each row's
    # slice in `subset`; per-subset accuracy should need no --columns flag.
    base = {"prompt": "2+2?", "chosen": "4", "rejected": "5", "id": 7}
    write_jsonl([{**base, "subset": "math-prm"}], tmp_path / "rb.jsonl")
    (pair,) = load_pairs(tmp_path / "rb.jsonl")
    assert (pair.category, pair.meta) == ("math-prm", {"id": 7})
    write_jsonl([{**base, "subset": "math-prm", "category": "reasoning"}], tmp_path / "both.jsonl")
    (pair,) = load_pairs(tmp_path / "both.jsonl")
    assert (pair.category, pair.meta) == ("reasoning", {"id": 7, "subset": "math-prm"})
    write_jsonl([{**base, "subset": "math-prm", "topic": "sums"}], tmp_path / "named.jsonl")
    (pair,) = load_pairs(tmp_path / "named.jsonl", columns=ColumnMap(category="topic"))
    assert (pair.category, pair.meta) == ("sums", {"id": 7, "subset": "math-prm"})


def test_jsonl_rows_are_line_numbers_and_limit_stops_early(tmp_path: Path):
    path = tmp_path / "gaps.jsonl"
    lines = [json.dumps(r) for r in rows_for("explicit")]
    path.write_text(f"{lines[0]}\n\n{lines[1]}\n{lines[2]}\nnot json at all\n", encoding="utf-8")
    assert [p.row for p in load_pairs(path, limit=3)] == [1, 3, 4]


def test_extra_scalar_columns_are_kept_in_meta(tmp_path: Path):
    rows = [{**row, "id": f"q{i}", "tags": ["a"]} for i, row in enumerate(rows_for("explicit"))]
    write_jsonl(rows, tmp_path / "extra.jsonl")
    assert [p.meta for p in load_pairs(tmp_path / "extra.jsonl")] == [{"id": "q0"}, {"id": "q1"}, {"id": "q2"}]


def test_json_file_holding_json_lines_is_read(tmp_path: Path):
    write_jsonl(rows_for("hh"), tmp_path / "lines.json")
    assert len(read_rows(tmp_path / "lines.json")) == len(EXPECTED)


def test_conversational_prompt_repeated_in_chosen_is_stripped(tmp_path: Path):
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    rows = [{"prompt": prompt, "chosen": [*prompt, _assistant("Hi.")], "rejected": [_assistant("Hello, how are you?")]}]
    write_jsonl(rows, tmp_path / "repeat.jsonl")
    (pair,) = load_pairs(tmp_path / "repeat.jsonl")
    assert (pair.prompt, pair.chosen, pair.rejected) == (prompt, "Hi.", "Hello, how are you?")


def test_pairs_whose_prompts_differ_are_skipped_and_counted(tmp_path: Path, caplog):
    rows = rows_for("conversational_implicit")
    rows[1]["rejected"] = [{"role": "user", "content": "something else"}, _assistant("x")]
    write_jsonl(rows, tmp_path / "mismatch.jsonl")
    loaded = read_pairs(tmp_path / "mismatch.jsonl")
    assert [p.row for p in loaded.pairs] == [1, 3]
    assert loaded.skipped == {"chosen and rejected prompts differ": [2]}
    assert "skipped 1 row(s): chosen and rejected prompts differ (rows 2)" in caplog.text


def test_identical_chosen_and_rejected_are_kept_and_counted(tmp_path: Path, caplog):
    rows = rows_for("explicit")
    rows[2]["rejected"] = rows[2]["chosen"]
    write_jsonl(rows, tmp_path / "same.jsonl")
    loaded = read_pairs(tmp_path / "same.jsonl")
    assert len(loaded.pairs) == 3 and loaded.identical == [3]
    assert "1 pair(s) have identical chosen and rejected" in caplog.text
