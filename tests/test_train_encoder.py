"""`rmaudit train` on an encoder base (BERT, RoBERTa): the reward is read where every consumer
of the checkpoint will read it, the model's own forward through its pooler, as TRL's
RewardTrainer trains it; the checkpoint loads whole; truncation keeps the token the pooler
reads; a base with fewer learned positions than --max-length holds the pairs to them.

Before this, the trainer read an encoder at its last token, and the audit of its own
checkpoint failed: transformers loaded ``classifier.bias`` as missing, and every consumer that
runs the model's forward read the untrained pooler instead."""

from __future__ import annotations

import json

import pytest
import torch

import test_train_trl_parity as parity
from helpers_train import read_metrics, small_pairs, tiny_encoder_base_dir, write_pairs
from rmaudit.data.pairs import PreferencePair
from rmaudit.modeling.loading import load_reward_model
from rmaudit.modeling.pooling import scalar_head
from rmaudit.scoring import render
from rmaudit.train.config import build_config
from rmaudit.train.encode import encode_pairs, kept_leading_tokens
from rmaudit.train.recipe import BradleyTerryRecipe, train


def _config(tmp_path, data, base, **overrides):
    values = dict(base=str(base), data=str(data), out=str(tmp_path / "run"), dtype="float32", progress=False,
                  batch_size=4, lr=1e-3, log_every=1, warmup_ratio=0.0, eval_fraction=0.25, max_steps=4)
    values.update(overrides)
    return build_config(overrides=values)


def _own_forward(model, tokenizer, texts: list[str]) -> torch.Tensor:
    """Rewards as transformers reads them: the tokenizer's own batch, the model's own forward."""
    encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=True)
    with torch.no_grad():
        return model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits[:, 0].float()


def test_an_encoder_trains_step_for_step_as_trl_reward_trainer(tmp_path):
    """TRL's RewardTrainer runs an encoder's own forward; rmaudit's per-step loss matches it."""
    import copy

    rows = small_pairs(parity.PAIRS)
    data = write_pairs(tmp_path / "pairs.jsonl", rows)
    loaded = load_reward_model(tiny_encoder_base_dir("bert"), dtype=torch.float32, head_init="normal", seed=0)
    trl_model, trl_tokenizer = copy.deepcopy(loaded.model), copy.deepcopy(loaded.tokenizer)
    config = build_config(overrides=dict(
        data=str(data), out=str(tmp_path / "rmaudit"), eval_fraction=0.0, batch_size=parity.PAIRS,
        max_steps=parity.STEPS, lr=parity.LR, head_lr_mult=1.0, scheduler="linear", warmup_ratio=0.0,
        weight_decay=0.0, max_grad_norm=1.0, dtype="float32", log_every=1, progress=False))
    train(config, loaded=loaded)
    ours = [r["loss"] for r in read_metrics(tmp_path / "rmaudit")]
    theirs = parity._trl_losses(trl_model, trl_tokenizer, rows, tmp_path / "trl")
    assert ours == pytest.approx(theirs, abs=parity.TOLERANCE), json.dumps({"rmaudit": ours, "trl": theirs})
    assert ours[-1] < ours[0] - 0.05  # both really trained


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_an_encoder_checkpoint_loads_whole_and_reads_as_it_was_trained(tmp_path, family):
    from transformers import AutoModelForSequenceClassification

    data = write_pairs(tmp_path / "pairs.jsonl", small_pairs(16))
    recipe = BradleyTerryRecipe(_config(tmp_path, data, tiny_encoder_base_dir(family)))
    recipe.run()
    out = tmp_path / "run"
    manifest = json.loads((out / "rmaudit.json").read_text())
    assert manifest["pooling"] == "native" and manifest["run"]["prefix_sharing"] is False
    model, info = AutoModelForSequenceClassification.from_pretrained(out, output_loading_info=True)
    # every key the class expects, the head's bias included (kept at exactly 0, never trained)
    assert info["missing_keys"] == set() or not info["missing_keys"], info
    name, head = scalar_head(model)
    assert float(head.bias.detach()) == 0.0 and manifest["head"]["now"]["bias"] == 0.0
    # The trainer's last held-out reading is what transformers reads from the saved checkpoint.
    model.eval()
    pairs = list(recipe.eval_pairs)
    texts = ([render(recipe.tokenizer, p.chosen_messages()) for p in pairs]
             + [render(recipe.tokenizer, p.rejected_messages()) for p in pairs])
    rewards = _own_forward(model, recipe.tokenizer, texts)
    final_eval = read_metrics(out, "eval")[-1]
    assert float(rewards.mean()) == pytest.approx(final_eval["reward_mean"], abs=1e-4)
    n = len(pairs)
    assert float((rewards[:n] - rewards[n:]).mean()) == pytest.approx(final_eval["margin"], abs=1e-4)
    assert final_eval["reward_std"] > 0.05  # a trained head, not a constant


