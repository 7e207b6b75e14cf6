"""The prompt split: deterministic across processes, prompt-grouped, fraction respected."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from helpers_data import HH_FILE, needs
from rmaudit.data import PreferencePair, builtin_demo_path, load_pairs, prompt_hash, split_by_prompt

REPO = Path(__file__).resolve().parents[1]


def _pair(*contents: str, role: str = "user") -> PreferencePair:
    return PreferencePair(prompt=[{"role": role, "content": c} for c in contents], chosen="a", rejected="b")


def test_prompt_hash_is_sha256_of_the_documented_normal_form():
    prompt = [{"role": "User", "content": "  Ｗhat is\n\t2+2?  "}, {"role": "assistant", "content": "Four."}]
    expected = hashlib.sha256(b"user: what is 2+2?\nassistant: four.").hexdigest()
    assert prompt_hash(prompt) == expected


def test_whitespace_case_and_nfkc_variants_share_a_hash_and_a_side():
    variants = [_pair("What is 2+2?"), _pair("what  is\n2+2?"), _pair(" WHAT IS 2＋2? "), _pair("What is 2+2?\u00a0")]
    assert len({prompt_hash(p.prompt) for p in variants}) == 1
    others = [_pair(f"question number {i}") for i in range(200)]
    for fraction in (0.1, 0.5, 0.9):
        train, evaluation = split_by_prompt(variants + others, fraction)
        assert all(v in evaluation for v in variants) or all(v in train for v in variants)


def test_roles_and_message_boundaries_matter():
    assert prompt_hash(_pair("hi").prompt) != prompt_hash(_pair("hi", role="system").prompt)
    assert prompt_hash(_pair("a b").prompt) != prompt_hash(_pair("a", "b").prompt)


def test_fraction_bounds_salt_and_order():
    pairs = [_pair(f"prompt {i}") for i in range(300)]
    assert split_by_prompt(pairs, 0.0) == (pairs, [])
    assert split_by_prompt(pairs, 1.0) == ([], pairs)
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_by_prompt(pairs, 1.5)
    train, evaluation = split_by_prompt(pairs, 0.3)
    assert train == [p for p in pairs if p in train] and evaluation == [p for p in pairs if p in evaluation]
    salted = split_by_prompt(pairs, 0.3, salt="seed-1")
    assert salted == split_by_prompt(pairs, 0.3, salt="seed-1") and salted[1] != evaluation


_CHILD = """
import json, sys
from rmaudit.data import load_pairs, prompt_hash, split_by_prompt
train, evaluation = split_by_prompt(load_pairs(sys.argv[1]), 0.25, salt=sys.argv[2])
print(json.dumps([[p.row for p in evaluation], [prompt_hash(p.prompt) for p in evaluation]]))
"""


def _split_in_subprocess(path: Path, salt: str, hash_seed: str) -> list:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", _CHILD, str(path), salt], env=env, cwd=REPO,
                          capture_output=True, text=True, check=True, timeout=120)
    return json.loads(done.stdout)


@pytest.mark.parametrize("salt", ["", "run-7"])
def test_split_is_identical_in_separate_processes(salt: str):
    path = HH_FILE if HH_FILE.exists() else builtin_demo_path()
    first = _split_in_subprocess(path, salt, hash_seed="1")
    second = _split_in_subprocess(path, salt, hash_seed="2")
    _, evaluation = split_by_prompt(load_pairs(path), 0.25, salt=salt)
    assert first == second == [[p.row for p in evaluation], [prompt_hash(p.prompt) for p in evaluation]]
    assert first[0]  # a non-empty eval side, so the comparison means something


@needs(HH_FILE)
@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5])
def test_eval_fraction_respected_on_hh_prompts(fraction: float):
    pairs = load_pairs(HH_FILE)
    train, evaluation = split_by_prompt(pairs, fraction)
    train_prompts = {prompt_hash(p.prompt) for p in train}
    eval_prompts = {prompt_hash(p.prompt) for p in evaluation}
    assert not train_prompts & eval_prompts
    unique = len(train_prompts | eval_prompts)
    assert unique == 2310
    spread = 4 * (unique * fraction * (1 - fraction)) ** 0.5  # 4 binomial standard deviations
    assert abs(len(eval_prompts) - fraction * unique) < spread


@needs(HH_FILE)
def test_real_pairs_sharing_a_prompt_land_on_one_side():
    pairs = load_pairs(HH_FILE)
    by_prompt = defaultdict(list)
    for pair in pairs:
        by_prompt[prompt_hash(pair.prompt)].append(pair)
    shared = [group for group in by_prompt.values() if len(group) > 1]
    assert shared  # hh-rlhf harmless test has 2 prompts asked twice
    _, evaluation = split_by_prompt(pairs, 0.5)
    eval_ids = {id(p) for p in evaluation}
    for group in shared:
        assert len({id(p) in eval_ids for p in group}) == 1
