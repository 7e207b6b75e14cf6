"""Probe `accuracy`: a head fitted on training pairs passes on held-out pairs; its negated twin
fails; an overconfident head on noisy labels warns on calibration; an inverted slice warns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers_audit import TOPICS, fitted_tiny_rm, save_rm, scaled_head, topic_pairs, write_pairs_jsonl
from rmaudit.audit import AuditOptions, run_audit
from rmaudit.probes.accuracy import calibration_bins
from rmaudit.stats import sigmoid, wilson_interval
from rmaudit.report.charts import validate_chart
from rmaudit.results import Status
from tiny_models import require_smollm2

TRAIN_TOPICS, EVAL_TOPICS = TOPICS[:20], TOPICS[20:]


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_overconfident():
    # 100 pairs at margin log(4) (confidence 0.8): 80 right, 20 wrong -> perfectly calibrated
    margin = np.log(4.0)
    calibrated = np.array([margin] * 80 + [-margin] * 20)
    ece, bins = calibration_bins(calibrated)
    assert ece == pytest.approx(0.0, abs=1e-9)
    assert sum(b["count"] for b in bins) == 100
    [full] = [b for b in bins if b["count"]]
    assert full["confidence"] == pytest.approx(0.8) and full["accuracy"] == pytest.approx(0.8)
    # the same ranking with margins of 10 claims ~1.0 but is right 80% of the time
    overconfident, _ = calibration_bins(calibrated * 10 / margin)
    assert overconfident == pytest.approx(1 - 0.8, abs=1e-3)


def test_ties_count_half_and_wilson_interval_is_sound():
    ece, bins = calibration_bins(np.zeros(10))
    assert bins[0]["count"] == 10 and bins[0]["accuracy"] == 0.5 and ece == pytest.approx(0.0)
    low, high = wilson_interval(50, 100)
    assert low < 0.5 < high and high - low == pytest.approx(0.19, abs=0.01)
    assert wilson_interval(10, 10)[1] == 1.0
    assert sigmoid(np.array([1000.0, -1000.0])).tolist() == [1.0, 0.0]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A head fitted on TRAIN_TOPICS; held-out pairs on EVAL_TOPICS (never seen in fitting)."""
    require_smollm2()
    model, tokenizer = fitted_tiny_rm(topic_pairs(TRAIN_TOPICS), shift=1.0)
    root = tmp_path_factory.mktemp("accuracy")
    held_out = topic_pairs(EVAL_TOPICS)
    return {
        "model": model, "tokenizer": tokenizer, "root": root,
        "healthy": save_rm(model, tokenizer, root / "healthy"),
        "negated": save_rm(scaled_head(model, -1.0), tokenizer, root / "negated"),
        "held_out": held_out,
        "eval_file": write_pairs_jsonl(held_out, root / "eval.jsonl"),
    }


def audit(checkpoint, data, **options):
    return run_audit(checkpoint, AuditOptions(probes="accuracy", data=data, **options)).probes[0]


def test_fitted_head_passes_on_held_out_pairs(setup):
    probe = audit(setup["healthy"], setup["eval_file"])
    assert probe.status is Status.PASS, probe.summary
    assert probe.metrics["n_pairs"] == len(EVAL_TOPICS)
    assert probe.metrics["accuracy"] >= 0.9 and probe.metrics["ece"] < 0.15
    assert probe.metrics["accuracy_ci_low"] < probe.metrics["accuracy"] <= probe.metrics["accuracy_ci_high"]
    assert validate_chart(probe.chart) == []
    kinds = [c["kind"] for c in probe.chart["charts"]]
    assert kinds == ["histogram", "reliability"]  # no categories in this data
    # evidence lists the lowest margins first, from the real held-out rows
    margins = [row["margin"] for row in probe.evidence]
    assert margins == sorted(margins) and probe.evidence[0]["source"].startswith("eval.jsonl:")


def test_negated_head_fails(setup):
    probe = audit(setup["negated"], setup["eval_file"])
    assert probe.status is Status.FAIL
    assert probe.metrics["accuracy"] <= 0.1
    assert probe.evidence[0]["correct"] is False


def test_overconfident_head_on_noisy_labels_warns_on_calibration(setup):
    """30% of the held-out labels flipped: the fitted head is still right 70% of the time, but
    scaled up 20x it claims near-certainty, which ECE must catch."""
    root = setup["root"]
    noisy = write_pairs_jsonl(setup["held_out"], root / "noisy.jsonl", swap=range(0, len(EVAL_TOPICS), 3))
    loud = save_rm(scaled_head(setup["model"], 20.0), setup["tokenizer"], root / "loud")
    probe = audit(loud, noisy)
    assert 0.6 <= probe.metrics["accuracy"] <= 0.75
    assert probe.metrics["ece"] >= 0.15 and probe.metrics["mean_confidence"] > 0.95
    assert probe.status is Status.WARN and "ECE" in probe.summary