def test_the_audit_reads_an_rmaudit_trained_encoder_where_it_was_trained(tmp_path):
    import rmaudit

    data = write_pairs(tmp_path / "pairs.jsonl", small_pairs(16))
    train(_config(tmp_path, data, tiny_encoder_base_dir("bert"), max_steps=8))
    loaded = load_reward_model(tmp_path / "run")
    assert loaded.pooling == "native" and not loaded.head_origin["missing_keys"]
    result = rmaudit.check(tmp_path / "run", probes=["bias_term", "head_integrity", "consumer_readout"],
                           data=data, dtype="float32")
    assert result.probe("bias_term").status.value == "pass"
    assert result.probe("head_integrity").status.value == "pass"
    readout = result.probe("consumer_readout")
    assert readout.metrics["trained_readout"] == "transformers"
    by_metric = {f.metric: f for f in readout.findings}
    assert by_metric["trl-grpo:pearson"].value == pytest.approx(1.0, abs=1e-6)  # the model's own forward
    # consumers that apply the head at the last token cannot read an encoder's pooler: said so, not a
    # template fix that cannot help
    advice = " ".join(f.message for f in readout.findings if (f.metric or "").startswith("openrlhf:"))
    assert "runs its own forward" in advice and "from the chat template" not in advice


def test_truncation_keeps_the_token_an_encoder_pools_and_its_positions_bound_the_length(tmp_path, capsys):
    """A prompt cut from the left keeps the leading special token an encoder's pooler reads; a
    base with 48 learned positions holds --max-length 1024 to 48 rather than crash a step."""
    base = tiny_encoder_base_dir("bert", positions=48)
    rows = [dict(r, prompt=r["prompt"] + " Please explain every step slowly and carefully." * 3)
            for r in small_pairs(16)]
    data = write_pairs(tmp_path / "pairs.jsonl", rows)
    config = _config(tmp_path, data, base, truncation="truncate", max_steps=1, progress=True)
    recipe = BradleyTerryRecipe(config)
    recipe.run()
    assert recipe.max_length == 48 and "--max-length 1024 held to the 48 positions bert has" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "rmaudit.json").read_text())["max_length"] == 48
    assert recipe.train_lengths.truncated > 0
    first = {recipe.tokenizer(render(recipe.tokenizer, [{"role": "user", "content": "x"}]))["input_ids"][0]}
    for pair in recipe.train_encoded:
        assert len(pair.chosen_ids) <= 48 and len(pair.rejected_ids) <= 48
        assert {pair.chosen_ids[0], pair.rejected_ids[0]} == first


def test_kept_leading_tokens_differ_by_readout():
    """A decoder's truncation keeps only a BOS (its reward is read at the end); an encoder's keeps
    every special token that can open a text."""
    loaded = load_reward_model(tiny_encoder_base_dir("bert"), dtype=torch.float32, head_init="normal")
    tokenizer = loaded.tokenizer
    special = set(tokenizer.all_special_ids)
    assert kept_leading_tokens(tokenizer, "native") >= special
    assert kept_leading_tokens(tokenizer, "mask") == frozenset({tokenizer.bos_token_id} - {None})
    long_prompt = "word " * 200
    pair = PreferencePair(prompt=[{"role": "user", "content": long_prompt}], chosen="yes", rejected="no", row=1)
    encoded, report = encode_pairs(tokenizer, [pair], 64, "truncate", keep_first=kept_leading_tokens(tokenizer, "native"))
    (kept,) = list(encoded)
    full = tokenizer(render(tokenizer, pair.chosen_messages()))["input_ids"]
    assert report.truncated == 1 and kept.chosen_ids[0] == full[0] and kept.chosen_ids[-8:] == full[-8:]
