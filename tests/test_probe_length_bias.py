"""length_bias: a head fitted to prefer longer answers fails; a head fitted on content passes."""

from __future__ import annotations

import numpy as np
import json

import pytest
import torch

from helpers_probe_heads import fitted_rm, synthetic_pairs
from helpers_probe import run_configured
from rmaudit.probes.context import AuditContext
from rmaudit.probes.length_bias import (LengthBiasProbe, fit_length, pair_response_lengths, preference_split,
                                        response_lengths)
from rmaudit.report.charts import validate_chart
from rmaudit.results import Status

# Held-out pairs decided by content, lengths independent of the label (chosen longer ~50%).
EVAL_PAIRS = synthetic_pairs(seed=1000, n=40, rule="content")


@pytest.fixture(scope="module")
def length_rm():
    return fitted_rm("length")


@pytest.fixture(scope="module")
def content_rm():
    return fitted_rm("content")


def run(model, tokenizer, pairs, **thresholds):
    ctx = AuditContext(checkpoint=None, model=model, tokenizer=tokenizer, eval_pairs=pairs, pooling="mask")
    return run_configured(LengthBiasProbe, ctx, **thresholds)


def test_head_fitted_to_prefer_longer_answers_fails(length_rm):
    result = run(*length_rm, EVAL_PAIRS)
    assert result.status is Status.FAIL, result.summary
    m = result.metrics
    assert m["r2"] >= 0.3 and m["spearman"] > 0.5 and m["slope_per_100_tokens"] > 0
    # On the same prompt the longer answer wins whatever its content: accuracy follows length.
    assert m["accuracy_when_chosen_longer"] - m["accuracy_when_chosen_shorter"] > 0.3
    assert m["rm_prefers_longer_rate"] > m["data_chosen_longer_rate"]
    assert validate_chart(result.chart) == []
    json.dumps(result.to_dict())  # the JSON report must be able to hold it
    # Evidence: real pairs the RM got wrong because the rejected answer was longer.
    assert result.evidence
    for row in result.evidence:
        assert row["rejected_tokens"] > row["chosen_tokens"] and row["reward_rejected"] > row["reward_chosen"]


def test_head_fitted_on_content_passes(content_rm):
    result = run(*content_rm, EVAL_PAIRS)
    assert result.status is Status.PASS, result.summary
    assert result.metrics["r2"] < 0.1 and result.metrics["within_pair_r2"] < 0.1
    # The content RM is accurate on held-out pairs whichever response is longer.
    assert result.metrics["accuracy_when_chosen_longer"] > 0.9 and result.metrics["accuracy_when_chosen_shorter"] > 0.9


def test_preferring_shorter_answers_is_a_bias_too(length_rm):
    model, tokenizer = length_rm
    shorter = type(model)(model.config).eval()
    shorter.load_state_dict(model.state_dict())
    with torch.no_grad():
        shorter.score.weight.neg_()
    result = run(shorter, tokenizer, EVAL_PAIRS)
    assert result.status is Status.FAIL, result.summary
    assert result.metrics["slope_per_100_tokens"] < 0 and "favours shorter" in result.summary


def test_tiny_eval_set_gives_no_confident_verdict(length_rm, content_rm):
    few = EVAL_PAIRS[:8]
    biased = run(*length_rm, few)
    assert biased.status is Status.WARN and "too few" in biased.summary
    clean = run(*content_rm, few)
    assert clean.status in (Status.SKIP, Status.WARN) and "too few" in clean.summary


def test_skips_without_eval_pairs(content_rm):
    result = run(*content_rm, [])
    assert result.status is Status.SKIP and "--data" in result.summary


def test_lengths_count_response_tokens_only(content_rm):
    _, tokenizer = content_rm
    lengths = response_lengths(tokenizer, ["hello world", "hello world hello world"])
    assert lengths[1] == 2 * lengths[0] and lengths[0] == len(tokenizer("hello world", add_special_tokens=False)["input_ids"])
    pairs = synthetic_pairs(2, 30, "content")
    chosen, rejected = pair_response_lengths(tokenizer, iter(pairs))  # one pass, as over a stored file
    np.testing.assert_array_equal(chosen, response_lengths(tokenizer, [p.chosen for p in pairs]))
    np.testing.assert_array_equal(rejected, response_lengths(tokenizer, [p.rejected for p in pairs]))


def test_preference_split_separates_length_bias_from_inaccuracy():
    len_c = np.array([10, 10, 50, 50, 10, 50.0])
    len_r = np.array([50, 50, 10, 10, 50, 10.0])
    # Follows length exactly: right whenever chosen is longer, wrong whenever shorter.
    follows = preference_split(len_c, len_r, r_c=len_c.copy(), r_r=len_r.copy())
    assert follows.accuracy_chosen_longer == 1.0 and follows.accuracy_chosen_shorter == 0.0
    assert follows.rm_prefers_longer == 1.0 and follows.data_chosen_longer == 0.5
    # Equally inaccurate both ways: no length bias, whatever its overall accuracy.
    correct = np.array([1, 1, 1, 1, 0, 0.0])  # 2/3 right in each length direction
    unbiased = preference_split(len_c, len_r, r_c=correct, r_r=1 - correct)
    assert unbiased.accuracy_gap == pytest.approx(0.0) and unbiased.gap_p == pytest.approx(1.0)


def test_fit_length_recovers_a_known_line():
    lengths = np.arange(1, 101, dtype=float)
    fit = fit_length(lengths, 0.02 * lengths + 1.0)
    assert fit.slope == pytest.approx(0.02) and fit.r2 == pytest.approx(1.0) and fit.spearman == pytest.approx(1.0)
    assert fit_length(np.full(10, 5.0), np.arange(10.0)) is None


def test_charts_of_a_large_eval_set_draw_a_spread_sample_and_say_so():
    """Every pair enters the fits; the scatter draws at most CHART_PAIRS of them (100k points
    made megabytes of report), an even spread including both ends, and its title says so."""
    from rmaudit.probes.length_bias import CHART_PAIRS, length_charts

    rng = np.random.default_rng(0)
    n = 3 * CHART_PAIRS + 7
    len_c, len_r = rng.integers(5, 300, n).astype(float), rng.integers(5, 300, n).astype(float)
    r_c, r_r = 0.01 * len_c + rng.normal(size=n), 0.01 * len_r + rng.normal(size=n)
    pooled = fit_length(np.concatenate([len_c, len_r]), np.concatenate([r_c, r_r]))
    within = fit_length(len_c - len_r, r_c - r_r)
    charts = length_charts(len_c, len_r, r_c, r_r, pooled, within)["charts"]
    for chart in charts:
        validate_chart(chart)
        assert f"{CHART_PAIRS:,} of {n:,} pairs shown" in chart["title"]
        assert all(len(s["x"]) == len(s["y"]) == CHART_PAIRS for s in chart["series"])
    chosen = charts[0]["series"][0]
    assert chosen["x"][0] == len_c[0] and chosen["x"][-1] == len_c[-1] and chosen["y"][-1] == r_c[-1]
    small = length_charts(len_c[:50], len_r[:50], r_c[:50], r_r[:50], pooled, within)["charts"]
    assert "shown" not in small[0]["title"] and len(small[0]["series"][0]["x"]) == 50
