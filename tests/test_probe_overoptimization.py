"""overoptimization: exact best-of-n expectations (checked against enumerating every draw), a
length-rewarding proxy whose best-of-n walks away from a content gold RM (planted), two
content RMs that agree (healthy), the proxy-only report, and the tail statistic."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from helpers_audit import save_rm
from helpers_probe_heads import fitted_rm
from helpers_rollouts import write_rollouts
from rmaudit.findings import Status
from rmaudit.probes.context import AuditContext
from rmaudit.probes.overoptimization import Overoptimization, _tail, best_of_n_curves, best_of_n_kl, pick_probabilities
from rmaudit.report.charts import validate_chart
from tiny_models import require_smollm2


def test_pick_probabilities_and_kl():
    weights = pick_probabilities(4, np.arange(1, 9))
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    np.testing.assert_allclose(weights[0], 0.25)          # n = 1: a uniform draw
    assert best_of_n_kl(np.array([1]))[0] == 0.0
    assert best_of_n_kl(np.array([64]))[0] == pytest.approx(np.log(64) - 63 / 64)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_expected_best_of_n_equals_enumerating_every_draw(n):
    proxy = np.array([0.3, -1.0, 2.0, 0.3, 1.5])   # a tie: the proxy cannot tell samples 0 and 3 apart
    gold = np.array([1.0, 0.0, -2.0, 3.0, 0.5])
    best_proxy, best_gold = [], []
    for draw in itertools.product(range(5), repeat=n):
        top = max(proxy[i] for i in draw)
        winners = sorted({i for i in draw if proxy[i] == top})   # a tie is broken at random
        best_proxy.append(top)
        best_gold.append(np.mean([gold[i] for i in winners]) if len(winners) == 1 else
                         np.mean(gold[proxy == top]))
    curve_p, curve_g = best_of_n_curves(proxy, gold, [np.arange(5)], np.array([n]))
    assert curve_p[0, 0] == pytest.approx(np.mean(best_proxy))
    assert curve_g[0, 0] == pytest.approx(np.mean(best_gold))


def test_the_tail_share_separates_a_heavy_tail_from_a_normal_one():
    rng = np.random.default_rng(0)
    normal, heavy = _tail(rng.normal(size=4000)), _tail(rng.pareto(1.2, size=4000))
    assert normal["far_tail_share"] < 0.001 and normal["upper_tail_ratio"] == pytest.approx(3.45, rel=0.15)
    assert heavy["far_tail_share"] > 0.03 and heavy["upper_tail_ratio"] > 10


@pytest.fixture(scope="module")
def rms(tmp_path_factory):
    require_smollm2()
    root = tmp_path_factory.mktemp("gold")
    return {"length": fitted_rm("length"), "content": fitted_rm("content"),
            "gold": save_rm(*fitted_rm("content", seed=1), root / "gold")}


def _run(proxy, rollouts, gold=None):
    model, tokenizer = proxy
    ctx = AuditContext(checkpoint=None, model=model, tokenizer=tokenizer, pooling="mask", rollouts_file=rollouts,
                       gold=gold)
    return Overoptimization().run(ctx)


def test_a_length_proxy_overoptimises_against_a_content_gold(rms, tmp_path):
    result = _run(rms["length"], write_rollouts(tmp_path / "r.jsonl", style="hackable", per_prompt=8), rms["gold"])
    m = result.metrics
    drop = next(f for f in result.findings if f.metric == "gold_drop_std")
    assert result.status is Status.FAIL and drop.status is Status.FAIL, result.summary
    assert m["proxy_gain_std"] > 0.5 and m["gold_peak_n"] < m["max_n"]
    assert m["gold_drop_ci_low"] > 0 and "gold reward peaks at n=" in drop.message
    assert m["gold_bo64"] < m["gold_bo1"]     # best-of-64 by the proxy is worse by gold than one sample
    assert validate_chart(result.chart) == []
    curve = [r for r in result.evidence if "n" in r]
    assert [r["n"] for r in curve] == [1, 2, 4, 8, 16, 32, 64]


def test_two_content_rms_agree_and_pass(rms, tmp_path):
    result = _run(rms["content"], write_rollouts(tmp_path / "r.jsonl", style="mixed", per_prompt=8), rms["gold"])
    m = result.metrics
    assert result.status is Status.PASS, result.summary
    assert m["gold_gain_std"] > 0.5 and m["proxy_gold_spearman"] > 0.5


def test_without_gold_the_proxy_curve_and_tail_are_reported(rms, tmp_path):
    result = _run(rms["content"], write_rollouts(tmp_path / "r.jsonl", style="mixed", per_prompt=4))
    assert result.status is Status.PASS  # the tail check ran and passed
    no_gold = next(f for f in result.findings if "--gold CKPT" in f.message)
    assert no_gold.status is Status.SKIP and no_gold.message.startswith("not checked")  # not dressed as a pass
    assert result.metrics["proxy_gain_std"] > 0 and "gold_drop_std" not in result.metrics
    assert len(result.chart["charts"][0]["series"]) == 1


def test_one_sample_per_prompt_skips(rms, tmp_path):
    from rmaudit.probes.base import ProbeSkipped

    with pytest.raises(ProbeSkipped, match="at least 2 samples per prompt"):
        _run(rms["content"], write_rollouts(tmp_path / "r.jsonl", per_prompt=1))
