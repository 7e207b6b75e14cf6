"""Preference data: read any supported file into `PreferencePair`s and split it by prompt."""

from __future__ import annotations

from rmaudit.data.builtin import builtin_demo_pairs, builtin_demo_path
from rmaudit.data.formats import read_rows
from rmaudit.data.hh import join_hh_transcript, split_hh_transcript
from rmaudit.data.loader import LoadedPairs, load_pairs, read_pairs
from rmaudit.data.pairs import Message, PreferencePair
from rmaudit.data.shapes import ColumnMap
from rmaudit.data.split import normalize_prompt, prompt_hash, split_by_prompt, split_position

__all__ = [
    "ColumnMap",
    "LoadedPairs",
    "Message",
    "PreferencePair",
    "builtin_demo_pairs",
    "builtin_demo_path",
    "join_hh_transcript",
    "load_pairs",
    "normalize_prompt",
    "prompt_hash",
    "read_pairs",
    "read_rows",
    "split_by_prompt",
    "split_hh_transcript",
    "split_position",
]