def test_an_inverted_category_warns_even_when_overall_accuracy_is_fine(setup):
    """Three categories; one has its labels reversed. Overall accuracy ~0.67 passes, the slice does not."""
    root = setup["root"]
    pairs = topic_pairs(TOPICS[:10], "a") + topic_pairs(TOPICS[10:20], "b") + topic_pairs(TOPICS[20:30], "c")
    mixed = write_pairs_jsonl(pairs, root / "mixed.jsonl", swap=range(10, 20))
    probe = audit(setup["healthy"], mixed)
    assert probe.metrics["accuracy[b]"] <= 0.1
    assert probe.metrics["accuracy[a]"] >= 0.9 and probe.metrics["n_pairs[a]"] == 10
    [reason] = [f for f in probe.reasons if f.metric.startswith("accuracy[")]
    assert probe.status is Status.WARN and reason.metric == "accuracy[b]" and reason.value <= 0.1 and reason.limit == 0.5
    assert "inverted" in reason.message and "'b'" in probe.summary
    assert [c["kind"] for c in probe.chart["charts"]] == ["histogram", "reliability", "bar"]


def test_skips_without_eval_data_naming_the_flag(setup):
    result = run_audit(setup["healthy"], AuditOptions(probes="accuracy"))
    [probe] = result.probes
    assert probe.status is Status.SKIP and "--data" in probe.summary


def test_identical_pairs_are_excluded_not_counted_wrong(setup):
    held_out = setup["held_out"]
    same = held_out[0]
    same = type(same)(prompt=same.prompt, chosen=same.chosen, rejected=same.chosen)
    data = write_pairs_jsonl([same, *held_out], setup["root"] / "with-identical.jsonl")
    probe = audit(setup["healthy"], data)
    assert probe.metrics["identical_pairs_excluded"] == 1 and probe.metrics["n_pairs"] == len(held_out)
    assert probe.metrics["ties"] == 0


def test_max_pairs_samples_the_held_out_set(setup):
    probe = audit(setup["healthy"], setup["eval_file"], max_pairs=7)
    assert probe.metrics["n_pairs"] == 7


def close_pairs(model, tokenizer, n_texts: int = 600) -> list:
    """Pairs of different answers whose float32 rewards are neighbours: every float32 verdict
    is right (chosen is the higher), but the margins are far below bf16 rounding, so a bf16
    reading decides about half of them by noise."""
    from rmaudit.data.pairs import PreferencePair
    from rmaudit.scoring import score

    rng = np.random.default_rng(0)
    words = "water light soil sun basil leaf root pot window winter summer shade grow dry wet green".split()
    prompt = [{"role": "user", "content": "How do I keep basil alive?"}]
    answers = sorted({" ".join(rng.choice(words, size=6)) for _ in range(n_texts)})
    rewards = score(model, tokenizer, [[*prompt, {"role": "assistant", "content": a}] for a in answers]).rewards
    order = np.argsort(rewards)
    return [PreferencePair(prompt, answers[order[k + 1]], answers[order[k]]) for k in range(0, len(order) - 1, 2)]


def test_a_bf16_audit_checks_float32_and_grades_accuracy_in_float32_when_bf16_flips_verdicts(setup):
    """Planted: margins below bf16 rounding. The check flags the flips and accuracy is read in
    float32 (1.0 by construction) instead of bf16's coin toss; the gate cannot fail on noise."""
    data = write_pairs_jsonl(close_pairs(setup["model"], setup["tokenizer"]), setup["root"] / "close.jsonl")
    probe = audit(setup["healthy"], data, dtype="bfloat16")
    check = next(f for f in probe.findings if f.metric == "float32_flipped_share")
    assert check.status is Status.WARN and probe.metrics["float32_flipped_pairs"] >= 3
    assert probe.metrics["float32_accuracy"] == 1.0 > probe.metrics["float32_check_accuracy"]
    assert probe.metrics["read_in"] == "float32" and probe.metrics["accuracy"] == 1.0
    assert "read in float32 on every held-out pair" in check.message


def test_a_bf16_audit_of_clearly_separated_pairs_keeps_bf16_and_says_it_agrees(setup):
    probe = audit(setup["healthy"], setup["eval_file"], dtype="bfloat16")
    check = next(f for f in probe.findings if f.metric == "float32_flipped_share")
    assert check.status is Status.PASS and probe.metrics["float32_flipped_pairs"] == 0
    assert probe.metrics["read_in"] == "bfloat16" and probe.metrics["float32_check_pairs"] == 12
    assert 0 < probe.metrics["float32_median_delta_std"] < 0.1


def test_a_float32_audit_has_no_precision_check(setup):
    probe = audit(setup["healthy"], setup["eval_file"], dtype="float32")
    assert probe.metrics["read_in"] == "float32" and "float32_check_pairs" not in probe.metrics
    assert not [f for f in probe.findings if f.metric == "float32_flipped_share"]


def test_the_float32_reference_of_a_bf16_audit_is_the_checkpoint_reloaded_not_the_rounded_weights(setup):
    from safetensors.torch import load_file

    from rmaudit.inputs import build_context

    ctx = build_context(setup["healthy"], AuditOptions(probes="accuracy", data=setup["eval_file"], dtype="bfloat16").validated())
    assert next(ctx.model.parameters()).dtype == torch.bfloat16
    reference = ctx.float32_model()
    stored = load_file(setup["healthy"] / "model.safetensors")
    assert all(torch.equal(reference.state_dict()[k], v) for k, v in stored.items() if k in reference.state_dict())
    assert any(not torch.equal(ctx.model.state_dict()[k].float(), v) for k, v in stored.items())  # bf16 did round
    assert ctx.float32_model() is reference and "reloaded" in ctx.notes["float32_reference"]
