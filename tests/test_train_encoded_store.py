"""The trainer's token ids in a temporary file (rmaudit/train/encoded_store.py): what goes in
comes back, the batch widths without reading tokens, memory that does not grow with the
tokens, and the trainer's encoding in chunks equal to encoding at once."""

import tracemalloc

import numpy as np
import pytest

import rmaudit.train.encode as encode
from helpers_train import tiny_tokenizer
from rmaudit.data import PreferencePair, read_pairs, split_by_prompt
from rmaudit.data.store import PairStore
from rmaudit.train.batching import EncodedPair, LengthGroupedBatchSampler, PairDataset, collate_pairs
from rmaudit.train.encoded_store import EncodedPairStore, pair_lengths
from scratch import full_temporary_folder


def _encoded(i: int) -> EncodedPair:
    shared = [1, 50, 60 + i % 7]  # a prompt both sides start with
    return EncodedPair(shared + list(range(1000 + i, 1000 + i + 3 + i % 11)), shared + [70_000 + i] * (1 + i % 5),
                       margin=None if i % 3 else i / 7)


def test_every_pair_comes_back_equal_with_its_widths():
    pairs = [_encoded(i) for i in range(40)] + [EncodedPair([5], [5, 6], 0.1)]
    store = EncodedPairStore()
    for pair in pairs[:20]:
        store.append(pair)
    assert store[3] == pairs[3]  # a read between appends sees everything written so far
    for pair in pairs[20:]:
        store.append(pair)
    assert list(store) == pairs and len(store) == 41
    assert store[-1].margin == 0.1 and store[1].margin is None and store[0].margin == 0.0
    assert store[2:5] == pairs[2:5]
    with pytest.raises(IndexError):
        store[41]
    assert pair_lengths(store, packed=True) == pair_lengths(pairs, packed=True) == [p.packed_length for p in pairs]
    assert pair_lengths(store, packed=False) == [p.length for p in pairs]


def test_a_store_feeds_the_same_batches_as_a_list():
    pairs = [_encoded(i) for i in range(64)]
    store = EncodedPairStore()
    for pair in pairs:
        store.append(pair)
    sampler = LengthGroupedBatchSampler(pair_lengths(store, packed=True), 8, seed=3)
    for batch in sampler.epoch_batches()[:3]:
        from_store = collate_pairs([PairDataset(store)[i] for i in batch], pad_token_id=0)
        from_list = collate_pairs([pairs[i] for i in batch], pad_token_id=0)
        assert all(np.array_equal(from_store[k], from_list[k]) for k in from_list)


def test_a_store_holds_lengths_not_tokens():
    pairs = [EncodedPair(list(range(300, 700)), list(range(300, 650)), 1.0) for _ in range(2000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store = EncodedPairStore()
        for pair in pairs:
            store.append(pair)
        assert store[1999] == pairs[0]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # 28 bytes of per-pair arrays plus the file object's buffer; 750 tokens as lists are ~27 KB
    assert held / len(store) < 64, f"{held / len(store):.0f} bytes a pair"


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def _pairs(n: int) -> list[PreferencePair]:
    return [PreferencePair([{"role": "user", "content": f"question {i} " + "more words " * (i % 9) * 20}],
                           f"answer {i}", "no " * (i % 13) * 10, margin=None if i % 2 else float(i), row=i + 1)
            for i in range(n)]


def test_encoding_in_chunks_equals_encoding_at_once(tokenizer, monkeypatch):
    pairs = _pairs(23)
    at_once, report_at_once = encode.encode_pairs(tokenizer, pairs, max_length=96, policy="truncate")
    monkeypatch.setattr(encode, "ENCODE_CHUNK", 5)
    chunked, report = encode.encode_pairs(tokenizer, PairStore(pairs), max_length=96, policy="truncate")
    assert list(chunked) == list(at_once) and report.as_dict() == report_at_once.as_dict()
    assert report.dropped and report.truncated and report.kept == len(chunked)  # every branch, across chunks


def test_a_stored_file_splits_into_views_with_the_lists_split(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(f'{{"prompt": "q{i % 17}", "chosen": "a{i}", "rejected": "b{i}"}}\n' for i in range(200)))
    as_list = split_by_prompt(read_pairs(path).pairs, 0.3)
    as_views = split_by_prompt(read_pairs(path, store=True).pairs, 0.3)
    assert all(isinstance(side, PairStore) for side in as_views)
    assert [list(side) for side in as_views] == [list(side) for side in as_list]
    assert 0 < len(as_views[1]) < 200


@pytest.mark.parametrize("pairs", [3, 5000], ids=["fails-on-the-first-read", "fails-while-appending"])
def test_a_full_temporary_folder_names_the_folder_and_tmpdir(tmp_path, monkeypatch, pairs):
    full_temporary_folder(monkeypatch, tmp_path)
    store = EncodedPairStore()
    with pytest.raises(OSError) as caught:  # a few pairs sit in the write buffer until the first read
        for i in range(pairs):
            store.append(_encoded(i))
        store[0]
    assert caught.value.filename == str(tmp_path)
    assert "No space left on device while writing rmaudit's temporary token store" in caught.value.strerror
    assert "set TMPDIR" in caught.value.strerror
