"""RmauditCallback inside a real trl.RewardTrainer loop on a tiny model: at each evaluation
the probes run on the live model and their metrics land in the trainer's log. Trained on
pairs where the longer answer always wins, length_bias is caught during training."""

from __future__ import annotations

import pytest
import torch

from helpers_probe_heads import synthetic_pairs
from helpers_train import tiny_base_dir
from rmaudit.integrations import RmauditCallback, flat_metrics
from rmaudit.modeling.loading import load_reward_model
from tiny_models import require_smollm2


def _conversational(pairs):
    return [{"prompt": p.prompt, "chosen": [{"role": "assistant", "content": p.chosen}],
             "rejected": [{"role": "assistant", "content": p.rejected}]} for p in pairs]


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """The Trainer's Accelerator state is a process-wide singleton; later tests must not inherit it."""
    yield
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(True)
    PartialState._reset_state()


def test_callback_runs_probes_at_each_evaluation_of_a_trl_reward_trainer(tmp_path):
    require_smollm2()
    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    loaded = load_reward_model(tiny_base_dir(), dtype=torch.float32, head_init="normal", seed=0)
    train = synthetic_pairs(seed=1, n=64, rule="length")      # the planted pathology: longer always wins
    held_out = synthetic_pairs(seed=1000, n=40, rule="content")  # lengths independent of the label
    callback = RmauditCallback(eval_pairs=held_out, probes=["length_bias", "accuracy"], max_pairs=40)
    args = trl.RewardConfig(
        output_dir=str(tmp_path / "trl"), per_device_train_batch_size=8, max_steps=24, learning_rate=3e-3,
        eval_strategy="steps", eval_steps=12, per_device_eval_batch_size=8, logging_steps=4, report_to="none",
        save_strategy="no", use_cpu=True, seed=0, disable_dropout=True, max_length=None, bf16=False,
    )
    trainer = trl.RewardTrainer(model=loaded.model, args=args, processing_class=loaded.tokenizer,
                                train_dataset=datasets.Dataset.from_list(_conversational(train)),
                                eval_dataset=datasets.Dataset.from_list(_conversational(held_out[:16])),
                                callbacks=[callback])
    trainer.train()

    assert len(callback.results) == 2
    logged = [entry for entry in trainer.state.log_history if "rmaudit/length_bias/r2" in entry]
    assert [entry["step"] for entry in logged] == [12, 24]
    last = callback.results[-1].probe("length_bias")
    assert last.status.value == "fail" and logged[-1]["rmaudit/length_bias/status"] == 2.0
    assert logged[-1]["rmaudit/length_bias/r2"] == last.metrics["r2"] >= 0.3
    assert logged[-1]["rmaudit/gate_failed"] == 1.0
    assert callback.results[-1].context["pooling"] == "native"  # read as TRL trains it: the model's own forward
    loaded.model.train()
    callback.audit(loaded.model, loaded.tokenizer)
    assert loaded.model.training  # an audit between training steps leaves the model as it found it
    again = trainer.evaluate()  # the returned metrics carry the probes too
    assert again["rmaudit/length_bias/r2"] == pytest.approx(flat_metrics(callback.results[-1])["rmaudit/length_bias/r2"])
