"""Property-based tests (hypothesis) of the code that reads untrusted text: the file parsers,
the hh-rlhf splitter, the chat-template renderer and the prompt normaliser. Each either
returns what was written or raises the one-line input error; nothing else escapes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rmaudit.data import load_pairs, prompt_hash
from rmaudit.data.hh import join_hh_transcript, split_hh_transcript
from rmaudit.data.split import normalize_prompt
from rmaudit.errors import RmauditInputError
from scratch import scratch_dir

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Any text a dataset might hold, control characters and bidi overrides included (no NUL or lone
# surrogates: JSON and CSV files cannot carry those as text).
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=40)
NON_BLANK = TEXT.filter(lambda t: t.strip() != "")


def _write(rows: list[dict], suffix: str) -> Path:
    path = scratch_dir() / f"data{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    else:
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["prompt", "chosen", "rejected"])
            writer.writeheader()
            writer.writerows(rows)
    return path


@SETTINGS
@given(rows=st.lists(st.fixed_dictionaries({"prompt": NON_BLANK, "chosen": NON_BLANK, "rejected": NON_BLANK}),
                     min_size=1, max_size=5),
       suffix=st.sampled_from([".jsonl", ".json", ".csv"]))
def test_explicit_rows_round_trip_through_every_text_format(rows, suffix):
    # A prompt that happens to read as an hh transcript is split into turns by design.
    rows = [r for r in rows if "Human:" not in r["prompt"]] or [{"prompt": "p", "chosen": "a", "rejected": "b"}]
    try:
        pairs = load_pairs(_write(rows, suffix))
    except RmauditInputError:
        return  # e.g. a prompt cell that happens to be a JSON message list with a bad role
    assert [(p.prompt[-1]["content"], p.chosen, p.rejected) for p in pairs] == \
        [(r["prompt"], r["chosen"], r["rejected"]) for r in rows]


@SETTINGS
@given(raw=st.binary(max_size=300), suffix=st.sampled_from([".jsonl", ".json", ".csv", ".tsv", ".jsonl.gz"]))
def test_arbitrary_bytes_give_pairs_or_a_one_line_input_error(raw, suffix):
    path = scratch_dir() / f"data{suffix}"
    path.write_bytes(raw)
    try:
        load_pairs(path)
    except RmauditInputError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)


MESSAGE_TEXT = TEXT.map(str.strip).filter(lambda t: t and "Human:" not in t and "Assistant:" not in t)


@SETTINGS
@given(turns=st.lists(MESSAGE_TEXT, min_size=1, max_size=4), response=MESSAGE_TEXT)
def test_hh_transcripts_split_back_into_what_was_joined(turns, response):
    prompt = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    if prompt[-1]["role"] != "user":
        prompt.append({"role": "user", "content": "and?"})
    assert split_hh_transcript(join_hh_transcript(prompt, response)) == (prompt, response)


@SETTINGS
@given(turns=st.lists(TEXT, min_size=1, max_size=4))
def test_the_template_renderer_shows_every_message_or_refuses_in_one_line(turns):
    from tiny_models import tiny_tokenizer
    from rmaudit.scoring import render

    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    text = render(tiny_tokenizer(), messages)
    for message in messages:
        assert message["content"].strip() in text


@SETTINGS
@given(words=st.lists(st.text(st.characters(categories=("Lu", "Ll", "Nd")), min_size=1, max_size=8), min_size=1, max_size=6),
       separators=st.lists(st.sampled_from([" ", "  ", "\n", "\t", " \n "]), min_size=6, max_size=6))
@example(words=["\u1fd2"], separators=[" "] * 6)  # 'ῒ': case folding leaves it decomposed (found by CI, 0.5.3)
def test_prompt_hash_ignores_case_and_whitespace(words, separators):
    plain = " ".join(words)
    spaced = "".join(w + s for w, s in zip(words, separators)).strip()
    assert prompt_hash([{"role": "user", "content": plain}]) == prompt_hash([{"role": "user", "content": spaced.upper()}]) \
        or plain.upper().casefold() != plain.casefold()  # a few letters (e.g. 'ß') change under upper-then-fold
    normal = normalize_prompt([{"role": "user", "content": spaced}])
    assert normalize_prompt([{"role": "user", "content": normal.split(": ", 1)[1]}]) == normal
