"""Probe `canonical_pairs`: a fitted tiny RM passes, its negated twin fails, a timid twin warns."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from helpers_audit import CANONICAL_FILE, fitted_tiny_rm, save_rm, scaled_head
from rmaudit.audit import AuditOptions, run_audit
from rmaudit.errors import RmauditInputError
from rmaudit.probes.canonical_pairs import load_canonical_pairs
from rmaudit.report.charts import validate_chart
from rmaudit.results import Status
from tiny_models import require_smollm2

CATEGORIES = {
    "math_correctness", "direct_vs_waffle", "help_vs_needless_refusal", "safe_refusal_vs_harmful_compliance",
    "fact_vs_hallucination", "on_topic_vs_off_topic", "format_following", "concise_vs_padded",
}


def test_battery_has_eight_categories_of_six_or_more_wellformed_pairs():
    rows = [json.loads(line) for line in CANONICAL_FILE.read_text(encoding="utf-8").splitlines()]
    counts = Counter(r["category"] for r in rows)
    assert set(counts) == CATEGORIES and min(counts.values()) >= 6 and len(rows) >= 48
    for row in rows:
        assert set(row) == {"prompt", "chosen", "rejected", "category", "required_margin"}
        assert row["chosen"] != row["rejected"] and row["required_margin"] >= 0
    assert len({(r["prompt"], r["chosen"]) for r in rows}) == len(rows)


def test_loader_defaults_user_pairs_and_rejects_a_bad_required_margin(tmp_path):
    good = tmp_path / "mine.jsonl"
    good.write_text(json.dumps({"prompt": "2+2?", "chosen": "4", "rejected": "5"}) + "\n"
                    + json.dumps({"prompt": "1+1?", "chosen": "2", "rejected": "3", "required_margin": 2.5}) + "\n")
    pairs = load_canonical_pairs([good])
    assert [p.category for p in pairs] == ["user", "user"]
    assert [p.meta["required_margin"] for p in pairs] == [1.0, 2.5]

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x", "chosen": "a", "rejected": "b", "required_margin": -1}) + "\n")
    with pytest.raises(RmauditInputError) as err:
        load_canonical_pairs([bad])
    message = str(err.value)
    assert "bad.jsonl" in message and "row 1" in message and "required_margin" in message and "\n" not in message


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """healthy: head fitted on the battery; negated: the same head * -1; timid: the same head scaled
    down until every margin is positive but below the required +1."""
    require_smollm2()
    pairs = load_canonical_pairs([CANONICAL_FILE])
    model, tokenizer = fitted_tiny_rm(pairs)
    root = tmp_path_factory.mktemp("canonical")
    return {
        "healthy": save_rm(model, tokenizer, root / "healthy"),
        "negated": save_rm(scaled_head(model, -1.0), tokenizer, root / "negated"),
        "model": model,
        "tokenizer": tokenizer,
        "root": root,
    }


def audit(checkpoint, **options):
    result = run_audit(checkpoint, AuditOptions(probes="canonical_pairs", progress=False, **options))
    return result.probes[0]


def test_healthy_model_passes_with_every_margin_reported(checkpoints):
    probe = audit(checkpoints["healthy"])
    assert probe.status is Status.PASS, probe.summary
    assert probe.metrics["n_pairs"] == 52 and probe.metrics["pass_rate"] == 1.0
    assert len(probe.evidence) == 52
    assert all(row["margin"] >= row["required"] and row["pass"] for row in probe.evidence)
    assert all(probe.metrics[f"pass_rate[{c}]"] == 1.0 for c in CATEGORIES)
    # reward-std units are the raw margin over the reference set's std
    std = probe.metrics["reward_std"]
    row = probe.evidence[0]
    assert row["margin_std"] == pytest.approx(row["margin"] / std, rel=1e-3, abs=1e-3)
    assert validate_chart(probe.chart) == []


def test_negated_head_fails_and_names_the_categories(checkpoints):
    probe = audit(checkpoints["negated"])
    assert probe.status is Status.FAIL
    assert probe.metrics["wrong_order"] == 52 and probe.metrics["pass_rate"] == 0.0
    assert all(row["verdict"] == "wrong order" for row in probe.evidence)
    assert "math_correctness" in probe.summary


def test_weak_but_right_margins_warn(checkpoints):
    model, tokenizer = checkpoints["model"], checkpoints["tokenizer"]
    healthy = audit(checkpoints["healthy"])
    largest = max(row["margin"] for row in healthy.evidence)
    timid = save_rm(scaled_head(model, 0.9 / largest), tokenizer, checkpoints["root"] / "timid")
    probe = audit(timid)
    margins = np.array([row["margin"] for row in probe.evidence])
    assert (margins > 0).all() and (margins < 1.0).all()
    assert probe.status is Status.WARN
    assert probe.metrics["below_required"] == 52 and probe.metrics["wrong_order"] == 0


def test_user_pairs_join_the_battery_and_one_inverted_pair_fails(checkpoints, tmp_path):
    healthy = load_canonical_pairs([CANONICAL_FILE])[0]
    mine = tmp_path / "mine.jsonl"
    # the battery's first pair with chosen and rejected exchanged: the healthy RM ranks it wrong
    mine.write_text(json.dumps({"prompt": healthy.prompt_text(), "chosen": healthy.rejected,
                                "rejected": healthy.chosen, "category": "mine", "required_margin": 0.5}) + "\n")
    probe = audit(checkpoints["healthy"], pairs=mine)
    assert probe.metrics["n_pairs"] == 53
    assert probe.status is Status.FAIL and probe.metrics["wrong_order"] == 1
    worst = probe.evidence[0]
    assert worst["category"] == "mine" and worst["required"] == 0.5 and worst["verdict"] == "wrong order"
    assert probe.metrics["pass_rate[mine]"] == 0.0 and "mine" in probe.summary


def test_limits_can_tolerate_a_wrong_fraction(checkpoints, tmp_path):
    negated = audit(checkpoints["negated"], limits={"canonical_pairs": {"wrong_order_fraction_fail": 1.0,
                                                                        "pass_rate_warn": 0.0}})
    assert negated.status is Status.PASS
    assert negated.limits["wrong_order_fraction"]["fail"] == 1.0
    finding = next(f for f in negated.findings if f.metric == "wrong_order_fraction")
    assert finding.value == 1.0 and finding.limit == 1.0 and finding.status is Status.PASS


def test_a_bf16_audit_reads_its_close_calls_in_float32(checkpoints, monkeypatch):
    """Each pair is a verdict of its own. This fitted tiny head's margins sit close enough to
    bf16 noise that bf16 alone flips some of its 52 verdicts (planted: the bound forced to 0);
    with the bound taken from the precision sample, every pair near a threshold is read in
    float32, so each verdict is the float32 audit's, and pairs far from both thresholds keep
    their bf16 reading (within the bound of float32)."""
    import rmaudit.probes.context as context

    exact = audit(checkpoints["healthy"], dtype="float32")
    half = audit(checkpoints["healthy"], dtype="bfloat16")
    monkeypatch.setattr(context, "MARGIN_BOUND_FACTOR", 0.0)
    bf16_only = audit(checkpoints["healthy"], dtype="bfloat16")

    def by_pair(probe):
        return {(r["prompt"], r["chosen"], r["rejected"]): r for r in probe.evidence}

    exact_rows, half_rows, bf16_rows = by_pair(exact), by_pair(half), by_pair(bf16_only)
    assert exact.metrics["read_in"] == "float32" and half.metrics["read_in"].startswith("bfloat16; the ")
    assert any(bf16_rows[k]["verdict"] != exact_rows[k]["verdict"] for k in exact_rows), "nothing planted"
    assert all(half_rows[k]["verdict"] == exact_rows[k]["verdict"] for k in exact_rows)
    assert half.status is exact.status is Status.PASS
    bound, reread = half.metrics["decision_bound"], half.metrics["float32_pairs"]
    assert 0 < reread < 52 and bound > 0
    moved = [abs(half_rows[k]["margin"] - exact_rows[k]["margin"]) for k in exact_rows]
    # float32 read in two batchings agrees to rounding: relative to the reward scale, as this
    # head's rewards are in the hundreds (an AVX2 CPU moved one re-read margin by 1.2e-3, 8e-6
    # std; bf16 moved the others by 2e-3 std and more)
    float32_rounding = 1e-4 * half.metrics["reward_std"]
    assert sum(m < float32_rounding for m in moved) >= reread and max(moved) <= bound
