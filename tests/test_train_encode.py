"""Over-length policy on SmolLM2's real tokenizer and chat template: drop, or truncate the prompt."""

from __future__ import annotations

import pytest

from helpers_train import tiny_tokenizer
from rmaudit.data.pairs import PreferencePair
from rmaudit.scoring import render, tokenize_rendered
from rmaudit.train.encode import encode_pairs


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def _pairs() -> list[PreferencePair]:
    long_prompt = "Please summarise the following notes. " + "The meeting ran long and covered budgets. " * 40
    return [
        PreferencePair([{"role": "user", "content": "What is 2 + 2?"}], "4.", "5.", row=1),
        PreferencePair([{"role": "user", "content": long_prompt}], "Budgets were discussed at length.",
                       "No idea.", margin=1.0, row=2),
        PreferencePair([{"role": "user", "content": "Hi"}], "word " * 400, "Hello!", row=3),
    ]


def _ids(tokenizer, messages):
    (ids,), _ = tokenize_rendered(tokenizer, [render(tokenizer, messages)])
    return ids


def test_drop_policy_leaves_out_and_counts_over_length_pairs(tokenizer):
    encoded, report = encode_pairs(tokenizer, _pairs(), max_length=128, policy="drop")
    assert (report.total, report.kept, report.truncated, report.dropped) == (3, 1, 0, 2)
    assert report.dropped_rows == [2, 3]
    assert encoded[0].chosen_ids == _ids(tokenizer, _pairs()[0].chosen_messages())


def test_truncate_cuts_the_prompt_from_the_left_and_keeps_the_whole_response(tokenizer):
    pairs = _pairs()
    encoded, report = encode_pairs(tokenizer, pairs, max_length=128, policy="truncate")
    # Pair 3's response alone is longer than 128 tokens: it cannot be kept without cutting the response.
    assert (report.kept, report.truncated, report.dropped, report.dropped_rows) == (2, 1, 1, [3])
    long = encoded[1]
    assert long.margin == 1.0
    for ids, messages in ((long.chosen_ids, pairs[1].chosen_messages()),
                          (long.rejected_ids, pairs[1].rejected_messages())):
        full = _ids(tokenizer, messages)
        assert len(ids) == 128 < len(full)
        assert ids[0] == tokenizer.bos_token_id  # the leading special token survives
        assert ids[1:] == full[len(full) - 127:]  # everything else is the END of the conversation
        # ...which contains the whole final turn, its end-of-turn token included.
        assert tokenizer.decode(ids).endswith(messages[-1]["content"] + "<|im_end|>\n")


def test_pairs_within_the_limit_are_untouched(tokenizer):
    encoded, report = encode_pairs(tokenizer, _pairs()[:1], max_length=4096, policy="truncate")
    assert (report.kept, report.truncated, report.dropped) == (1, 0, 0)
    assert encoded[0].rejected_ids == _ids(tokenizer, _pairs()[0].rejected_messages())
