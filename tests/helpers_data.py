"""Paths and skip markers shared by the tests/test_data_*.py files."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HH_FILE = SHARED_DATA / "hh-rlhf-harmless-base-test.jsonl.gz"
LLMBAR_DIR = SHARED_DATA / "llmbar"
PANDALM_FILE = SHARED_DATA / "pandalm" / "testset-v1.json"


def needs(path: Path):
    """Skip a test when a piece of ../shared/data is absent (a user's fresh clone has none)."""
    return pytest.mark.skipif(not path.exists(), reason=f"real data not found at {path} (../shared is absent)")
