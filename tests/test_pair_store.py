"""Pairs kept in a temporary file (rmaudit/data/store.py): what goes in comes back, views,
and memory that does not grow with the pairs; the audit reads its --data through one."""

import dataclasses
import json
import tracemalloc

import numpy as np
import pytest

from rmaudit.data import PreferencePair, read_pairs
from rmaudit.data.store import PairChain, PairStore, column, first_of_each, head, keep_where, subset


def _pair(i: int, **extra) -> PreferencePair:
    return PreferencePair(prompt=[{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": f"question {i}\nwith a second line"}],
                          chosen=f"answer {i} é ✓", rejected=f"no {i}", source="data/eval.jsonl", row=i + 1, **extra)


def test_every_field_comes_back_equal_and_in_order():
    pairs = [_pair(0, margin=1.5, category="maths", meta={"annotator": "a1", "score": 3, "ok": True, "x": None}),
             _pair(1, meta={"n": np.int64(7), "f": np.float32(0.5)}),  # a parquet column's numpy scalars
             PreferencePair([{"role": "user", "content": "é\ud800"}], "c\n\"q\"", "r", source="other.csv", row=9),
             _pair(3, margin=float("nan"))]
    store = PairStore(pairs)
    back = list(store)
    assert back[:3] == [pairs[0], _pair(1, meta={"n": 7, "f": 0.5}), pairs[2]]
    assert np.isnan(back[3].margin) and back[3].chosen == pairs[3].chosen
    assert [store[i] for i in (-1, 0, 2)] == [back[3], back[0], back[2]] and len(store) == 4
    assert store[2].source == "other.csv" and store[0].source == "data/eval.jsonl"
    with pytest.raises(IndexError):
        store[4]


def test_views_index_the_same_file_and_are_read_only():
    store = PairStore(_pair(i) for i in range(50))
    evens = store.subset(range(0, 50, 2))
    assert [p.row for p in evens] == list(range(1, 51, 2))
    assert [p.row for p in evens[3:6]] == [7, 9, 11] and isinstance(evens[3:6], PairStore)
    assert [p.row for p in evens.subset([4, 0])] == [9, 1]  # a view of a view, in the order asked
    assert [p.row for p in keep_where(evens, lambda p: p.row % 4 == 1)] == list(range(1, 51, 4))
    store.append(_pair(50))  # the root may still grow; a view may not
    assert store[50].row == 51 and len(evens) == 25
    with pytest.raises(TypeError, match="read-only"):
        evens.append(_pair(0))
    with pytest.raises(IndexError):
        store.subset([51])


def test_chains_and_helpers_accept_stores_and_lists_alike():
    store, battery = PairStore(_pair(i) for i in range(5)), [_pair(100), _pair(101)]
    chain = PairChain(store, [], battery)
    assert len(chain) == 7 and [p.row for p in chain] == [1, 2, 3, 4, 5, 101, 102]
    assert chain[5].row == 101 and chain[-1].row == 102 and [p.row for p in chain[4:6]] == [5, 101]
    assert [p.row for p in head(chain, 3)] == [1, 2, 3] and head(chain, 0) == []
    assert [p.row for p in subset(battery, [1])] == [102]
    twice = PairStore([_pair(0), _pair(1), _pair(0), _pair(2, meta={"a": 1}), _pair(1)])
    assert first_of_each(twice, lambda p: (p.chosen, p.rejected)) == [0, 1, 3]
    assert first_of_each(twice, lambda p: None if p.row == 1 else p.chosen) == [1, 3]


def test_a_store_holds_offsets_not_pairs():
    pairs = [_pair(i) for i in range(4000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store = PairStore(pairs)
        assert len(list(store)) == 4000  # reading every pair back keeps none of them
        held = tracemalloc.get_traced_memory()[0] - before
        as_list = [store[i] for i in range(0, 4000, 10)]  # 400 pairs held as objects, for scale
        per_pair_object = (tracemalloc.get_traced_memory()[0] - before - held) / len(as_list)
    finally:
        tracemalloc.stop()
    assert held / len(store) < 64, f"{held / len(store):.0f} bytes a pair"  # 8 of offset, plus buffers
    assert per_pair_object > 10 * held / len(store)


def test_the_loader_streams_a_file_into_a_store_with_the_list_loaders_pairs(tmp_path):
    path = tmp_path / "eval.jsonl"
    rows = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}", "margin": i / 2, "id": i}
            for i in range(30)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    stored = read_pairs(path, store=True).pairs
    assert isinstance(stored, PairStore) and list(stored) == read_pairs(path).pairs


def test_duplicates_and_the_sample_are_views_of_the_store():
    from rmaudit.inputs import drop_duplicate_pairs, sample_pairs

    store = PairStore([_pair(0), _pair(1), dataclasses.replace(_pair(0), row=99), _pair(2)])
    notes: dict = {}
    kept = drop_duplicate_pairs(store, "eval", notes)  # the same content from another row: the first stays
    assert isinstance(kept, PairStore) and [p.row for p in kept] == [1, 2, 3]
    assert notes["eval_duplicate_pairs_dropped"] == 1
    sample = sample_pairs(kept, 2, seed=0)
    assert isinstance(sample, PairStore) and len(sample) == 2 and all(p in list(kept) for p in sample)


def test_a_column_is_read_once_per_store_and_its_views_inherit_it():
    calls = []

    def row_of(pair):
        calls.append(pair.row)
        return pair.row

    store = PairStore(_pair(i) for i in range(10))
    assert column(store, "row", row_of, np.int64).tolist() == list(range(1, 11)) and len(calls) == 10
    view = keep_where(store, lambda p: p.row % 2 == 0)
    assert column(view, "row", row_of, np.int64).tolist() == [2, 4, 6, 8, 10] and len(calls) == 10
    chain = PairChain(view, [_pair(20)])  # a list part is computed each time: it may be edited
    assert column(chain, "row", row_of, np.int64).tolist() == [2, 4, 6, 8, 10, 21] and len(calls) == 11
    store.append(_pair(10))  # the root grew: its column is computed again
    assert column(store, "row", row_of, np.int64)[-1] == 11 and len(calls) == 22
