"""policy_shift: policy samples from the training distribution (healthy) against samples that
drifted to text no training response resembles (planted); the Ledoit-Wolf estimate matches
scikit-learn's; a reward that grows with distance is graded; without train data the
held-out responses are split and the report says so."""

from __future__ import annotations

import numpy as np
import pytest

from helpers_probe import configured, record_progress_bars, run_configured
from helpers_probe_heads import fitted_rm, synthetic_pairs
from helpers_rollouts import write_rollouts
from rmaudit.probes.context import AuditContext
from rmaudit.probes.policy_rollouts import PolicyRollouts
from rmaudit.probes.policy_shift import PolicyShift, ledoit_wolf, mahalanobis
from rmaudit.report.charts import validate_chart
from rmaudit.results import Status
from rmaudit.runner import run_probe, score_plan
from tiny_models import tiny_rm

EVAL = synthetic_pairs(seed=1000, n=40, rule="content")
TRAIN = synthetic_pairs(seed=4000, n=60, rule="content")


@pytest.fixture(scope="module")
def content_rm():
    return fitted_rm("content")


def _ctx(rm, rollouts_file, train=TRAIN, **fields):
    model, tokenizer = rm
    return AuditContext(checkpoint=None, model=model, tokenizer=tokenizer, pooling="mask", eval_pairs=EVAL,
                        train_pairs=train, rollouts_file=rollouts_file, **fields)


def _run(rm, rollouts_file, train=TRAIN, **overrides):
    return run_configured(PolicyShift, _ctx(rm, rollouts_file, train), **overrides)


def _finding(result, metric):
    return next(f for f in result.findings if f.metric == metric)


def test_ledoit_wolf_matches_scikit_learn():
    covariance = pytest.importorskip("sklearn.covariance")
    x = np.random.default_rng(0).normal(size=(40, 64)) @ np.diag(np.linspace(0.1, 3, 64))
    mean, ours, shrinkage = ledoit_wolf(x)
    theirs = covariance.LedoitWolf().fit(x)
    assert shrinkage == pytest.approx(theirs.shrinkage_, rel=1e-9)
    np.testing.assert_allclose(ours, theirs.covariance_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mahalanobis(x[:3], mean, ours) ** 2, theirs.mahalanobis(x[:3]), rtol=1e-8)


def test_samples_like_the_training_responses_pass(content_rm, tmp_path):
    result = _run(content_rm, write_rollouts(tmp_path / "r.jsonl", style="mixed"))
    assert result.status is Status.PASS, result.summary
    assert result.metrics["beyond_p99_share"] < 0.2 and result.metrics["reference"] == "training responses"
    assert not validate_chart(result.chart)


def test_drifted_samples_fail_with_an_interval_and_the_farthest_as_evidence(content_rm, tmp_path):
    result = _run(content_rm, write_rollouts(tmp_path / "r.jsonl", style="drifted"))
    finding = _finding(result, "beyond_p99_share")
    assert result.status is Status.FAIL and finding.status is Status.FAIL, result.summary
    assert result.metrics["beyond_p99_share_ci_low"] > 0.5 and result.metrics["distance_ratio"] > 1.5
    assert "95% CI" in finding.message and "1% expected" in finding.message
    assert result.evidence[0]["over_held_out_p99"] > 1


def test_a_reward_that_grows_with_distance_warns(tmp_path):
    """A length RM on samples whose length drifts: the longest are the farthest and score highest."""
    rm = fitted_rm("length")
    rows = write_rollouts(tmp_path / "r.jsonl", style="neutral", prompts=24)
    result = _run(rm, rows, train=synthetic_pairs(seed=4000, n=60, rule="content"))
    rho = result.metrics["reward_distance_spearman"]
    assert rho is not None and result.metrics["reward_distance_spearman_ci_low"] is not None
    finding = _finding(result, "reward_distance_spearman")
    if result.metrics["reward_distance_spearman_ci_low"] > 0 and rho >= 0.3:
        assert finding.status is Status.WARN and "leave the RM's training distribution" in finding.message
    else:  # the planted relation must exist; if it does not, the fixture is wrong, not the probe
        pytest.fail(f"expected a positive reward-distance trend, got {rho} ({result.summary})")


def test_without_train_data_half_the_held_out_responses_are_the_reference(content_rm, tmp_path):
    result = _run(content_rm, write_rollouts(tmp_path / "r.jsonl"), train=None)
    assert result.metrics["reference"].startswith("half of the held-out")
    assert result.metrics["n_reference"] == result.metrics["n_held_out"] == 40
    assert any("train-split data would" in f.message for f in result.findings)


