"""Reward models saved by OpenRLHF's RM trainer are audited with their trained head.

OpenRLHF (not installable here: it needs DeepSpeed and Ray) saves its reward model as a
``*PreTrainedModel`` subclass named ``RewardModel`` (``openrlhf/models/model.py``,
``_get_reward_model``): the base model under ``base_model_prefix``, a bias-free
``Linear(hidden, 1)`` under ``value_head_prefix`` ("score" now, "value_head" in older
versions; ``openrlhf/cli/train_rm.py`` writes it into the config), and the eval rewards' mean
and std in the config (``openrlhf/trainer/rm_trainer.py``). ``save_pretrained`` records the
architecture as "RewardModel". :func:`openrlhf_style_checkpoint` writes that layout with
transformers' own ``save_pretrained``. Such a folder was refused as "not a reward model";
with a head named other than the class's own, it would have been read with a random one.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from helpers_audit import TOPICS, topic_pairs
from helpers_probe import run_configured
from rmaudit.cli import main
from rmaudit.modeling.loading import load_reward_model
from rmaudit.modeling.pooling import last_token_index
from rmaudit.probes.consumer_readout import ConsumerReadout
from rmaudit.probes.context import AuditContext
from rmaudit.probes.head_integrity import HeadIntegrity
from rmaudit.scoring import pad_batch, score_texts, tokenize_rendered
from tiny_models import require_smollm2, tiny_config, tiny_tokenizer

PAIRS = topic_pairs(TOPICS[:12])


def openrlhf_style_checkpoint(folder, prefix: str = "score", *, record_prefix: bool = True, head: bool = True):
    """(folder, the model as OpenRLHF holds it): OpenRLHF's reward-model layout, saved by transformers."""
    from transformers import LlamaModel, LlamaPreTrainedModel

    class RewardModel(LlamaPreTrainedModel):  # the class name save_pretrained records
        def __init__(self, config):
            super().__init__(config)
            self.model = LlamaModel(config)
            if head:
                setattr(self, prefix, nn.Linear(config.hidden_size, 1, bias=False))
            self.post_init()

        def reward(self, input_ids, attention_mask):
            """OpenRLHF's readout: the head at the last attention-mask position, positions from the mask."""
            positions = attention_mask.long().cumsum(-1) - 1
            positions.masked_fill_(attention_mask == 0, 1)
            hidden = self.model(input_ids, attention_mask=attention_mask, position_ids=positions).last_hidden_state
            values = getattr(self, prefix)(hidden).squeeze(-1)
            return values.gather(1, last_token_index(attention_mask)[:, None]).squeeze(1)

    tokenizer = tiny_tokenizer()
    config = tiny_config(tokenizer)
    config.architectures = None
    torch.manual_seed(1)
    model = RewardModel(config).eval()
    if head:
        with torch.no_grad():
            getattr(model, prefix).weight.normal_(0.0, 1.0)
    if record_prefix:
        model.config.value_head_prefix = prefix
    model.config.normalize_reward = False
    model.config.mean, model.config.std = 0.25, 1.5
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["RewardModel"]
    return folder, model


@pytest.mark.parametrize("prefix, record_prefix", [("score", True), ("value_head", True), ("value_head", False)])
def test_an_openrlhf_reward_model_loads_with_its_trained_head(tmp_path, prefix, record_prefix):
    require_smollm2()
    folder, theirs = openrlhf_style_checkpoint(tmp_path / "rm", prefix, record_prefix=record_prefix)
    loaded = load_reward_model(folder)
    assert loaded.head_origin["source"] == "checkpoint" and loaded.head_origin["trainer"] == "openrlhf"
    assert loaded.head_origin["missing_keys"] == []
    assert loaded.pooling == "mask"
    assert any(f"head read from {prefix}.weight" in note and "(reward - 0.25) / 1.5" in note for note in loaded.notes)
    texts = [loaded.tokenizer.apply_chat_template(p.chosen_messages(), tokenize=False) for p in PAIRS[:6]]
    ids, mask = pad_batch(tokenize_rendered(loaded.tokenizer, texts)[0], loaded.tokenizer.pad_token_id, "left")
    with torch.no_grad():
        expected = theirs.reward(ids, mask).numpy()

    ours = score_texts(loaded.model, loaded.tokenizer, texts).rewards
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)


def test_an_openrlhf_reward_model_is_audited_against_openrlhfs_readout(tmp_path):
    require_smollm2()
    folder, _ = openrlhf_style_checkpoint(tmp_path / "rm", "value_head")
    loaded = load_reward_model(folder)
    ctx = AuditContext(checkpoint=folder, model=loaded.model, tokenizer=loaded.tokenizer, eval_pairs=PAIRS,
                       pooling=loaded.pooling, head_origin=loaded.head_origin)
    head = run_configured(HeadIntegrity, ctx)
    assert head.metrics["head_source"] == "checkpoint" and head.metrics["missing_head_keys"] == []
    readout = run_configured(ConsumerReadout, ctx)
    assert readout.metrics["trained_readout"] == "openrlhf", readout.summary
    assert "openrlhf:pearson" not in readout.metrics  # the reference itself


def test_a_reward_model_class_without_its_head_is_still_refused(tmp_path, capsys):
    require_smollm2()
    folder, _ = openrlhf_style_checkpoint(tmp_path / "rm", head=False)
    code = main(["check", str(folder), "--no-progress", "--probes", "accuracy", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "RewardModel is not a reward model" in err and not (tmp_path / "out").exists()
