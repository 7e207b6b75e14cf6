"""policy_rollouts: samples read from --rollouts-file (any policy) and sampled from a real tiny
causal LM; planted: a length-rewarding RM on samples of varied length, a mode-collapsed policy
(no within-prompt signal); healthy twins pass. The files it writes read back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers_audit import save_rm
from helpers_probe import run_configured
from helpers_probe_heads import fitted_rm, synthetic_pairs
from helpers_rollouts import write_rollouts
from helpers_train import tiny_base_dir
from rmaudit.cli import main
from rmaudit.probes.context import AuditContext
from rmaudit.probes.policy_rollouts import PolicyRollouts, repetition
from rmaudit.report.charts import validate_chart
from rmaudit.results import Status
from rmaudit.rollouts import read_rollouts


@pytest.fixture(scope="module")
def content_rm():
    return fitted_rm("content")


@pytest.fixture(scope="module")
def length_rm():
    return fitted_rm("length")


def _run(rm, rollouts_file, **overrides):
    model, tokenizer = rm
    ctx = AuditContext(checkpoint=None, model=model, tokenizer=tokenizer, pooling="mask", rollouts_file=rollouts_file)
    return run_configured(PolicyRollouts, ctx, **overrides)


def _finding(result, metric):
    return next(f for f in result.findings if f.metric == metric)


def test_a_content_rm_on_varied_samples_passes_and_writes_normalisation(content_rm, tmp_path):
    result = _run(content_rm, write_rollouts(tmp_path / "r.jsonl", style="mixed"))
    assert result.status is Status.PASS, result.summary
    m = result.metrics
    assert m["n_samples"] == 64 and m["n_prompts"] == 16 and m["within_prompt_share"] > 0.5
    assert m["within_prompt_length_r2"] < 0.1
    normalization = json.loads(result.files["reward_normalization.json"])
    assert normalization["mean"] == m["reward_mean"] and normalization["std"] == m["reward_std"]
    assert normalization["settings"]["openrlhf"]["config.json"] == {"mean": m["reward_mean"], "std": m["reward_std"]}
    assert any("--normalize_reward" in f.message for f in result.findings)
    assert not validate_chart(result.chart)


def test_a_length_rm_fails_on_within_prompt_length_and_best_of_n_drifts_longer(length_rm, tmp_path):
    result = _run(length_rm, write_rollouts(tmp_path / "r.jsonl", style="neutral"))
    r2 = _finding(result, "within_prompt_length_r2")
    assert result.status is Status.FAIL and r2.status is Status.FAIL, result.summary
    assert result.metrics["length_slope_ci_low"] > 0 and "per 100 tokens" in r2.message
    bon = _finding(result, "bon_length_ratio")
    assert bon.status is Status.WARN and "longer answers" in bon.message
    favourite = result.evidence[0]
    assert favourite["tokens_favourite"] > favourite["tokens_median"]


def test_a_collapsed_policy_gives_no_within_prompt_signal(content_rm, tmp_path):
    result = _run(content_rm, write_rollouts(tmp_path / "r.jsonl", collapsed=True))
    finding = _finding(result, "within_prompt_share")
    assert finding.status is Status.FAIL and finding.value == 0.0
    healthy = _run(content_rm, write_rollouts(tmp_path / "h.jsonl"))
    assert _finding(healthy, "within_prompt_share").status is Status.PASS


def test_repetition_counts_repeated_trigrams():
    assert repetition("a b c d e f") == 0.0
    assert repetition("go on go on go on go on") == pytest.approx(1 - 2 / 6)


def test_sampling_a_real_policy_through_check_writes_rollouts_that_read_back(content_rm, tmp_path, capsys):
    """A real (tiny, random) causal LM as --policy: seeded sampling, rollouts.jsonl and
    reward_normalization.json beside the report, a rerun into the same --out (its earlier report
    folder, samples included), and --rollouts-file reproducing the rewards."""
    checkpoint = save_rm(*content_rm, tmp_path / "rm")
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": p.prompt_text(), "chosen": p.chosen, "rejected": p.rejected}) + "\n"
                            for p in synthetic_pairs(seed=5, n=10, rule="content")))
    common = ["--no-progress", "--probes", "policy_rollouts", "--data", str(data), "--rollout-prompts", "5",
              "--rollouts", "3", "--max-new-tokens", "12"]
    main(["check", str(checkpoint), *common, "--policy", str(tiny_base_dir()), "--out", str(tmp_path / "a"),
          "--json", str(tmp_path / "a.json")])
    printed = capsys.readouterr().out
    assert "--normalize_reward" in printed and "wrote " in printed and "rollouts.jsonl" in printed
    main(["check", str(checkpoint), *common, "--policy", str(tiny_base_dir()), "--out", str(tmp_path / "b")])
    capsys.readouterr()
    samples = read_rollouts(tmp_path / "a" / "rollouts.jsonl")
    assert len(samples) == 15 and len({s.prompt_id for s in samples}) == 5
    assert (tmp_path / "a" / "rollouts.jsonl").read_text() == (tmp_path / "b" / "rollouts.jsonl").read_text()  # seeded
    again = main(["check", str(checkpoint), *common, "--policy", str(tiny_base_dir()), "--out", str(tmp_path / "b")])
    assert again == 0 and (tmp_path / "b" / "rollouts.jsonl").read_text() == (tmp_path / "a" / "rollouts.jsonl").read_text()
    assert all(s.n_new_tokens <= 12 for s in samples)
    first = json.loads((tmp_path / "a.json").read_text())
    probe = next(p for p in first["probes"] if p["name"] == "policy_rollouts")
    assert probe["files"] == ["reward_normalization.json", "rollouts.jsonl"]
    assert probe["metrics"]["rollouts_source"].startswith("sampled from --policy")
    main(["check", str(checkpoint), "--no-progress", "--probes", "policy_rollouts", "--rollouts-file",
          str(tmp_path / "a" / "rollouts.jsonl"), "--out", str(tmp_path / "c"), "--json", str(tmp_path / "c.json")])
    again = next(p for p in json.loads((tmp_path / "c.json").read_text())["probes"] if p["name"] == "policy_rollouts")
    assert again["metrics"]["reward_mean"] == pytest.approx(probe["metrics"]["reward_mean"], abs=1e-6)
    assert np.isclose(again["metrics"]["reward_std"], probe["metrics"]["reward_std"], atol=1e-6)


def test_a_bad_rollouts_file_is_exit_2_naming_the_line(content_rm, tmp_path, capsys):
    checkpoint = save_rm(*content_rm, tmp_path / "rm")
    bad = tmp_path / "r.jsonl"
    bad.write_text(json.dumps({"prompt": "hi", "response": "yo"}) + "\n" + json.dumps({"prompt": "hi"}) + "\n")
    code = main(["check", str(checkpoint), "--no-progress", "--probes", "policy_rollouts", "--rollouts-file", str(bad),
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "r.jsonl" in err and "row 2" in err and "'response'" in err and "missing" in err


def test_without_a_policy_the_probe_skips_naming_both_flags(content_rm):
    model, tokenizer = content_rm
    ctx = AuditContext(checkpoint=None, model=model, tokenizer=tokenizer, pooling="mask")
    result = run_configured(PolicyRollouts, ctx)
    assert result.status is Status.SKIP and "--policy" in result.summary and "--rollouts-file" in result.summary


@pytest.mark.slow
def test_the_builtin_smollm2_policy_samples_real_answers(content_rm, tmp_path):
    """--policy builtin: the real SmolLM2-135M-Instruct, its ChatML template, seeded samples."""
    from tiny_models import require_smollm2

    require_smollm2()
    model, tokenizer = content_rm
    pairs = synthetic_pairs(seed=5, n=3, rule="content")
    pairs[0].prompt = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    ctx = AuditContext(checkpoint=None, model=model, tokenizer=tokenizer, pooling="mask", eval_pairs=pairs,
                       policy="builtin", rollouts=2, rollout_prompts=3, max_new_tokens=16)
    result = run_configured(PolicyRollouts, ctx)
    assert result.status in (Status.PASS, Status.WARN, Status.FAIL), result.summary
    samples = read_rollouts_text(result.files["rollouts.jsonl"], tmp_path)
    assert len(samples) == 6 and all(s.n_new_tokens <= 16 for s in samples)
    assert samples[0].prompt == pairs[0].prompt and samples[0].response != samples[1].response   # sampled, not greedy
    assert all(s.response.strip() and "<|im_start|>" not in s.response and "<|im_end|>" not in s.response for s in samples)
    assert ctx.notes["rollouts_dtype"] in ("float32", "bfloat16") and np.isfinite(result.metrics["reward_mean"])


def read_rollouts_text(text: str, tmp_path):
    path = tmp_path / "rollouts.jsonl"
    path.write_text(text)
    return read_rollouts(path)


def test_a_policy_folder_with_only_a_tokenizer_skips_rather_than_errors(content_rm, tmp_path):
    """--policy may name a tokenizer folder for chat_template; sampling needs weights."""
    model, tokenizer = content_rm
    tokenizer.save_pretrained(tmp_path / "tok")
    ctx = AuditContext(checkpoint=None, model=model, tokenizer=tokenizer, pooling="mask", policy=str(tmp_path / "tok"),
                       eval_pairs=synthetic_pairs(seed=5, n=3, rule="content"))
    result = run_configured(PolicyRollouts, ctx)
    assert result.status is Status.SKIP and "no model weights" in result.summary and "--rollouts-file" in result.summary
