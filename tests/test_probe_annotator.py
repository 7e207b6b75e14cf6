"""annotator: an RM fitted to one annotator's rule against data two annotators labelled by
different rules (planted) and by the same rule (healthy); one annotator dominating the rows;
two annotators splitting on the same pair; the real PandaLM panel, with Fleiss' kappa
checked against statsmodels."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from helpers_probe import run_configured
from helpers_probe_heads import fitted_rm, synthetic_pairs
from probe_fixtures import two_annotators
from rmaudit.data import load_pairs
from rmaudit.probes.annotator import AnnotatorProbe, fleiss_kappa, panel_labels
from rmaudit.probes.context import AuditContext
from rmaudit.results import Status
from tiny_models import SHARED

PANDALM = SHARED / "data" / "pandalm" / "testset-v1.json"


def labelled(pairs, annotator: str):
    return [dataclasses.replace(p, meta={**p.meta, "annotator": annotator}) for p in pairs]


@pytest.fixture(scope="module")
def content_rm():
    return fitted_rm("content")


def _run(rm, pairs, field="annotator", **overrides):
    model, tokenizer = rm
    ctx = AuditContext(checkpoint=None, model=model, tokenizer=tokenizer, pooling="mask", eval_pairs=pairs,
                       annotator_field=field)
    return run_configured(AnnotatorProbe, ctx, **overrides)


def _finding(result, metric):
    return next(f for f in result.findings if f.metric == metric)


def test_an_rm_that_fits_one_annotators_rule_fails_on_the_agreement_gap(content_rm):
    result = _run(content_rm, two_annotators("length"))
    finding = _finding(result, "agreement_gap")
    assert result.status is Status.FAIL and finding.status is Status.FAIL, result.summary
    assert result.metrics["best_annotator"] == "A" and result.metrics["agreement_gap_ci_low"] > 0
    assert "one annotator's taste" in finding.message and "bootstrap over prompts" in finding.message
    assert result.metrics["rm_agreement[A]"] > 0.9 and result.metrics["top_annotator_share"] == 0.5


def test_annotators_with_the_same_taste_pass(content_rm):
    result = _run(content_rm, two_annotators("content"))
    assert result.status is Status.PASS, result.summary
    assert abs(result.metrics["agreement_gap"]) < 0.1


def test_one_annotator_labelling_most_rows_fails_on_share(content_rm):
    pairs = synthetic_pairs(seed=2000, n=50, rule="content")
    pairs = labelled(pairs[:40], "A") + labelled(pairs[40:], "B")
    result = _run(content_rm, pairs)
    finding = _finding(result, "top_annotator_share")
    assert finding.status is Status.FAIL and finding.value == 0.8 and "'A' labelled 80.0%" in finding.message


def test_two_annotators_splitting_on_the_same_pair_are_counted_and_shown(content_rm):
    base = synthetic_pairs(seed=2000, n=30, rule="content")
    pairs = labelled(base, "A") + labelled(base[:20], "B")
    flipped = [dataclasses.replace(p, chosen=p.rejected, rejected=p.chosen) for p in base[20:30]]
    pairs += labelled(flipped, "B")
    result = _run(content_rm, pairs, min_pairs=5)
    m = result.metrics
    assert m["n_multiply_labelled"] == 30 and m["n_split_pairs"] == 20    # both rows of the 10 split pairs
    assert m["inter_annotator_agreement"] == pytest.approx(20 / 30, abs=1e-4)
    assert m["accuracy_unanimous"] > m["accuracy_split"]
    assert len(result.evidence) == 10
    assert {row["votes"] for row in result.evidence} == {"A: response 1, B: response 2"}


def test_without_annotators_the_probe_skips_naming_the_flag(content_rm):
    result = _run(content_rm, synthetic_pairs(seed=2000, n=10, rule="content"), field=None)
    assert result.status is Status.SKIP and "--annotator-field" in result.summary


@pytest.mark.skipif(not PANDALM.is_file(), reason=f"real PandaLM data not found at {PANDALM} (../shared is only for developers and CI)")
def test_the_real_pandalm_panel_is_recognised_and_kappa_matches_statsmodels(content_rm):
    inter_rater = pytest.importorskip("statsmodels.stats.inter_rater")
    pairs = load_pairs(PANDALM)
    labels = panel_labels(pairs)
    assert labels is not None and labels.names == ["annotator1", "annotator2", "annotator3"]
    table, _ = inter_rater.aggregate_raters(np.array(labels.votes))
    assert fleiss_kappa(labels.votes) == pytest.approx(inter_rater.fleiss_kappa(table), abs=1e-12)
    raw = json.loads(PANDALM.read_text())
    kept = {p.row for p in pairs}
    # votes are read as the file has them, row for row
    assert all(labels.votes[i] == [raw[p.row - 1][f"annotator{k}"] for k in (1, 2, 3)] for i, p in enumerate(pairs))
    assert len(kept) == len(pairs)
    result = _run(content_rm, pairs[:120], field=None)
    assert result.metrics["annotator_kind"] == "panel" and result.metrics["n_annotators"] == 3
    assert result.metrics["top_annotator_share"] is None
    assert result.status in (Status.PASS, Status.WARN, Status.FAIL)
    assert 0 < result.metrics["inter_annotator_agreement"] < 1 and result.metrics["n_split_pairs"] > 0


def test_an_annotator_field_no_row_has_is_exit_2_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import rmaudit.modeling.loading as loading
    from helpers_train import small_pairs, write_pairs
    from probe_fixtures import trained_run
    from rmaudit.cli import main

    data = write_pairs(tmp_path / "pairs.jsonl", [{**row, "worker": "w1"} for row in small_pairs(4)])
    checkpoint = trained_run(3e-3)
    monkeypatch.setattr(loading, "load_reward_model", lambda *a, **k: pytest.fail("loaded a model"))
    code = main(["check", str(checkpoint), "--no-progress", "--data", str(data), "--annotator-field", "labeller",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "pairs.jsonl" in err and "labeller" in err and "worker" in err


def test_the_same_pair_from_two_annotators_survives_deduplication(tmp_path):
    from rmaudit.inputs import drop_duplicate_pairs

    base = synthetic_pairs(seed=2000, n=3, rule="content")
    rows = labelled(base, "A") + labelled(base, "B") + labelled(base[:1], "B")
    notes: dict = {}
    assert len(drop_duplicate_pairs(rows, "eval", notes, "annotator")) == 6 and notes["eval_duplicate_pairs_dropped"] == 1
    assert len(drop_duplicate_pairs(rows, "eval", {})) == 3
