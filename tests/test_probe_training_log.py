"""training_log: real rmaudit runs (one that learned, one whose learning rate was a typo), a
real trl.RewardTrainer output folder (the peer's own trainer_state.json), and planted log
defects - NaN, a gradient-norm spike, accuracy flat while the loss falls - and recorded
settings (clipping off, dropout on)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch

from helpers_probe import run_configured
from helpers_train import small_pairs, tiny_base_dir
from probe_fixtures import trained_run
from rmaudit.modeling.loading import load_reward_model
from rmaudit.modeling.manifest import read_manifest, write_manifest
from rmaudit.probes.context import AuditContext
from rmaudit.probes.training_log import TrainingLog, find_log, read_curves
from rmaudit.report.charts import validate_chart
from rmaudit.results import Status

TRL_STEPS = 8


def _audit(folder: Path, **overrides):
    ctx = AuditContext(checkpoint=folder, manifest=read_manifest(folder))
    return run_configured(TrainingLog, ctx, **overrides)


def _finding(result, metric):
    return next(f for f in result.findings if f.metric == metric)


@pytest.fixture(scope="module")
def trl_output(tmp_path_factory) -> Path:
    """A real TRL RewardTrainer output_dir with checkpoint-*/trainer_state.json."""
    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    out = tmp_path_factory.mktemp("trl") / "out"
    loaded = load_reward_model(tiny_base_dir(), dtype=torch.float32, seed=0)
    rows = small_pairs(16)
    data = [{"prompt": [{"role": "user", "content": r["prompt"]}], "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows]
    args = trl.RewardConfig(output_dir=str(out), per_device_train_batch_size=4, max_steps=TRL_STEPS, learning_rate=3e-3,
                            logging_steps=1, save_strategy="steps", save_steps=TRL_STEPS // 2, report_to="none",
                            use_cpu=True, bf16=False, seed=0, max_length=None)
    trl.RewardTrainer(model=copy.deepcopy(loaded.model), args=args, train_dataset=datasets.Dataset.from_list(data),
                      processing_class=copy.deepcopy(loaded.tokenizer)).train()
    return out


def test_a_run_that_learned_passes_and_charts_its_curves():
    result = _audit(trained_run(3e-3))
    assert result.status is Status.PASS, result.summary
    assert result.metrics["log_file"].endswith("metrics.jsonl") and result.metrics["n_train_records"] == 24
    assert result.metrics["loss_drop"] > 0.03 and result.metrics["nonfinite_records"] == 0
    assert any(f.metric == "max_grad_norm" and f.status is Status.PASS for f in result.findings)
    assert not validate_chart(result.chart)
    titles = [c["title"] for c in result.chart["charts"]]
    assert titles == ["Bradley-Terry loss", "Pair accuracy", "Gradient norm"]
    loss = result.chart["charts"][0]
    assert [s["name"] for s in loss["series"]] == ["train", "eval"] and len(loss["series"][0]["x"]) == 24


def test_a_run_that_never_learned_fails_with_the_loss_in_the_reason():
    result = _audit(trained_run(1e-12))
    assert result.status is Status.FAIL
    # The random head put the loss a little under log 2; it stayed there.
    finding = _finding(result, "loss_fall")
    assert finding.status is Status.FAIL and "did not learn" in finding.message and "near log 2" in finding.message
    assert abs(result.metrics["final_loss"] - 0.6931) < 0.05 and abs(result.metrics["loss_fall"]) < 0.005


def test_a_real_trl_output_folder_is_read_from_its_newest_checkpoint(trl_output):
    path = find_log(trl_output)
    assert path == trl_output / f"checkpoint-{TRL_STEPS}" / "trainer_state.json"
    curves = read_curves(path)
    history = json.loads(path.read_text())["log_history"]
    assert len(curves.train) == sum("loss" in r for r in history) == TRL_STEPS
    assert [r["lr"] for r in curves.train] == [r["learning_rate"] for r in history if "loss" in r]
    assert all("accuracy" in r and "grad_norm" in r for r in curves.train)   # TRL's own metric names
    result = _audit(trl_output)
    assert result.status in (Status.PASS, Status.WARN) and result.metrics["loss_drop"] > 0.01
    # trainer_state.json records no clipping; TRL's training_args.bin is a pickle and stays unread
    assert any("not recorded" in f.message for f in result.findings)


def _edited_trl_state(trl_output: Path, tmp_path: Path, edit) -> Path:
    folder = tmp_path / "ckpt"
    shutil.copytree(trl_output / f"checkpoint-{TRL_STEPS}", folder)
    state = json.loads((folder / "trainer_state.json").read_text())
    edit(state["log_history"])
    (folder / "trainer_state.json").write_text(json.dumps(state))
    return folder


def test_nan_loss_and_a_grad_norm_spike_in_a_trl_log_fail(trl_output, tmp_path):
    def plant(history):
        train = [r for r in history if "loss" in r]
        train[2]["loss"] = float("nan")          # Python's json writes NaN, as the Trainer does
        train[5]["grad_norm"] = 400.0 * train[4]["grad_norm"]

    result = _audit(_edited_trl_state(trl_output, tmp_path, plant))
    assert result.status is Status.FAIL
    nan = _finding(result, "nonfinite_records")
    assert nan.status is Status.FAIL and nan.value == 1 and "first at step 3" in nan.message
    spike = _finding(result, "grad_norm_spike")
    assert spike.status is Status.FAIL and "at step 6" in spike.message


def test_a_loss_just_above_log_2_says_above_not_a_negative_below(trl_output, tmp_path):
    """12 TRL steps from an N(0, 0.02) head: the loss sat at 0.73 (found auditing such a run)."""
    def plant(history):
        for record in (r for r in history if "loss" in r):
            record.update(loss=0.7265)

    finding = _finding(_audit(_edited_trl_state(trl_output, tmp_path, plant)), "loss_drop")
    assert finding.status is Status.FAIL and "0.0334 above log 2" in finding.message
    assert "never left chance" in finding.message and "-0.0" not in finding.message


def test_a_loss_exactly_at_log_2_fails_as_never_left_chance(trl_output, tmp_path):
    """A constant reward (a head that reads padding, a zeroed head): every logged loss is log 2."""
    def plant(history):
        for record in (r for r in history if "loss" in r):
            record.update(loss=0.693147, accuracy=0.5, grad_norm=0.0)

    result = _audit(_edited_trl_state(trl_output, tmp_path, plant))
    finding = _finding(result, "loss_drop")
    assert result.status is Status.FAIL and finding.status is Status.FAIL and "never left chance" in finding.message


def test_accuracy_flat_while_the_loss_falls_warns(trl_output, tmp_path):
    def plant(history):
        train = [r for r in history if "loss" in r]
        for i, record in enumerate(train):
            record["loss"] = 0.69 - 0.05 * i      # falls by 0.3
            record["accuracy"] = 0.7              # but ranks no new pair right
            record["grad_norm"] = 1.0

    result = _audit(_edited_trl_state(trl_output, tmp_path, plant))
    finding = _finding(result, "accuracy_gain")
    assert finding.status is Status.WARN and "overconfidence" in finding.message
    assert result.status is Status.WARN


def test_clipping_off_and_dropout_on_in_the_manifest_warn(tmp_path):
    folder = shutil.copytree(trained_run(3e-3), tmp_path / "run")
    manifest = read_manifest(folder)
    manifest.hyperparameters["max_grad_norm"] = 0.0
    manifest.run["dropout"] = "p=0.1 in train mode"
    write_manifest(folder, manifest)
    result = _audit(folder)
    assert result.status is Status.WARN
    assert "clipping was disabled" in _finding(result, "max_grad_norm").message
    assert "different dropout masks" in _finding(result, "dropout").message


def test_a_checkpoint_without_a_log_skips_naming_what_it_looked_for(tmp_path):
    result = _audit(tmp_path)
    assert result.status is Status.SKIP and "metrics.jsonl" in result.summary and "trainer_state.json" in result.summary


def test_training_log_flag_names_a_log_kept_apart_from_the_weights(tmp_path, trl_output):
    ctx = AuditContext(checkpoint=tmp_path, training_log=trained_run(1e-12) / "metrics.jsonl")
    result = run_configured(TrainingLog, ctx)
    assert result.status is Status.FAIL and result.metrics["log_file"].endswith("metrics.jsonl")
    ctx = AuditContext(checkpoint=tmp_path, training_log=trl_output / f"checkpoint-{TRL_STEPS}" / "trainer_state.json")
    assert run_configured(TrainingLog, ctx).metrics["n_train_records"] == TRL_STEPS


def test_an_unreadable_training_log_is_exit_2_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import rmaudit.modeling.loading as loading
    from rmaudit.cli import main

    bad = tmp_path / "trainer_state.json"
    bad.write_text("{not json")
    checkpoint = trained_run(3e-3)
    monkeypatch.setattr(loading, "load_reward_model", lambda *a, **k: pytest.fail("loaded a model"))
    code = main(["check", str(checkpoint), "--no-progress", "--training-log", str(bad), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "trainer_state.json" in err and "log_history" in err


def test_rmaudit_trainer_state_reads_like_its_metrics_log(tmp_path):
    """rmaudit writes trainer_state.json in the Trainer's shape with eval records marked by
    ``kind``: read either file, the curves (and the verdict) are the same."""
    run = trained_run(3e-3)
    from_jsonl, from_state = read_curves(run / "metrics.jsonl"), read_curves(run / "trainer_state.json")
    assert from_state.train == from_jsonl.train and from_state.eval == from_jsonl.eval and from_state.eval
    folder = shutil.copytree(run, tmp_path / "copy", ignore=shutil.ignore_patterns("metrics.jsonl"))
    assert _audit(folder).metrics["loss_drop"] == _audit(run).metrics["loss_drop"]


@pytest.mark.parametrize("late_norm, status", [(3.0, Status.PASS), (2000.0, Status.FAIL)])
def test_a_norm_the_run_already_survived_is_no_spike_after_the_loss_saturated(trl_output, tmp_path, late_norm, status):
    """A small set memorised: the loss reaches 0 and the norms fall to 1e-4; one later norm
    below the early ones is no spike (the median before it is 1e-4), one far above them is."""
    def plant(history):
        train = [r for r in history if "loss" in r]
        last = max(r["step"] for r in train)
        history += [dict(train[-1], step=last + k) for k in range(1, 17)]  # 24 records: a window of 1e-4 norms
        train = [r for r in history if "loss" in r]
        for i, record in enumerate(train):
            record["grad_norm"] = [2.0, 5.0, 10.0][i] if i < 3 else 1e-4
            record["loss"] = 0.69 if i < 3 else 1e-6
        train[-2]["grad_norm"] = late_norm

    result = _audit(_edited_trl_state(trl_output, tmp_path, plant))
    spike = _finding(result, "grad_norm_spike")
    assert spike.status is status, spike.message


def test_a_loss_that_ends_above_log_2_fails_as_worse_than_chance_not_near_it(trl_output, tmp_path):
    """A run whose loss climbed to 2 (diverged, or ranks pairs backwards): the fail says the
    loss is ABOVE log 2, and the near-chance rule, which is about a loss that stayed at log 2,
    does not describe it."""
    def plant(history):
        for i, record in enumerate(r for r in history if "loss" in r):
            record["loss"] = 0.69 + 0.2 * i

    result = _audit(_edited_trl_state(trl_output, tmp_path, plant))
    finding = _finding(result, "loss_drop")
    assert result.status is Status.FAIL and finding.status is Status.FAIL
    assert "above log 2" in finding.message and "worse than a constant reward" in finding.message
    assert "never left chance" not in finding.message
    assert all(f.metric != "loss_fall" for f in result.findings)