@pytest.mark.parametrize("n_pairs", [1, 4, 7])
def test_human_responses_read_the_same_conversations_as_the_flat_list(n_pairs):
    """policy_shift reads conversations start:stop of (chosen, rejected, ...) without listing
    every pair's (a stored eval file is read back only where needed): the same slices."""
    from rmaudit.data import PreferencePair
    from rmaudit.data.store import PairStore
    from rmaudit.probes.policy_shift import _conversations

    pairs = [PreferencePair([{"role": "user", "content": f"q{i}"}], f"c{i}", f"r{i}") for i in range(n_pairs)]
    flat = [c for p in pairs for c in (p.chosen_messages(), p.rejected_messages())]
    for start in range(len(flat) + 1):
        for stop in range(start, len(flat) + 3):
            assert _conversations(PairStore(pairs), start, stop) == flat[start:stop]


@pytest.mark.parametrize("share", [True, False])
def test_hidden_state_forwards_show_a_bar_that_reaches_its_total(content_rm, monkeypatch, share):
    """policy_shift forwards 640 texts outside the scoring plan by default (two minutes for
    SmolLM2 on a 2-core CPU): a bar with the time left, advanced once per text, either path."""
    bars = record_progress_bars(monkeypatch)
    model, tokenizer = content_rm
    ctx = AuditContext(checkpoint=None, model=model, tokenizer=tokenizer, pooling="mask", eval_pairs=EVAL,
                       progress=True, share_prefixes=share)
    conversations = [p.chosen_messages() for p in EVAL] + [p.rejected_messages() for p in EVAL[:5]]
    hidden = ctx.pooled_hidden(conversations)
    assert hidden.shape[0] == len(conversations)
    assert bars == [["hidden states", len(conversations), len(conversations)]]


@pytest.mark.parametrize("share", [True, False])
def test_hidden_states_come_from_the_forwards_that_score_the_texts(content_rm, tmp_path, monkeypatch, share):
    """As ``rmaudit check`` runs it, the scoring plan's forward keeps the human responses'
    hidden states and the forward that scores the samples (policy_rollouts') keeps theirs: where prefixes are
    shared policy_shift forwards nothing of its own (it forwarded 640 texts a second time,
    about 75 s of SmolLM2 on a 2-core CPU), and it measures what its own forwards measure."""
    rollouts = write_rollouts(tmp_path / "r.jsonl", style="drifted")
    alone = _run(content_rm, rollouts)  # no plan: every hidden state forwarded by pooled_hidden
    ctx, probe = _ctx(content_rm, rollouts, share_prefixes=share), configured(PolicyShift)
    rollouts_probe = configured(PolicyRollouts)  # scores the samples before policy_shift runs
    score_plan(ctx, [rollouts_probe, probe])
    assert run_probe(rollouts_probe, ctx).status is not Status.ERROR
    forwarded: list[int] = []
    forward_hidden = AuditContext._forward_hidden
    monkeypatch.setattr(AuditContext, "_forward_hidden",
                        lambda self, texts, advance: (forwarded.append(len(texts)), forward_hidden(self, texts, advance))[1])
    planned = run_probe(probe, ctx)
    m = planned.metrics
    assert forwarded == ([] if share else [m["n_reference"], m["n_held_out"], m["n_samples"]])
    assert planned.status is alone.status is Status.FAIL
    for name in ("held_out_p99", "held_out_median", "policy_median", "reward_distance_spearman", "shrinkage"):
        assert m[name] == pytest.approx(alone.metrics[name], rel=1e-4), name
    assert m["beyond_p99_share"] == alone.metrics["beyond_p99_share"]


def test_without_policy_samples_the_plan_forwards_no_responses(content_rm):
    """The probe will skip: planning its 200 human responses would forward them for nothing."""
    ctx = _ctx(content_rm, None)
    assert [len(texts) for texts in configured(PolicyShift).plan(ctx)] == [2 * len(EVAL)]
    assert not ctx.keep_policy_sample_hidden


def test_hidden_states_are_read_where_native_pooling_reads():
    """Under native pooling a text that ends in the pad id is read before it (transformers'
    last non-pad token). A hidden state forwarded on its own and one kept from the scoring
    forward must be read at that same position, or distances would mix two positions."""
    model, tokenizer = tiny_rm()
    tokenizer.chat_template = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
                               "{{ message['content'] }}<|im_end|>{% endfor %}")  # ends in pad == eos
    conversations = [p.chosen_messages() for p in EVAL[:6]]

    def ctx(pooling):
        return AuditContext(checkpoint=None, model=model, tokenizer=tokenizer, pooling=pooling)

    forwarded = ctx("native").pooled_hidden(conversations)
    scored = ctx("native")
    texts = [scored.render(c) for c in conversations]
    scored.keep_hidden(texts)
    scored.score_texts(texts)
    assert len(scored._hidden) == len(texts)
    np.testing.assert_allclose(scored.pooled_hidden(conversations), forwarded, rtol=1e-4, atol=1e-6)
    assert not np.allclose(ctx("mask").pooled_hidden(conversations), forwarded, atol=1e-3)
