"""The audit's compact score cache (rmaudit/score_cache.py): lookups, dedupe, merging."""

import numpy as np
import pytest

from rmaudit.score_cache import ScoreCache, text_keys


def test_keys_are_stable_and_the_salt_separates_readouts():
    texts = ["a", "b", "a", "é\ud800"]  # a lone surrogate from a broken dataset row still hashes
    keys = text_keys(texts, b"mask")
    assert keys.dtype == np.uint64 and keys[0] == keys[2] and len(set(keys.tolist())) == 3
    assert not set(text_keys(texts, b"last-token").tolist()) & set(keys.tolist())


def test_rewards_come_back_in_input_order_across_many_chunked_updates():
    rng = np.random.default_rng(0)
    texts = [f"response {i}" for i in range(5000)]
    keys, rewards = text_keys(texts, b"mask"), rng.normal(size=5000)
    cache = ScoreCache()
    for start in rng.permutation(np.arange(0, 5000, 250)):  # chunks arrive in any order
        cache.update(keys[start:start + 250], rewards[start:start + 250])
    order = rng.permutation(5000)
    np.testing.assert_array_equal(cache.get(keys[order]), rewards[order])
    assert len(cache) == 5000 and np.all(np.diff(cache.keys.astype(np.float64)) >= 0)


def test_missing_gives_the_first_index_of_each_unscored_key_and_a_text_keeps_its_first_reward():
    keys = text_keys(["x", "y", "x", "z", "y"], b"mask")
    cache = ScoreCache()
    cache.update(keys[[3]], np.array([3.0]))
    assert cache.missing(keys).tolist() == [0, 1]
    cache.update(keys, np.array([1.0, 2.0, 9.0, 9.0, 9.0]))  # duplicates in one update and a cached key
    np.testing.assert_array_equal(cache.get(keys), [1.0, 2.0, 1.0, 3.0, 2.0])
    assert len(cache.missing(keys)) == 0


def test_an_unscored_text_is_an_error_not_a_silent_reward():
    cache = ScoreCache()
    cache.update(text_keys(["x"], b"mask"), np.array([1.0]))
    with pytest.raises(KeyError, match="1 texts were never scored"):
        cache.get(text_keys(["x", "never"], b"mask"))


def test_export_leaves_out_what_another_process_already_has():
    keys = text_keys(["p", "q", "r"], b"mask")
    cache = ScoreCache()
    cache.update(keys, np.array([1.0, 2.0, 3.0]))
    known, rewards = cache.export(exclude=keys[:1])
    assert sorted(known.tolist()) == sorted(keys[1:].tolist())
    merged = ScoreCache()
    merged.update(*cache.export())
    np.testing.assert_array_equal(merged.get(keys), [1.0, 2.0, 3.0])
