"""rmaudit diff: two real audits (a fitted head and the same head negated) compared from their
report.json files and from the checkpoint folders themselves; a regression exits 1, an
improvement 0, a side that is neither a report nor a checkpoint 2."""

from __future__ import annotations

import json

import pytest

from helpers_audit import TOPICS, fitted_tiny_rm, save_rm, scaled_head, topic_pairs, write_pairs_jsonl
from rmaudit.audit import check
from rmaudit.cli import main
from rmaudit.diff import diff_audits
from rmaudit.report import write_json


@pytest.fixture(scope="module")
def sides(tmp_path_factory):
    root = tmp_path_factory.mktemp("diff")
    model, tokenizer = fitted_tiny_rm(topic_pairs(TOPICS[:20]), shift=1.0)
    good = save_rm(model, tokenizer, root / "good")
    bad = save_rm(scaled_head(model, -1.0), tokenizer, root / "bad")
    data = write_pairs_jsonl(topic_pairs(TOPICS[20:]), root / "eval.jsonl")
    results = {name: check(path, probes=["accuracy", "reward_scale"], data=data) for name, path in (("good", good), ("bad", bad))}
    for name, result in results.items():
        write_json(result, root / f"{name}.json")
    return root, results, data


def test_a_negated_head_is_a_regression_with_the_metric_that_moved(sides):
    _, results, _ = sides
    diff = diff_audits(results["good"], results["bad"])
    accuracy = next(p for p in diff.probes if p.name == "accuracy")
    assert accuracy.change == "worse" and diff.regressed == ["accuracy"]
    row = next(m for m in accuracy.metrics if m.metric == "accuracy")
    assert row.before == 1.0 and row.after == 0.0 and row.delta == -1.0 and row.limit == 0.55  # the fail it crossed
    assert (row.before_status.value, row.after_status.value) == ("pass", "fail")
    scale = next(p for p in diff.probes if p.name == "reward_scale")
    assert scale.change == "same"      # negating the head changes no scale
    assert diff_audits(results["bad"], results["good"]).regressed == []


def test_the_cli_compares_reports_and_exits_on_regression(sides, capsys, tmp_path):
    root, _, _ = sides
    assert main(["diff", str(root / "good.json"), str(root / "bad.json"), "--json", str(tmp_path / "d.json")]) == 1
    out = capsys.readouterr().out
    assert "REGRESSED: accuracy" in out and "-1" in out
    written = json.loads((tmp_path / "d.json").read_text())
    assert written["regressed"] == ["accuracy"] and written["before"]["gate"] == "pass"
    assert main(["diff", str(root / "bad.json"), str(root / "good.json")]) == 0
    assert "no probe got worse" in capsys.readouterr().out


def test_the_cli_audits_two_checkpoints_with_the_same_options(sides, capsys):
    root, _, data = sides
    code = main(["diff", str(root / "good"), str(root / "bad"), "--probes", "accuracy", "--data", str(data), "--no-progress"])
    assert code == 1 and "REGRESSED: accuracy" in capsys.readouterr().out


def test_a_side_that_is_neither_report_nor_checkpoint_is_exit_2(tmp_path, capsys, sides):
    root, _, _ = sides
    assert main(["diff", str(tmp_path), str(root / "good.json")]) == 2
    assert "neither a report.json" in capsys.readouterr().err
