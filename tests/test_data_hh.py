"""The hh-rlhf transcript splitter, on real harmless-base rows and on hand-made edge cases."""

from __future__ import annotations

import gzip
import json
import re

import pytest

from helpers_data import HH_FILE, needs
from rmaudit.data import join_hh_transcript, load_pairs, prompt_hash, split_hh_transcript

MARKER = re.compile(r"(?:^|\n\n)(?:Human|Assistant):")


def _real_transcripts() -> list[str]:
    with gzip.open(HH_FILE, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return [row[field] for row in rows for field in ("chosen", "rejected")]


def _words(text: str) -> list[str]:
    """The transcript's words with turn markers removed: what a lossless split must keep."""
    return MARKER.sub(" ", text).split()


@needs(HH_FILE)
def test_real_transcripts_split_into_alternating_turns_without_losing_text():
    transcripts = _real_transcripts()
    exact = 0
    for text in transcripts:
        prompt, response = split_hh_transcript(text)
        roles = [m["role"] for m in prompt]
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"] * (len(roles) % 2)
        assert roles[-1] == "user"
        # (a response may start with "Human:": some real assistant turns impersonate the user)
        assert not response.startswith("Assistant:") and response == response.strip()
        rejoined = join_hh_transcript(prompt, response)
        assert _words(rejoined) == _words(text)
        assert split_hh_transcript(rejoined) == (prompt, response)
        exact += rejoined == text
    # Only whitespace at turn edges and the 13 doubled "Assistant:" markers are normalised.
    assert exact > 0.98 * len(transcripts)


@needs(HH_FILE)
def test_real_multi_turn_row_splits_at_the_last_assistant_turn():
    text = _real_transcripts()[0]  # row 1, chosen: three Human turns
    prompt, response = split_hh_transcript(text)
    assert [m["role"] for m in prompt] == ["user", "assistant", "user", "assistant", "user"]
    assert prompt[0]["content"] == "what are some pranks with a pen i can do?"
    assert prompt[-1]["content"] == "okay some of these do not have anything to do with pens"
    assert text.endswith(response) and "\n\nAssistant: " + response in text
    assert join_hh_transcript(prompt, response) == text


@needs(HH_FILE)
def test_real_file_loads_every_pair_with_a_shared_prompt():
    pairs = load_pairs(HH_FILE)
    assert len(pairs) == 2312
    assert len({prompt_hash(p.prompt) for p in pairs}) == 2310
    assert all(p.chosen_messages()[:-1] == p.rejected_messages()[:-1] for p in pairs)


def test_doubled_assistant_marker_is_merged_into_one_turn():
    text = "\n\nHuman: Tell me a joke.\n\nAssistant: Here is one:\n\nAssistant:  Why did the chicken cross the road?"
    prompt, response = split_hh_transcript(text)
    assert prompt == [{"role": "user", "content": "Tell me a joke."}]
    assert response == "Here is one:\nWhy did the chicken cross the road?"


def test_marker_inside_a_sentence_is_content():
    prompt, response = split_hh_transcript("\n\nHuman: Reply with 'Human: hi'.\n\nAssistant: Human: hi")
    assert prompt == [{"role": "user", "content": "Reply with 'Human: hi'."}]
    assert response == "Human: hi"


def test_transcript_without_leading_blank_line_is_accepted():
    assert split_hh_transcript("Human: 2+2?\n\nAssistant: 4") == ([{"role": "user", "content": "2+2?"}], "4")


@pytest.mark.parametrize("text, problem", [
    ("\n\nHuman: hello?", "does not end with an 'Assistant:' turn"),
    ("Preamble\n\nHuman: hi\n\nAssistant: yo", "text before the first"),
    ("just text", "text before the first"),
])
def test_malformed_transcripts_raise(text, problem):
    with pytest.raises(ValueError, match=problem):
        split_hh_transcript(text)
