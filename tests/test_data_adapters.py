"""LLMBar and PandaLM adapters on the real files, plus the PandaLM voting rule on edge rows."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from helpers_data import LLMBAR_DIR, PANDALM_FILE, needs
from rmaudit.data import load_pairs, read_pairs
from rmaudit.errors import RmauditInputError


@needs(LLMBAR_DIR)
def test_llmbar_files_pick_the_labelled_output():
    files = sorted(LLMBAR_DIR.glob("Dataset_*.json"))
    assert len(files) == 8
    total = 0
    for path in files:
        raw = json.loads(path.read_text(encoding="utf-8"))
        loaded = read_pairs(path)
        assert loaded.shape == "llmbar" and not loaded.skipped
        assert len(loaded.pairs) == len(raw)
        for pair, row in zip(loaded.pairs, raw):
            assert pair.prompt == [{"role": "user", "content": row["input"]}]
            assert pair.chosen == row[f"output_{row['label']}"]
            assert pair.rejected == row[f"output_{3 - row['label']}"]
        total += len(loaded.pairs)
    assert total == 885


@needs(PANDALM_FILE)
def test_pandalm_majority_vote_drops_ties_and_counts_boolean_responses(caplog):
    raw = json.loads(PANDALM_FILE.read_text(encoding="utf-8"))
    with caplog.at_level(logging.WARNING):
        loaded = read_pairs(PANDALM_FILE)
    assert loaded.shape == "pandalm"
    booleans = loaded.skipped["response is a JSON boolean, not text"]
    assert booleans == [158, 159, 160, 162, 163, 165]
    assert "skipped 6 row(s): response is a JSON boolean, not text" in caplog.text
    ties = loaded.skipped["annotator majority is a tie, or no majority"]
    assert len(ties) == 105 and len(loaded.pairs) == 999 - 105 - 6
    for number in ties:
        votes = [raw[number - 1][f"annotator{i}"] for i in (1, 2, 3)]
        assert votes.count(1) < 2 and votes.count(2) < 2
    for pair in loaded.pairs:
        row = raw[pair.row - 1]
        votes = [row[f"annotator{i}"] for i in (1, 2, 3)]
        winner = 1 if votes.count(1) >= 2 else 2
        assert votes.count(winner) >= 2
        assert (pair.chosen, pair.rejected) == (row[f"response{winner}"], row[f"response{3 - winner}"])
        assert pair.prompt[0]["content"].startswith(row["instruction"])
        assert row["input"].strip() in pair.prompt[0]["content"]


def _pandalm_row(votes, response1="first", response2="second", extra=""):
    a1, a2, a3 = votes
    return {"instruction": "Pick one.", "input": extra, "response1": response1, "response2": response2,
            "annotator1": a1, "annotator2": a2, "annotator3": a3}


def test_pandalm_voting_rule(tmp_path: Path):
    rows = [_pandalm_row((2, 1, 1)), _pandalm_row((1, 2, 0)), _pandalm_row((0, 0, 1)),
            _pandalm_row((2, 0, 2), extra=" some input ")]
    path = tmp_path / "panda.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    loaded = read_pairs(path)
    assert [(p.row, p.chosen) for p in loaded.pairs] == [(1, "first"), (4, "second")]
    assert loaded.skipped == {"annotator majority is a tie, or no majority": [2, 3]}
    assert loaded.pairs[0].prompt == [{"role": "user", "content": "Pick one."}]
    assert loaded.pairs[1].prompt == [{"role": "user", "content": "Pick one.\n\nsome input"}]
    assert loaded.pairs[1].meta["annotators"] == [2, 0, 2]


def test_pandalm_non_text_response_other_than_boolean_is_an_error(tmp_path: Path):
    path = tmp_path / "panda.json"
    path.write_text(json.dumps([_pandalm_row((1, 1, 1)), _pandalm_row((1, 1, 1), response2=7)]), encoding="utf-8")
    with pytest.raises(RmauditInputError, match=r"panda\.json: row 2: field 'response2': expected a string"):
        load_pairs(path)


def test_llmbar_bad_label_is_an_error(tmp_path: Path):
    path = tmp_path / "bar.json"
    path.write_text(json.dumps([{"input": "q", "output_1": "a", "output_2": "b", "label": 3}]), encoding="utf-8")
    with pytest.raises(RmauditInputError, match=r"bar\.json: row 1: field 'label': expected 1 or 2, got 3"):
        load_pairs(path)


def test_forcing_an_adapter_on_the_wrong_file_names_the_missing_field(tmp_path: Path):
    path = tmp_path / "plain.jsonl"
    path.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n", encoding="utf-8")
    with pytest.raises(RmauditInputError, match=r"plain\.jsonl: row 1: field 'input': missing"):
        load_pairs(path, adapter="llmbar")
    with pytest.raises(RmauditInputError, match="unknown adapter 'nope'"):
        load_pairs(path, adapter="nope")
