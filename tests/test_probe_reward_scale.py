"""reward_scale: a head whose scale ran away (saturated margins), NaN rewards from a broken
embedding row, a heavy upper tail from a length-rewarding head; a regularised fitted head
passes. The norms it reports are the model's own."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from helpers_audit import TOPICS, fitted_tiny_rm, scaled_head, topic_pairs
from helpers_probe import run_configured
from helpers_probe_heads import fitted_rm, synthetic_pairs
from rmaudit.data.pairs import PreferencePair
from rmaudit.modeling.pooling import reward_head
from rmaudit.probes.context import AuditContext
from rmaudit.probes.reward_scale import RewardScale
from rmaudit.report.charts import validate_chart
from rmaudit.results import Status

PAIRS = synthetic_pairs(seed=1000, n=40, rule="content")


@pytest.fixture(scope="module")
def content_rm():
    return fitted_rm("content")


def _ctx(model, tokenizer, pairs) -> AuditContext:
    return AuditContext(checkpoint=None, model=model, tokenizer=tokenizer, pooling="mask", eval_pairs=pairs)


def _finding(result, metric):
    return next(f for f in result.findings if f.metric == metric)


def test_a_regularised_head_passes_and_reports_its_scale(content_rm):
    model, tokenizer = content_rm
    result = run_configured(RewardScale, _ctx(model, tokenizer, PAIRS))
    assert result.status is Status.PASS, result.summary
    m = result.metrics
    assert m["nonfinite_rewards"] == 0 and m["saturated_share"] < 0.25 and m["max_abs_z"] < 6
    assert m["head_weight_norm"] == pytest.approx(float(reward_head(model).weight.detach().norm()), rel=1e-4)
    assert not validate_chart(result.chart)


def test_a_runaway_head_scale_fails_on_saturated_pairs_with_an_interval(content_rm):
    model, tokenizer = content_rm
    healthy = run_configured(RewardScale, _ctx(model, tokenizer, PAIRS)).metrics
    result = run_configured(RewardScale, _ctx(scaled_head(model, 10.0), tokenizer, PAIRS))
    finding = _finding(result, "saturated_share")
    assert result.status is Status.FAIL and finding.status is Status.FAIL
    assert "95% CI" in finding.message and "bootstrap over 40 prompts" in finding.message
    # The scale is the head's: 10x the weights, 10x the reach and the spread, the same share of reach used.
    assert result.metrics["head_reach"] == pytest.approx(10 * healthy["head_reach"], rel=1e-3)
    assert result.metrics["reward_std"] == pytest.approx(10 * healthy["reward_std"], rel=1e-3)
    assert result.metrics["reward_std_over_reach"] == pytest.approx(healthy["reward_std_over_reach"], rel=1e-3)


def test_an_overfit_head_with_separable_margins_fails_too():
    """L-BFGS on separable pairs with almost no L2: every held-out margin is far past 4."""
    model, tokenizer = fitted_tiny_rm(topic_pairs(TOPICS[:20]), shift=1.0)
    result = run_configured(RewardScale, _ctx(model, tokenizer, topic_pairs(TOPICS[20:])))
    assert _finding(result, "saturated_share").status is Status.FAIL


def test_nan_rewards_from_a_broken_embedding_row_fail_and_lead_the_evidence(content_rm):
    model, tokenizer = copy.deepcopy(content_rm[0]), content_rm[1]
    pairs = PAIRS + [PreferencePair([{"role": "user", "content": "Is the zebra striped?"}], "yes thanks", "no")]
    # The embedding row of a token only that prompt has is NaN: both its responses score NaN.
    token = tokenizer(" zebra", add_special_tokens=False)["input_ids"][0]
    assert sum(token in tokenizer(p.prompt[0]["content"])["input_ids"] for p in pairs) == 1
    with torch.no_grad():
        model.get_input_embeddings().weight[token] = float("nan")
    result = run_configured(RewardScale, _ctx(model, tokenizer, pairs))
    finding = _finding(result, "nonfinite_rewards")
    assert result.status is Status.FAIL and finding.status is Status.FAIL and finding.value == 2
    assert "zebra" in result.evidence[0]["prompt"] and result.evidence[0]["reward"] == "nan"
    assert np.isfinite(result.metrics["reward_std"]) and result.metrics["n_scored_pairs"] == len(PAIRS)


def test_a_heavy_upper_tail_fails_on_max_abs_z():
    model, tokenizer = fitted_rm("length")
    long_answer = " ".join(["the river stone light garden"] * 300)
    pairs = PAIRS + [PreferencePair([{"role": "user", "content": "Tell me about rivers?"}], long_answer, "no")]
    result = run_configured(RewardScale, _ctx(model, tokenizer, pairs))
    finding = _finding(result, "max_abs_z")
    assert finding.status in (Status.WARN, Status.FAIL), result.summary
    assert result.evidence[0]["response"].startswith("the river stone")
    healthy = run_configured(RewardScale, _ctx(model, tokenizer, PAIRS))
    assert _finding(healthy, "max_abs_z").status is Status.PASS


@pytest.mark.parametrize("share", [True, False])
def test_hidden_norms_come_with_the_rewards_where_prefixes_are_shared_and_match_a_forward(content_rm, monkeypatch, share):
    """The scoring forward reads the norm of the state the head read (shared-prefix path):
    reward_scale then forwards nothing; without sharing it forwards; the norms are the same."""
    model, tokenizer = content_rm
    conversations = [p.chosen_messages() for p in PAIRS[:8]] + [p.rejected_messages() for p in PAIRS[:8]]
    expected = np.linalg.norm(_ctx(model, tokenizer, PAIRS).pooled_hidden(conversations), axis=1)
    ctx = _ctx(model, tokenizer, PAIRS)
    ctx.share_prefixes = share
    ctx.score(conversations)
    forwarded: list[int] = []
    pooled_hidden = ctx.pooled_hidden
    monkeypatch.setattr(ctx, "pooled_hidden", lambda items: (forwarded.append(len(items)), pooled_hidden(items))[1])
    np.testing.assert_allclose(ctx.hidden_norms(conversations), expected, rtol=1e-4)
    assert forwarded == ([] if share else [len(conversations)])
