"""The trainer and the probes meet: what `rmaudit train` writes, `rmaudit check` must read right.

A run with the head-bias ablation must be caught by `bias_term` (Llama's sequence
classifier drops `score.bias` on load, so served rewards differ from trained ones); the
same run without it must pass. Both audits take their eval/train split from the manifest.
"""

from __future__ import annotations

import json

import pytest

from helpers_train import small_pairs, tiny_base_dir, write_pairs
from rmaudit.cli import main


def _train(tmp_path, name: str, *extra: str):
    data = write_pairs(tmp_path / "pairs.jsonl", small_pairs(40))
    out = tmp_path / name
    code = main(["train", "--base", str(tiny_base_dir()), "--data", str(data), "--out", str(out),
                 "--max-steps", "3", "--batch-size", "4", "--eval-fraction", "0.25", "--dtype", "float32",
                 "--no-progress", *extra])
    assert code == 0
    return out


def _audit(tmp_path, ckpt):
    report = tmp_path / f"{ckpt.name}-report"
    code = main(["check", str(ckpt), "--probes", "bias_term,prompt_leakage", "--out", str(report), "--no-progress"])
    data = json.loads((report / "report.json").read_text())
    return code, {p["name"]: p for p in data["probes"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-then-audit")
    return _train(root, "with-bias", "--head-bias"), _train(root, "no-bias"), root


def test_head_bias_ablation_is_caught_by_bias_term(runs):
    with_bias, _, root = runs
    manifest = json.loads((with_bias / "rmaudit.json").read_text())
    code, probes = _audit(root, with_bias)
    assert code == 1
    bias = probes["bias_term"]
    assert bias["status"] == "fail"
    assert "score.bias" in bias["summary"]
    assert manifest["head"]["at_init"]["bias"] != 0.0


def test_plain_run_passes_bias_term_and_has_no_leaks_across_its_own_split(runs):
    _, no_bias, root = runs
    code, probes = _audit(root, no_bias)
    assert probes["bias_term"]["status"] == "pass", probes["bias_term"]["summary"]
    leakage = probes["prompt_leakage"]
    assert leakage["status"] == "pass", leakage["summary"]
    assert leakage["metrics"]["eval_pairs"] > 0 and leakage["metrics"]["train_pairs"] > 0
    assert code == 0
