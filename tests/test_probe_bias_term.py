"""bias_term: a `score.bias` planted in the safetensors of a real tiny Llama reward model
(transformers drops it on load), drift from the manifest's init bias, a head whose bias
does load (BERT), sharded and pickle-only checkpoints; healthy twins pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers_probe import run_configured
from rmaudit.data import builtin_demo_pairs
from rmaudit.modeling.loading import load_reward_model
from rmaudit.modeling.manifest import Manifest
from rmaudit.modeling.weight_files import safetensors_files
from rmaudit.probes.bias_term import BiasTerm, read_head_biases
from rmaudit.probes.context import AuditContext
from rmaudit.report.charts import validate_chart
from rmaudit.results import Status
from tiny_models import make_tiny_rm, tiny_bert_rm


def _audit(folder: Path, *, load: bool = True, manifest: dict | None = None, **thresholds):
    """Run the probe the way `rmaudit check` does: the real loader, real held-out pairs."""
    ctx = AuditContext(checkpoint=folder, manifest=_typed(manifest), eval_pairs=builtin_demo_pairs()[:24])
    if load:
        loaded = load_reward_model(folder)
        ctx.model, ctx.tokenizer = loaded.model, loaded.tokenizer
        ctx.manifest = _typed(manifest) if manifest is not None else loaded.manifest
    return run_configured(BiasTerm, ctx, **thresholds), ctx


def _typed(manifest: dict | None) -> Manifest | None:
    return Manifest.from_dict(manifest) if manifest is not None else None


def _record_head(folder: Path, initial_bias: float | None) -> dict:
    """Write the trainer's head record into the checkpoint's rmaudit.json."""
    path = folder / "rmaudit.json"
    manifest = json.loads(path.read_text())
    manifest["head"] = {"init": "normal", "bias": initial_bias is not None, "initial_bias": initial_bias}
    path.write_text(json.dumps(manifest))
    return manifest


def test_score_bias_dropped_on_load_fails_loudly(tmp_path):
    folder = make_tiny_rm(tmp_path / "rm", head_bias=0.75)

    result, ctx = _audit(folder)

    assert getattr(ctx.model.score, "bias", None) is None  # transformers really dropped it
    assert result.status is Status.FAIL
    assert "score.bias" in result.summary and "dropped" in result.summary
    assert result.metrics["file_bias"] == pytest.approx(0.75)
    assert result.metrics["loaded_bias"] is None
    assert result.metrics["served_minus_trained"] == pytest.approx(-0.75)
    assert result.metrics["bias_std_units"] == pytest.approx(0.75 / ctx.reward_std(), rel=1e-3)
    row = result.evidence[0]
    assert (row["key"], row["file"], row["loaded_value"]) == ("score.bias", "model.safetensors", None)
    assert validate_chart(result.chart) == []
    json.dumps(result.to_dict(), allow_nan=False)  # the report writes strict JSON


def test_checkpoint_without_bias_passes(tmp_path):
    result, ctx = _audit(make_tiny_rm(tmp_path / "rm"))

    assert result.status is Status.PASS, result.summary
    assert result.metrics["file_bias"] is None and result.metrics["loaded_bias"] is None
    assert result.evidence == []
    assert result.metrics["reference_mean_reward"] == pytest.approx(float(ctx.reference_rewards().mean()), abs=1e-5)


def test_manifest_init_bias_differing_from_the_file_is_drift(tmp_path):
    folder = make_tiny_rm(tmp_path / "rm", head_bias=0.3, manifest=True)
    manifest = _record_head(folder, initial_bias=0.1)

    static, _ = _audit(folder, load=False, manifest=manifest)
    assert static.status is Status.FAIL
    assert "drifted from 0.1" in static.summary
    assert static.metrics["drift"] == pytest.approx(0.2, abs=1e-6)

    loaded, _ = _audit(folder)  # with the model, the drop on load is reported too
    assert loaded.status is Status.FAIL
    assert "drifted" in loaded.summary and "dropped" in loaded.summary


def test_manifest_init_bias_equal_to_the_file_is_no_drift(tmp_path):
    folder = make_tiny_rm(tmp_path / "rm", head_bias=0.3, manifest=True)
    manifest = _record_head(folder, initial_bias=0.3)

    result, _ = _audit(folder, load=False, manifest=manifest)

    # Present but never moved: a warning (the convention is bias=False), not a failure.
    assert result.status is Status.WARN, result.summary
    assert result.metrics["drift"] == pytest.approx(0.0, abs=1e-6)


def test_bias_added_although_the_manifest_says_the_head_had_none(tmp_path):
    folder = make_tiny_rm(tmp_path / "rm", head_bias=0.2, manifest=True)
    result, _ = _audit(folder, load=False, manifest=_record_head(folder, initial_bias=None))
    assert result.status is Status.FAIL
    assert "without a bias" in result.summary


def _tiny_bert_rm(folder: Path, bias: float) -> Path:
    """A real BertForSequenceClassification (its classifier keeps a bias on load)."""
    model, tokenizer = tiny_bert_rm(head_std=0.02)
    with torch.no_grad():
        model.classifier.bias.fill_(bias)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def test_bias_that_loads_and_never_moved_warns_with_its_reward_offset(tmp_path):
    folder = _tiny_bert_rm(tmp_path / "bert", bias=2.0)

    result, ctx = _audit(folder)

    assert float(ctx.model.classifier.bias.detach()) == pytest.approx(2.0)
    assert result.status is Status.WARN, result.summary
    assert result.metrics["file_bias_key"] == "classifier.bias"
    assert result.metrics["loaded_bias"] == pytest.approx(2.0)
    assert result.metrics["served_minus_trained"] == 0.0
    mean = float(ctx.reference_rewards().mean())
    assert result.metrics["reference_mean_reward"] == pytest.approx(mean, abs=1e-5)
    assert result.metrics["reference_mean_reward_without_bias"] == pytest.approx(mean - 2.0, abs=1e-5)
    assert result.chart["categories"][:2] == ["bias in weight file", "bias in loaded model"]
    assert result.chart["series"][0]["values"][:2] == pytest.approx([2.0, 2.0])
    assert validate_chart(result.chart) == []


def test_loaded_value_differing_from_the_file_fails(tmp_path):
    folder = _tiny_bert_rm(tmp_path / "bert", bias=0.5)
    loaded = load_reward_model(folder)
    with torch.no_grad():
        loaded.model.classifier.bias.fill_(-0.5)  # something rewrote the head after loading
    ctx = AuditContext(checkpoint=folder, model=loaded.model, tokenizer=loaded.tokenizer,
                       eval_pairs=builtin_demo_pairs()[:8])
    result = run_configured(BiasTerm, ctx)
    assert result.status is Status.FAIL and "differs from the file" in result.summary


def test_sharded_checkpoint_is_read_through_its_index(tmp_path):
    from safetensors.torch import load_file, save_file

    model_dir = make_tiny_rm(tmp_path / "single")
    model, _ = load_reward_model(model_dir).model, None
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, safe_serialization=True, max_shard_size="100KB")
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    shard = index["weight_map"]["score.weight"]
    tensors = load_file(sharded / shard)
    tensors["score.bias"] = torch.tensor([-1.25])
    save_file(tensors, sharded / shard, metadata={"format": "pt"})
    index["weight_map"]["score.bias"] = shard
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))

    assert len(safetensors_files(sharded)) > 1
    biases = read_head_biases(sharded)
    assert [(b.key, b.file, b.values) for b in biases] == [("score.bias", shard, [-1.25])]
    result, _ = _audit(sharded, load=False)
    assert result.status is Status.WARN and result.metrics["file_bias"] == pytest.approx(-1.25)


def test_pickle_only_checkpoint_is_not_unpickled_and_warns(tmp_path):
    folder = tmp_path / "bin"
    folder.mkdir()
    torch.save({"score.weight": torch.zeros(1, 4), "score.bias": torch.ones(1)}, folder / "pytorch_model.bin")
    result, _ = _audit(folder, load=False)
    assert result.status is Status.WARN
    assert "pickle" in result.summary and result.metrics["weights_format"] == "pickle"


def test_intermediate_classifier_biases_are_listed_not_graded(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = make_tiny_rm(tmp_path / "rm")
    tensors = load_file(folder / "model.safetensors")
    tensors["classifier.dense.bias"] = torch.full((32,), 3.0)  # a hidden layer of a classifier block
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    result, _ = _audit(folder, load=False)
    assert result.status is Status.PASS, result.summary
    assert result.evidence[0]["key"] == "classifier.dense.bias" and result.evidence[0]["reward_offset"] is False


def test_skips_without_weights_or_model(tmp_path):
    result, _ = _audit(tmp_path, load=False)
    assert result.status is Status.SKIP and "no safetensors" in result.summary


def test_a_model_loaded_in_bfloat16_keeps_its_file_bias(tmp_path):
    """bf16 rounding of a loaded bias (0.3 -> 0.30078) is not a load mismatch."""
    folder = _tiny_bert_rm(tmp_path / "bert", bias=0.3)
    loaded = load_reward_model(folder, dtype=torch.bfloat16)
    ctx = AuditContext(checkpoint=folder, model=loaded.model, tokenizer=loaded.tokenizer, dtype=torch.bfloat16,
                       eval_pairs=builtin_demo_pairs()[:8])
    result = run_configured(BiasTerm, ctx)
    assert result.metrics["loaded_bias"] != pytest.approx(0.3, abs=1e-4)
    assert result.status is Status.WARN, result.summary
