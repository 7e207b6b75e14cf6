"""head_integrity on real checkpoint folders: a causal-LM checkpoint, a renamed head key, a
fresh head on a real body, a head unchanged since init (also read through a bf16 load), a
constant head and NaN rewards fail; a head saved in bf16 is judged within its rounding; a fitted head passes; the KS test recognises each usual initialisation."""

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
from rmaudit.probes.head_integrity import HeadIntegrity, best_init_match, rounding_tolerance
from rmaudit.results import Status
from tiny_models import require_smollm2

HELD_OUT = topic_pairs(TOPICS[20:])


def _audit(folder, dtype="float32"):
    loaded = load_reward_model(folder, dtype=dtype)
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
    assert result.summary.startswith("head from random init at load")  # not "from checkpoint"


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


def _with_head_at_init(model, tokenizer, folder, head):
    """``model`` saved to ``folder`` with a manifest recording ``head``'s statistics as the init."""
    from rmaudit.modeling.head import head_stats

    folder = save_rm(model, tokenizer, folder)
    manifest = json.loads((folder / "rmaudit.json").read_text())
    manifest["head"] = {"init": "normal", "bias": False, "initial_bias": None, "at_init": head_stats(head)}
    (folder / "rmaudit.json").write_text(json.dumps(manifest))
    return folder


def _since_init(result):
    return next(f for f in result.findings if f.metric == "relative_change_since_init")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_head_unchanged_since_init_fails_on_the_manifest_record(fitted, tmp_path, dtype):
    """Also when the audit loads the model in bf16: the file's float32 weights are compared, not
    the rounded module (whose statistics differ from the init by ~1e-3, which passed before)."""
    _, model, tokenizer = fitted
    result = _audit(_with_head_at_init(model, tokenizer, tmp_path / "unchanged", model.score), dtype)
    assert _since_init(result).status is Status.FAIL and result.status is Status.FAIL
    assert result.metrics["head_weights_read_from"] == "the checkpoint's safetensors"
    assert result.metrics["head_weights_dtype"] == "float32"


def test_a_head_saved_in_bfloat16_is_judged_within_its_rounding(fitted, tmp_path):
    """Weights that exist only in bf16: an unchanged head warns (cannot be told), never passes;
    a head whose init was another draw passes."""
    _, model, tokenizer = fitted
    half = type(model)(model.config)
    half.load_state_dict(model.state_dict())
    half = half.to(torch.bfloat16).eval()
    unchanged = _audit(_with_head_at_init(half, tokenizer, tmp_path / "unchanged", model.score), "bfloat16")
    finding = _since_init(unchanged)
    assert unchanged.metrics["head_weights_dtype"] == "bfloat16"
    assert finding.status is Status.WARN and "bfloat16 rounding" in finding.message
    other_init = torch.nn.Linear(model.score.in_features, 1, bias=False)
    torch.manual_seed(11)
    with torch.no_grad():
        other_init.weight.normal_(0.0, float(model.score.weight.std()))
    moved = _audit(_with_head_at_init(half, tokenizer, tmp_path / "moved", other_init), "bfloat16")
    assert _since_init(moved).status is Status.PASS


def test_rounding_tolerance_covers_bf16_rounding_and_not_a_training_step():
    rng = np.random.default_rng(0)
    init = rng.normal(0, 0.04, 576)
    rounded = torch.tensor(init).to(torch.bfloat16).double().numpy()
    tolerance = rounding_tolerance(rounded, "bfloat16")
    stats = {"weight_mean": np.mean, "weight_std": lambda w: np.std(w, ddof=1), "weight_norm": np.linalg.norm}
    assert all(abs(f(rounded) - f(init)) <= tolerance[k] for k, f in stats.items())
    # 50 AdamW-like steps of lr 1e-4 in a consistent direction: a real update.
    stepped = torch.tensor(init + 50 * 1e-4 * np.sign(init)).to(torch.bfloat16).double().numpy()
    assert any(abs(f(stepped) - f(init)) > tolerance[k] for k, f in stats.items())
    assert rounding_tolerance(init, "float32") == {"weight_mean": 0.0, "weight_std": 0.0, "weight_norm": 0.0}


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


def test_margins_inside_the_precision_error_bound_are_ties_in_the_chance_test():
    """An init-like head whose pairs lean right only by rounding noise (planted: 62% of 300
    margins positive, all smaller than the bound) passes the chance test when those margins
    count; with the bound they are ties and the head is flagged untrained. Its healthy twin,
    the same signs at whole reward units, is decided by the same bound as above chance."""
    probe = HeadIntegrity()
    rng = np.random.default_rng(1)
    weights = rng.normal(0, 1 / math.sqrt(577), 576)  # OpenRLHF's init, as hh20's KS test found
    signs = np.where(np.arange(300) < 186, 1.0, -1.0)
    noise = signs * rng.uniform(0.001, 0.01, 300)

    def verdict(margins, bound):
        metrics: dict = {}
        return probe._untrained(weights, margins, bound, metrics)[0], metrics

    counted, _ = verdict(noise, 0.0)
    tied, metrics = verdict(noise, 0.02)
    assert counted.status is Status.PASS and tied.status is Status.FAIL
    assert metrics["tied_by_precision"] == 300 and metrics["accuracy"] == 0.5
    assert "300 margins within the 0.02 precision error bound count as ties" in tied.message
    assert "looks untrained at this precision (--dtype float32 reads the 300 ties exactly)" in tied.message
    decided, metrics = verdict(signs * rng.uniform(0.5, 2.0, 300), 0.02)
    assert decided.status is Status.PASS and metrics["tied_by_precision"] == 0


def test_a_bf16_audit_states_its_margin_error_bound_and_float32_has_none(fitted):
    exact, half = _audit(fitted[0]), _audit(fitted[0], dtype="bfloat16")
    assert exact.metrics["margin_error_bound"] == 0 and exact.metrics["tied_by_precision"] == 0
    assert half.metrics["margin_error_bound"] > 0
    assert half.status is exact.status is Status.PASS  # a fitted head's margins are far beyond it
