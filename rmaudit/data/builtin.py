"""The built-in demo preference set: the default data of `rmaudit train`.

About 80 short pairs written for rmaudit (not taken from any dataset) in a few categories
where the preferred answer is clear: correct vs subtly wrong arithmetic, direct answer vs
waffle, help vs needless refusal, correct vs wrong facts, following vs ignoring a format
instruction, correct vs buggy code, and admitting uncertainty vs inventing an answer. The
texts are short so that training SmolLM2-135M on them takes minutes on a laptop CPU.
"""

from __future__ import annotations

from pathlib import Path

from rmaudit.data.loader import load_pairs
from rmaudit.data.pairs import PreferencePair
from rmaudit.resources import probe_data_dir

DEMO_FILE = "demo_preferences.jsonl"


def builtin_demo_path() -> Path:
    """Path of the shipped demo JSONL file (explicit shape with a ``category`` column)."""
    return probe_data_dir() / DEMO_FILE


def builtin_demo_pairs() -> list[PreferencePair]:
    """The demo pairs, loaded through the ordinary loader."""
    return load_pairs(builtin_demo_path())
