"""padding: a checkpoint whose config pad id disagrees with its tokenizer's fails; a consistent one passes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from helpers_probe import run_configured
from rmaudit.modeling.loading import load_reward_model
from rmaudit.probes.chat_template import known_templates
from rmaudit.probes.context import AuditContext
from rmaudit.probes.padding import ModeResult, PaddingProbe, end_of_turn_variants, tolerance_std
from rmaudit.report.charts import validate_chart
from rmaudit.results import Status
from rmaudit.data.pairs import PreferencePair
from tiny_models import make_tiny_rm

PAIRS = [
    PreferencePair([{"role": "user", "content": f"Question {i}: " + "tell me more about rivers " * (i % 4)}],
                   "Rivers carry water to the sea. " * (i % 5 + 1), "No idea. " * (i % 3 + 1), source="pairs.jsonl", row=i + 1)
    for i in range(12)
]
UNPADDED_ID = 0  # a real token id that never appears in the padded batches below


def audit(folder, *, dtype=None, pooling="auto"):
    loaded = load_reward_model(folder)
    ctx = AuditContext(checkpoint=folder, model=loaded.model, tokenizer=loaded.tokenizer, manifest=loaded.manifest,
                       eval_pairs=PAIRS, pooling=pooling, dtype=dtype)
    return run_configured(PaddingProbe, ctx, sample_size=8)


def test_config_pad_id_mismatch_fails(tmp_path):
    folder = make_tiny_rm(tmp_path / "rm", pad_token_id=UNPADDED_ID)
    result = audit(folder)
    assert result.status is Status.FAIL, result.summary
    m = result.metrics
    assert m["served_pooling"] == "native" and m["config_pad_token_id"] != m["tokenizer_pad_token_id"]
    # transformers pools by config.pad_token_id: right-padded rows read a pad position...
    assert m["max_delta_std_right_native"] > 0.5
    # ...while left padding and mask pooling are unaffected, which localises the defect.
    assert m["max_delta_std_left_native"] <= m["tolerance_std"]
    assert m["max_delta_std_right_mask"] <= m["tolerance_std"]
    assert "config.pad_token_id" in result.summary
    assert validate_chart(result.chart) == []
    json.dumps(result.to_dict())  # the JSON report must be able to hold it
    assert len(result.evidence) == m["n_texts"] and "right_native" in result.evidence[0]


def test_consistent_pad_id_passes(tmp_path):
    result = audit(make_tiny_rm(tmp_path / "rm"))
    assert result.status is Status.PASS, result.summary
    m = result.metrics
    for key in ("right_native", "left_native", "right_mask", "left_mask"):
        assert m[f"max_delta_std_{key}"] <= m["tolerance_std"]
    # SmolLM2 pads with eos; the ChatML turn ends "<|im_end|>\n", so the eos is seen.
    assert m["pad_is_eos"] and m["eos_delta_std"] > m["tolerance_std"]


def test_mismatch_fails_even_when_the_audit_scores_with_mask_pooling(tmp_path):
    # An rmaudit checkpoint (manifest) is served with mask pooling; its own forward is still broken.
    folder = make_tiny_rm(tmp_path / "rm", pad_token_id=UNPADDED_ID, manifest=True)
    result = audit(folder)
    assert result.metrics["served_pooling"] == "mask"
    assert result.status is Status.FAIL and result.metrics["max_delta_std_right_native"] > 0.5


def test_bfloat16_audit_compares_in_float32_and_keeps_the_tight_tolerance(tmp_path):
    folder = make_tiny_rm(tmp_path / "rm")
    fp32, bf16 = audit(folder), audit(folder, dtype=torch.bfloat16)
    assert bf16.status is Status.PASS, bf16.summary
    assert bf16.metrics["audit_dtype"] == "bfloat16" and bf16.metrics["dtype"] == "float32"
    assert bf16.metrics["tolerance_std"] == pytest.approx(fp32.metrics["tolerance_std"], rel=0.5)
    mismatch = audit(make_tiny_rm(tmp_path / "bad", pad_token_id=UNPADDED_ID), dtype=torch.bfloat16)
    assert mismatch.status is Status.FAIL


def test_bfloat16_weights_are_restored_exactly_after_the_float32_comparison(tmp_path):
    loaded = load_reward_model(make_tiny_rm(tmp_path / "rm"), dtype="bfloat16")
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    ctx = AuditContext(checkpoint=tmp_path / "rm", model=loaded.model, tokenizer=loaded.tokenizer, eval_pairs=PAIRS)
    run_configured(PaddingProbe, ctx)
    after = loaded.model.state_dict()
    assert all(after[k].dtype == torch.bfloat16 and torch.equal(after[k], v) for k, v in before.items())


def test_derived_bfloat16_bound_is_far_looser_than_float32():
    """Why the comparison runs in float32: the honest bf16 rounding bound is too loose."""
    fp32 = tolerance_std(torch.float32, 30, 1.9, 1.0, 16, 0.0)
    bf16 = tolerance_std(torch.bfloat16, 30, 1.9, 1.0, 16, 0.0)
    assert bf16 > 0.5 > 1e-3 > fp32


def test_pad_equals_eos_with_template_ending_in_eos_warns(tmp_path):
    # Llama-2 style turns end with eos; with pad == eos native pooling skips it, so a
    # finished answer and one cut before its eos get the same reward.
    folder = make_tiny_rm(tmp_path / "rm")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = known_templates()["llama2"]
    tokenizer.save_pretrained(folder)
    result = audit(folder)
    assert result.status is Status.WARN, result.summary
    assert result.metrics["eos_delta_std"] <= result.metrics["tolerance_std"]
    assert "never sees the end of the turn" in result.summary


def test_tolerance_follows_mantissa_bits_and_depth():
    fp32 = tolerance_std(torch.float32, 2, reward_rms=1.0, reward_std=1.0, ulps=8, floor=0.0)
    bf16 = tolerance_std(torch.bfloat16, 2, reward_rms=1.0, reward_std=1.0, ulps=8, floor=0.0)
    assert bf16 / fp32 == pytest.approx(2.0 ** 16)  # 2^-7 vs 2^-23
    deep = tolerance_std(torch.bfloat16, 32, reward_rms=1.0, reward_std=1.0, ulps=8, floor=0.0)
    assert deep / bf16 == pytest.approx(4.0)
    # A large reward offset carries more rounding than its spread suggests.
    assert tolerance_std(torch.bfloat16, 2, 10.0, 1.0, 8, 0.0) == pytest.approx(10 * bf16)
    assert tolerance_std(torch.float32, 2, 1.0, 1.0, 8, floor=1e-3) == 1e-3


def test_end_of_turn_variants_strip_or_append_eos():
    assert end_of_turn_variants("a</s>\n", "</s>") == ("a\n", "a</s>\n")
    assert end_of_turn_variants("a", "</s>") == ("a", "a</s>")


def test_padded_rows_collapsing_onto_one_reward_is_flagged():
    # What reading a pad position looks like on a real model: every padded row gets nearly
    # the pad token's reward, whatever its text.
    alone = {"mask": np.array([-1.0, 0.0, 1.0, 2.0])}
    modes = [ModeResult("right", "mask", np.array([0.51, 0.50, 0.52, 0.50])),
             ModeResult("left", "mask", alone["mask"].copy())]
    metrics, findings = {}, []
    PaddingProbe()._check_modes(modes, alone, std=1.0, tol=1e-3, metrics=metrics, findings=findings)
    failed = [f for f in findings if f.status is Status.FAIL]
    collapse = next(f for f in failed if f.metric == "spread_ratio_right_mask")
    assert "right-padded / mask" in collapse.message and "pad position" in collapse.message and collapse.limit == 0.1
    assert not any("left-padded" in f.message for f in failed)
    assert metrics["spread_ratio_right_mask"] < 0.1 and metrics["max_delta_std_left_mask"] == 0.0


def test_config_without_pad_id_warns_and_still_checks_mask_pooling(tmp_path):
    folder = make_tiny_rm(tmp_path / "rm")
    config = json.loads((folder / "config.json").read_text())
    config["pad_token_id"] = None
    (folder / "config.json").write_text(json.dumps(config))
    result = audit(folder)
    assert result.status is Status.WARN, result.summary
    assert result.metrics["config_pad_token_id"] is None and result.metrics["served_pooling"] == "mask"
    assert result.metrics["max_delta_std_right_mask"] <= result.metrics["tolerance_std"]
    assert "max_delta_std_right_native" not in result.metrics


@pytest.mark.parametrize("side", ["right", "left"])
def test_both_poolings_of_a_padded_batch_come_from_one_forward_and_equal_their_own(tmp_path, side):
    """score_padded reads mask pooling from the hidden states the checkpoint's own forward
    computed: the rewards of two separate forwards, from one."""
    from rmaudit.modeling.pooling import reward_body
    from rmaudit.probes.padding import filler_text, score_padded
    from rmaudit.scoring import score_texts

    loaded = load_reward_model(make_tiny_rm(tmp_path / "rm"))
    ctx = AuditContext(checkpoint=tmp_path / "rm", model=loaded.model, tokenizer=loaded.tokenizer, eval_pairs=PAIRS)
    texts = ctx.pair_texts(PAIRS[:4])
    calls: list[int] = []
    hook = reward_body(ctx.model).register_forward_pre_hook(lambda *args: calls.append(1))
    both = score_padded(ctx, texts, side=side)
    hook.remove()
    assert len(calls) == 1
    batch = [*texts, filler_text(ctx, texts)]
    for pooling in ("mask", "native"):
        own = score_texts(ctx.model, ctx.tokenizer, batch, batch_size=len(batch), pooling=pooling,
                          padding_side=side).rewards[:-1]
        np.testing.assert_allclose(both[pooling], own, rtol=0, atol=1e-6)
    assert np.std(both["mask"]) > 1e-3
