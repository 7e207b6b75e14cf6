"""Benjamini-Hochberg across one audit's findings: the same q-values as statsmodels, and a
fail that is not a discovery after adjustment cannot fail the gate on its own."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from rmaudit.findings import Finding, Status
from rmaudit.multiple_testing import control_false_discoveries
from rmaudit.results import AuditResult, ProbeResult
from rmaudit.stats import benjamini_hochberg, cluster_mean_test


@pytest.mark.parametrize("seed", range(5))
def test_q_values_match_statsmodels(seed):
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(size=30), rng.uniform(0, 0.01, size=5), [0.0, 1.0, 0.5, 0.5]])
    expected = multipletests(p, method="fdr_bh")[1]
    np.testing.assert_allclose(benjamini_hochberg(p), expected, rtol=1e-12)


def _probe(name, *p_values, status=Status.FAIL):
    findings = [Finding(status, f"effect {i}", f"m{i}", 1.0, 0.5, None, p) for i, p in enumerate(p_values)]
    return ProbeResult(name, status, "summary", findings)


def test_a_lone_borderline_fail_among_many_tests_is_lowered_to_warn():
    many_nulls = _probe("nulls", *np.linspace(0.2, 0.95, 19), status=Status.PASS)
    for finding in many_nulls.findings:
        finding.status = Status.PASS
    borderline = _probe("borderline", 0.02)   # significant alone, not after 20 tests (q = 0.4)
    facts = control_false_discoveries([many_nulls, borderline], fdr=0.05)
    finding = borderline.findings[0]
    assert finding.p_value == 0.02 and finding.p_adjusted == pytest.approx(0.4)
    assert finding.status is Status.WARN and "Benjamini-Hochberg across 20 tests" in finding.message
    assert borderline.status is Status.WARN
    assert AuditResult("ckpt", [many_nulls, borderline]).gate == "pass"
    assert AuditResult("ckpt", [many_nulls, borderline], fail_on=Status.WARN).gate == "fail"  # still visible
    assert "across 20 hypothesis tests" in facts["multiple_testing"]


def test_a_strong_effect_stays_a_fail():
    strong = _probe("strong", 1e-8)
    control_false_discoveries([strong, _probe("other", 0.5, status=Status.PASS)], fdr=0.05)
    assert strong.status is Status.FAIL and strong.findings[0].p_adjusted == pytest.approx(2e-8)


def test_findings_without_a_test_are_untouched():
    effect_only = ProbeResult("r2", Status.FAIL, "s", [Finding(Status.FAIL, "r2 high", "r2", 0.4, 0.3)])
    facts = control_false_discoveries([effect_only])
    assert effect_only.status is Status.FAIL and effect_only.findings[0].p_adjusted is None
    assert "nothing to adjust" in facts["multiple_testing"]


def test_p_values_round_trip_through_report_json():
    finding = Finding(Status.WARN, "m", "x", 1.0, 0.5, None, 0.01, 0.04)
    assert Finding.from_dict(finding.to_dict()) == finding
    assert "p_value" not in Finding(Status.PASS, "no test").to_dict()


def test_cluster_mean_test_counts_each_prompt_once():
    # 10 prompts, one with 50 copies of a large positive effect: pooled rows look decisive,
    # per-prompt means do not.
    values = np.concatenate([np.full(50, 3.0), [0.2, -0.3, 0.1, -0.2, 0.3, -0.1, 0.0, -0.25, 0.15]])
    clusters = np.concatenate([np.zeros(50), np.arange(1, 10)])
    assert cluster_mean_test(values, clusters) > 0.05
    assert cluster_mean_test(np.full(10, 0.0) + np.linspace(0.5, 1.0, 10), np.arange(10)) < 1e-6
