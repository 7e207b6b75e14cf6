"""Parity with the peer: rmaudit train and trl.RewardTrainer, same initial weights, data and hyperparameters,
give the same per-step loss.

TRL 1.16's RewardTrainer right-pads chosen and rejected into one batch, pools at the rightmost
non-pad token (the same position as rmaudit's mask pooling here: SmolLM2's ChatML turns end in
"<|im_end|>\\n", and "\\n" is not the pad token), takes the mean of -logsigmoid(r_c - r_r), uses AdamW
with a linear schedule and clips gradients at 1.0. Its extras are switched off (center_rewards_coefficient
None, dropout disabled as rmaudit does, no gradient checkpointing, float32). Every step uses all 8 pairs,
so the two trainers' different shuffles cannot make them see different data.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from helpers_train import read_metrics, small_pairs, tiny_base_dir, write_pairs
from rmaudit.modeling.loading import load_reward_model
from rmaudit.train.config import build_config
from rmaudit.train.recipe import train

STEPS, PAIRS, LR = 6, 8, 1e-3
TOLERANCE = 2e-5  # float32; the trainers sum the same numbers in different orders


def _trl_losses(model, tokenizer, rows, out_dir) -> list[float]:
    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    conversational = [{"prompt": [{"role": "user", "content": r["prompt"]}],
                       "chosen": [{"role": "assistant", "content": r["chosen"]}],
                       "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows]
    args = trl.RewardConfig(
        output_dir=str(out_dir), per_device_train_batch_size=PAIRS, max_steps=STEPS, learning_rate=LR,
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch",
        bf16=False, gradient_checkpointing=False, center_rewards_coefficient=None, disable_dropout=True,
        max_length=None, logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, seed=0,
    )
    trainer = trl.RewardTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(conversational),
                                processing_class=tokenizer)
    trainer.train()
    return [log["loss"] for log in trainer.state.log_history if "loss" in log]


def test_per_step_loss_matches_trl_reward_trainer(tmp_path):
    rows = small_pairs(PAIRS)
    data = write_pairs(tmp_path / "pairs.jsonl", rows)
    loaded = load_reward_model(tiny_base_dir(), dtype=torch.float32, head_init="normal", seed=0)
    trl_model = copy.deepcopy(loaded.model)
    trl_tokenizer = copy.deepcopy(loaded.tokenizer)
    config = build_config(overrides=dict(
        data=str(data), out=str(tmp_path / "rmaudit"), eval_fraction=0.0, batch_size=PAIRS, max_steps=STEPS,
        lr=LR, head_lr_mult=1.0, scheduler="linear", warmup_ratio=0.0, weight_decay=0.0, max_grad_norm=1.0,
        dtype="float32", log_every=1, progress=False))
    train(config, loaded=loaded)
    ours = [r["loss"] for r in read_metrics(tmp_path / "rmaudit")]
    theirs = _trl_losses(trl_model, trl_tokenizer, rows, tmp_path / "trl")
    assert len(ours) == len(theirs) == STEPS
    assert ours[0] == pytest.approx(theirs[0], abs=1e-6)  # same weights, same tokens, same pooling
    assert ours == pytest.approx(theirs, abs=TOLERANCE), json.dumps({"rmaudit": ours, "trl": theirs})
    assert ours[-1] < ours[0] - 0.05  # both really trained
