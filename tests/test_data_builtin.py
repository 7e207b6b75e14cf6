"""The built-in demo set ships in probes/, loads through the normal loader and is correct."""

from __future__ import annotations

import re
from collections import Counter
from fractions import Fraction

import pytest

from rmaudit.data import builtin_demo_pairs, builtin_demo_path, prompt_hash
from rmaudit.resources import probe_data_dir

SIMPLE_SUM = re.compile(r"^What is ([-\d\s+*/.()]+)\?$")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")  # 12, 0.06, 7/8


def test_demo_file_ships_in_probe_data_and_loads():
    path = builtin_demo_path()
    assert path.parent == probe_data_dir() and path.is_file()
    pairs = builtin_demo_pairs()
    assert 60 <= len(pairs) <= 100
    assert all(p.source == str(path) and p.category for p in pairs)
    counts = Counter(p.category for p in pairs)
    assert {"arithmetic", "directness", "refusal"} <= set(counts) and len(counts) >= 5
    assert min(counts.values()) >= 5


def test_demo_pairs_are_distinct_and_short():
    pairs = builtin_demo_pairs()
    assert all(p.chosen.strip() and p.rejected.strip() and p.chosen != p.rejected for p in pairs)
    assert len({prompt_hash(p.prompt) for p in pairs}) == len(pairs)
    assert max(len(p.prompt_text()) + len(p.chosen) + len(p.rejected) for p in pairs) < 600


def _last_number(text: str) -> float:
    return float(Fraction(NUMBER.findall(text)[-1]))


def test_demo_arithmetic_chosen_is_right_and_rejected_is_wrong():
    checked = 0
    for pair in builtin_demo_pairs():
        match = SIMPLE_SUM.match(pair.prompt_text())
        if pair.category != "arithmetic" or not match:
            continue
        truth = eval(match.group(1), {"__builtins__": {}})  # our own file: digits and operators only
        assert _last_number(pair.chosen) == pytest.approx(truth), pair.prompt_text()
        assert _last_number(pair.rejected) != pytest.approx(truth), pair.prompt_text()
        checked += 1
    assert checked >= 6
