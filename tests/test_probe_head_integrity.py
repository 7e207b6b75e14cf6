"""head_integrity on real checkpoint folders: a causal-LM checkpoint, a renamed head key, a
fresh head on a real body, a head unchanged since init, a constant head and NaN rewards
fail; a fitted head passes; the KS test recognises each usual initialisation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers_audit import TOPICS, fitted_tiny_rm, save_rm, topic_pairs
from helpers_probe import run_configured
from helpers_train import tiny_base_dir
from rmaudit.modeling.loading import load_reward_model
from rmaudit.probes.context import AuditContext
from rmaudit.probes.head_integrity import HeadIntegrity, best_init_match
from rmaudit.results import Status
from tiny_models import require_smollm2

HELD_OUT = topic_pairs(TOPICS[20:])


def _audit(folder):
    loaded = load_reward_model(folder)
    ctx = AuditContext(checkpoint=folder, model=loaded.model, tokenizer=loaded.tokenizer, manifest=loaded.manifest,
                       eval_pairs=HELD_OUT, head_origin=loaded.head_origin, pooling="auto")
    return run_configured(HeadIntegrity, ctx)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    require_smollm2()
    model, tokenizer = fitted_tiny_rm(topic_pairs(TOPICS[:20]), shift=1.0)
    return save_rm(model, tokenizer, tmp_path_factory.mktemp("head") / "fitted"), model, tokenizer


def test_a_fitted_head_passes(fitted):
    result = _audit(fitted[0])
    assert result.status is Status.PASS, result.summary
    assert result.metrics["head_source"] == "checkpoint" and result.metrics["chance_binomial_p"] < 0.05


def test_a_causal_lm_checkpoint_has_no_head_and_fails():
    require_smollm2()
    result = _audit(tiny_base_dir())
    assert result.status is Status.FAIL
    [reason] = [f for f in result.reasons if f.metric == "head_source"]
    assert "LlamaForCausalLM" in reason.message and "created at load time" in reason.message


def test_a_renamed_head_key_fails_naming_the_missing_key(fitted, tmp_path):
    folder = save_rm(fitted[1], fitted[2], tmp_path / "renamed")
    weights = load_file(folder / "model.safetensors")
    weights["reward_head.weight"] = weights.pop("score.weight")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    result = _audit(folder)
    assert result.status is Status.FAIL
    reason = next(f for f in result.reasons if f.metric == "missing_head_keys")
    assert reason.value == ["score.weight"] and "score.weight" in reason.message


def test_a_fresh_random_head_on_a_body_fails_as_untrained(fitted, tmp_path):
    """A reward checkpoint saved with a fresh N(0, 0.02) head (transformers' init) and never trained."""
    _, model, tokenizer = fitted
    fresh = type(model)(model.config)
    fresh.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("score.")}, strict=False)
    torch.manual_seed(5)
    with torch.no_grad():
        fresh.score.weight.normal_(0.0, 0.02)
    result = _audit(save_rm(fresh.eval(), tokenizer, tmp_path / "fresh"))
    finding = next(f for f in result.findings if f.metric == "init_ks_p")
    assert finding.status is Status.FAIL and "transformers N(0, 0.02)" in finding.message and "untrained" in finding.message
    assert result.status is Status.FAIL


def test_a_head_unchanged_since_init_fails_on_the_manifest_record(fitted, tmp_path):
    from rmaudit.modeling.head import head_stats

    _, model, tokenizer = fitted
    folder = save_rm(model, tokenizer, tmp_path / "unchanged")
    manifest = json.loads((folder / "rmaudit.json").read_text())
    manifest["head"] = {"init": "normal", "bias": False, "initial_bias": None, "at_init": head_stats(model.score)}
    (folder / "rmaudit.json").write_text(json.dumps(manifest))
    result = _audit(folder)
    finding = next(f for f in result.findings if f.metric == "relative_change_since_init")
    assert finding.status is Status.FAIL and result.status is Status.FAIL


def test_a_constant_head_and_nan_rewards_fail(fitted, tmp_path):
    _, model, tokenizer = fitted
    constant = type(model)(model.config)
    constant.load_state_dict(model.state_dict())
    with torch.no_grad():
        constant.score.weight.zero_()
    result = _audit(save_rm(constant.eval(), tokenizer, tmp_path / "constant"))
    statuses = {f.metric: f.status for f in result.findings}
    assert statuses["relative_reward_std"] is Status.FAIL and statuses["tie_share"] is Status.FAIL
    with torch.no_grad():
        constant.score.weight.fill_(float("nan"))
    result = _audit(save_rm(constant.eval(), tokenizer, tmp_path / "nan"))
    assert {f.metric: f.status for f in result.findings}["nonfinite_rewards"] is Status.FAIL


@pytest.mark.parametrize("draw, expected", [
    (lambda rng, d: rng.normal(0, 0.02, d), "transformers N(0, 0.02)"),
    (lambda rng, d: rng.normal(0, 1 / math.sqrt(d + 1), d), "OpenRLHF N(0, 1/(d+1))"),
    (lambda rng, d: rng.uniform(-1 / math.sqrt(d), 1 / math.sqrt(d), d), "PyTorch kaiming-uniform"),
])
def test_ks_test_recognises_the_usual_initialisations(draw, expected):
    weights = draw(np.random.default_rng(0), 2048)
    name, p = best_init_match(weights)
    assert name == expected and p > 0.01
    assert best_init_match(weights * 5 + 0.1)[1] < 1e-6  # a trained head's weights are unlike any init
