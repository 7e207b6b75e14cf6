"""The training recipe on a tiny random Llama with SmolLM2's real tokenizer: forward, resume, accumulation,
precision, gradient checkpointing, the run folder and its manifest."""

from __future__ import annotations

import json

import yaml

import pytest
import torch

from helpers_train import load_weights, read_metrics, small_pairs, tiny_base_dir, write_pairs
import rmaudit
from rmaudit.cli import main
from rmaudit.data import load_pairs, prompt_hash, split_by_prompt
from rmaudit.modeling.pooling import pooled_rewards
from rmaudit.train.config import build_config, read_config_file
from rmaudit.train.recipe import BradleyTerryRecipe, train


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("data") / "pairs.jsonl", small_pairs(16))


def _config(out, data, **overrides):
    values = dict(base=str(tiny_base_dir()), data=str(data), out=str(out), dtype="float32", progress=False,
                  batch_size=2, lr=1e-3, log_every=1, warmup_ratio=0.0, eval_fraction=0.25)
    values.update(overrides)
    return build_config(overrides=values)


def _setup(config) -> BradleyTerryRecipe:
    recipe = BradleyTerryRecipe(config)
    recipe.setup_run(), recipe.setup_data(), recipe.setup_model(), recipe.setup_optim()
    return recipe


def test_stacked_forward_equals_two_separate_forwards_in_eval(tmp_path, data_file):
    recipe = _setup(_config(tmp_path / "run", data_file, batch_size=4))
    batch = next(iter(recipe.train_loader))
    recipe.net.eval()
    with torch.no_grad():
        chosen, rejected = recipe.rewards(batch)
        for side, stacked in (("chosen", chosen), ("rejected", rejected)):
            mask = batch[f"{side}_mask"]
            width = int(mask.sum(1).max())  # each side padded only to its own longest row
            alone = pooled_rewards(recipe.model, batch[f"{side}_ids"][:, :width], mask[:, :width])
            torch.testing.assert_close(stacked, alone, rtol=1e-5, atol=1e-5)
    assert not torch.equal(chosen, rejected)


def test_head_bias_gets_zero_gradient_in_a_real_training_step(tmp_path, data_file):
    recipe = _setup(_config(tmp_path / "run", data_file, head_bias=True, batch_size=1))
    recipe.train_step(next(iter(recipe.train_loader)))
    head = recipe.model.score
    assert head.bias.grad.item() == 0.0
    assert head.weight.grad.abs().sum() > 0


class _Interrupted(Exception):
    pass


class _CrashAtStep(BradleyTerryRecipe):
    """A run that dies in the middle of training, after its step-3 checkpoint was written."""

    def after_step(self, *args):
        super().after_step(*args)
        if self.step == 5:
            raise _Interrupted


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, data_file):
    # 12 train pairs, batch 2, accumulation 2: 3 optimizer steps per epoch, so the run crosses epochs
    # and resumes mid-epoch; cosine schedule with warmup so the scheduler state matters.
    common = dict(grad_accum=2, max_steps=8, save_every=3, scheduler="cosine", warmup_ratio=0.25)
    full = train(_config(tmp_path / "full", data_file, **common))
    with pytest.raises(_Interrupted):
        _CrashAtStep(_config(tmp_path / "cut", data_file, **common)).run()
    assert (tmp_path / "cut" / "checkpoints" / "step-000003").is_dir()
    resumed = train(_config(tmp_path / "cut", data_file, resume=str(tmp_path / "cut"), **common))
    assert resumed.steps == full.steps == 8
    a, b = load_weights(tmp_path / "full"), load_weights(tmp_path / "cut")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    losses = lambda run: [(r["step"], r["loss"], r["lr"]) for r in read_metrics(tmp_path / run)]  # noqa: E731
    assert losses("full") == losses("cut")


def assert_same_weights_after_one_adam_step(run_a, run_b) -> None:
    a, b = load_weights(run_a), load_weights(run_b)
    for name in a:
        # Adam's first update is ~lr * g / (|g| + eps): where |g| is near eps, float rounding of g moves
        # the weight by up to ~1% of lr (1e-3), far below any real difference.
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)


def test_gradient_accumulation_equals_one_big_batch(tmp_path, data_file):
    four = write_pairs(tmp_path / "four.jsonl", small_pairs(4))
    big = train(_config(tmp_path / "big", four, eval_fraction=0.0, batch_size=4, max_steps=1))
    acc = train(_config(tmp_path / "acc", four, eval_fraction=0.0, batch_size=2, grad_accum=2, max_steps=1))
    assert big.train_metrics["loss"] == pytest.approx(acc.train_metrics["loss"], abs=1e-6)
    assert_same_weights_after_one_adam_step(tmp_path / "big", tmp_path / "acc")


def test_gradient_checkpointing_does_not_change_training(tmp_path, data_file):
    plain = train(_config(tmp_path / "plain", data_file, max_steps=2))
    ckpt = train(_config(tmp_path / "ckpt", data_file, max_steps=2, grad_checkpointing=True))
    assert plain.train_metrics["loss"] == pytest.approx(ckpt.train_metrics["loss"], abs=1e-6)
    assert_same_weights_after_one_adam_step(tmp_path / "plain", tmp_path / "ckpt")


def test_packed_rows_give_the_stacked_forwards_rewards_and_gradients(tmp_path, data_file):
    """The same batch through the plain stacked forward and through the packed row (the shared
    prompts once, each side's own tokens through tree attention): the same rewards and the same
    gradient on every parameter (float32, up to summation order)."""
    recipe = _setup(_config(tmp_path / "run", data_file, batch_size=4))
    assert recipe.share_prefixes, recipe.prefix_sharing_reason  # the default where the model allows it
    batch = next(iter(recipe.train_loader))
    assert bool((batch["shared"] > 0).all())
    results = []
    for share in (False, True):
        recipe.model.zero_grad(set_to_none=True)
        recipe.share_prefixes = share
        chosen, rejected = recipe.rewards(batch)
        (-torch.nn.functional.logsigmoid(chosen - rejected).mean()).backward()
        grads = {n: p.grad.clone() for n, p in recipe.model.named_parameters() if p.grad is not None}
        results.append((torch.cat([chosen, rejected]).detach(), grads))
    (plain, plain_grads), (shared, shared_grads) = results
    torch.testing.assert_close(shared, plain, rtol=1e-5, atol=1e-5)
    assert plain_grads.keys() == shared_grads.keys() and len(plain_grads) > 10
    for name, grad in plain_grads.items():
        torch.testing.assert_close(shared_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_packing_does_not_change_training_and_is_recorded(tmp_path, data_file):
    """One step over one batch of every training pair (the same batch whatever the grouping
    key), packed by default, with gradient checkpointing, and plain: the same loss and weights."""
    full = {"batch_size": 14, "max_steps": 1}  # 16 pairs less the 2 held out
    runs = {"packed": train(_config(tmp_path / "packed", data_file, **full)),
            "ckpt": train(_config(tmp_path / "ckpt", data_file, grad_checkpointing=True, **full)),
            "plain": train(_config(tmp_path / "plain", data_file, share_prefixes=False, **full))}
    for name in ("ckpt", "plain"):
        assert runs[name].train_metrics["loss"] == pytest.approx(runs["packed"].train_metrics["loss"], abs=1e-6)
        assert_same_weights_after_one_adam_step(tmp_path / "packed", tmp_path / name)
    record = {name: json.loads((tmp_path / name / "rmaudit.json").read_text())["run"] for name in runs}
    for name in ("packed", "ckpt"):
        assert record[name]["prefix_sharing"] is True and record[name]["forward"] == "stacked"
        assert record[name]["prefix_sharing_reason"].startswith("each batch packed into one row")
    assert record["plain"]["prefix_sharing"] is False and record["plain"]["prefix_sharing_reason"] == "--no-share-prefixes"
    # a packed batch pads less than the stacked one (grouped by packed width, the prompt once)
    padding = {name: read_metrics(tmp_path / name)[0]["padded_fraction"] for name in ("packed", "plain")}
    assert padding["packed"] < padding["plain"], padding


def test_bf16_autocast_keeps_float32_master_weights(tmp_path, data_file):
    fp32 = train(_config(tmp_path / "fp32", data_file, max_steps=2))
    bf16 = train(_config(tmp_path / "bf16", data_file, max_steps=2, dtype="bfloat16"))
    assert all(t.dtype == torch.float32 for t in load_weights(tmp_path / "bf16").values())
    first = lambda run: read_metrics(tmp_path / run)[0]["loss"]  # noqa: E731
    assert first("bf16") != first("fp32")  # bf16 really ran...
    assert first("bf16") == pytest.approx(first("fp32"), abs=2e-2)  # ...and agrees to bf16 precision
    assert bf16.eval_metrics["pairs"] == fp32.eval_metrics["pairs"]


def test_cli_run_folder_manifest_and_reload(tmp_path, data_file):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "run"
    code = main(["train", "--base", str(tiny_base_dir()), "--data", str(data_file), "--out", str(out),
                 "--max-steps", "4", "--batch-size", "2", "--grad-accum", "2", "--eval-every", "2",
                 "--log-every", "2", "--save-every", "2", "--max-length", "48", "--truncation", "truncate",
                 "--head-bias", "--head-lr-mult", "10", "--dtype", "float32", "--seed", "7", "--no-progress"])
    assert code == 0
    manifest = json.loads((out / "rmaudit.json").read_text())
    # The data, split, tokenizer and policy an audit needs to reproduce the run.
    assert manifest["data"]["train"]["sha256"] and manifest["run"]["complete"] is True
    pairs = load_pairs(data_file)
    train_side, eval_side = split_by_prompt(pairs, 0.1)
    split = json.loads((out / "split.json").read_text())
    assert split["eval"] == sorted({prompt_hash(p.prompt) for p in eval_side})
    assert split["train"] == sorted({prompt_hash(p.prompt) for p in train_side})
    assert manifest["split"]["shared_prompts"] == 0 and manifest["split"]["prompt_hashes_file"] == "split.json"
    template = manifest["tokenizer"]["chat_template"]
    assert template["sha256"] and "<|im_start|>" in template["text"] and "chat_template" not in manifest  # once
    tok = manifest["tokenizer"]
    assert tok["padding_side"] == "right" and tok["pad_token_id"] == 2 and tok["bos_token_id"] == 1
    truncation = manifest["truncation"]
    assert manifest["max_length"] == 48 and truncation["policy"] == "truncate"
    assert truncation["train"]["truncated"] + truncation["eval"]["truncated"] > 0
    assert manifest["head"]["bias"] is True and manifest["head"]["at_init"]["bias"] != 0.0
    assert "initial_bias" not in manifest["head"]  # stated once
    assert manifest["hyperparameters"]["head_lr_mult"] == 10 and manifest["hyperparameters"]["seed"] == 7
    assert manifest["packages"]["torch"] and manifest["metrics"]["eval"]["accuracy"] is not None
    assert manifest["packages"]["rmaudit"] == rmaudit.__version__  # the code that ran, even from an editable install
    # The effective config replays the run.
    replay = build_config(read_config_file(out / "config.yaml"))
    assert replay.max_length == 48 and replay.truncation == "truncate" and replay.grad_accum == 2
    # Logs: every 2 steps, eval at step 2 and at the end, one resumable checkpoint.
    train_logs, eval_logs = read_metrics(out), read_metrics(out, "eval")
    assert [r["step"] for r in train_logs] == [2, 4] and [r["step"] for r in eval_logs] == [2, 4]
    for key in ("loss", "accuracy", "margin", "reward_mean", "reward_std", "grad_norm", "lr", "tokens_per_s",
                "padded_fraction"):
        assert key in train_logs[0]
    assert (out / "checkpoints" / "step-000002" / "trainer_state" / "optimizer.safetensors").is_file()
    # Plain transformers loads the result and scores like rmaudit's mask pooling.
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    ids = torch.tensor([[1, 9690, 198, 2, 198]])
    with torch.no_grad():
        native = model(input_ids=ids).logits.squeeze(-1)
        torch.testing.assert_close(native, pooled_rewards(model, ids, torch.ones_like(ids)))
    # The ablation bias is saved (transformers' Llama head has none, so plain loading ignores it). Its gradient
    # is zero up to float rounding of sum(g) - sum(g) over a batch (~1e-9), which Adam's normalisation turns
    # into drift of ~1e-6; the head weights meanwhile move by ~lr * 10 per step.
    bias_drift = abs(float(load_weights(out)["score.bias"]) - manifest["head"]["at_init"]["bias"])
    assert bias_drift < 1e-4 < abs(manifest["head"]["now"]["weight_norm"] - manifest["head"]["at_init"]["weight_norm"])


def test_bad_input_is_a_one_line_error(tmp_path, data_file, capsys):
    code = main(["train", "--base", str(tiny_base_dir()), "--data", str(tmp_path / "missing.jsonl"),
                 "--out", str(tmp_path / "x"), "--no-progress"])
    assert code == 2
    assert "missing.jsonl" in capsys.readouterr().err
    code = main(["train", "--base", str(tiny_base_dir()), "--data", str(data_file), "--out", str(tmp_path / "y"),
                 "--batch-size", "64", "--no-progress"])
    assert code == 2
    done = tmp_path / "done"
    assert main(["train", "--base", str(tiny_base_dir()), "--data", str(data_file), "--out", str(done),
                 "--max-steps", "1", "--max-grad-norm", "0", "--no-progress"]) == 0
    assert read_metrics(done)[0]["grad_norm"] is None  # not measured without clipping, and valid JSON
    before = (done / "metrics.jsonl").read_bytes()
    capsys.readouterr()
    assert main(["train", "--base", str(tiny_base_dir()), "--data", str(data_file), "--out", str(done),
                 "--no-progress"]) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert (done / "metrics.jsonl").read_bytes() == before  # the earlier run is untouched


def test_freeze_layers_trains_only_the_top_of_the_model(tmp_path, data_file):
    before = BradleyTerryRecipe(_config(tmp_path / "x", data_file))
    before.setup_run(), before.setup_data(), before.setup_model()
    initial = {k: v.clone() for k, v in before.model.state_dict().items()}
    train(_config(tmp_path / "frozen", data_file, max_steps=2, freeze_layers=1))
    after = load_weights(tmp_path / "frozen")
    for name, value in initial.items():
        frozen = name.startswith(("model.embed_tokens.", "model.layers.0."))
        assert torch.equal(after[name], value) == frozen, name
    manifest = json.loads((tmp_path / "frozen" / "rmaudit.json").read_text())
    assert 0 < manifest["run"]["trainable_parameters"] < sum(v.numel() for v in initial.values())


def test_report_to_tensorboard_and_trainer_state_json(tmp_path, data_file):
    """--report-to sends the logged metrics to accelerate's tracker; trainer_state.json holds the
    log in the transformers Trainer's shape; a TRL config file's names map onto rmaudit's."""
    out = tmp_path / "run"
    recipe_file = tmp_path / "trl_recipe.yaml"
    recipe_file.write_text("learning_rate: 1.0e-3\nper_device_train_batch_size: 2\nmax_steps: 2\nlogging_steps: 1\n"
                           "report_to: [tensorboard]\nlr_scheduler_type: constant\n")
    code = main(["train", "--base", str(tiny_base_dir()), "--data", str(data_file), "--out", str(out),
                 "--config", str(recipe_file), "--dtype", "float32", "--no-progress"])
    assert code == 0
    events = list((out / "rmaudit").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["max_steps"] == 2
    assert [r["step"] for r in state["log_history"] if r["kind"] == "train"] == [1, 2]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert (config["lr"], config["batch_size"], config["scheduler"], config["report_to"]) == (1e-3, 2, "constant",
                                                                                             "tensorboard")


@pytest.mark.parametrize("progress", [True, False])
def test_the_stages_outside_the_steps_have_their_own_bars(tmp_path, data_file, capsys, progress):
    """Encoding the pairs and the held-out pass take minutes at scale (the final pass over 453
    SmolLM2 pairs took 3 min on a 2-core CPU), so each shows a bar with the time left, as the
    steps do; --no-progress shows none."""
    train(_config(tmp_path / "run", data_file, max_steps=1, progress=progress))
    err = capsys.readouterr().err
    for stage in ("encode train pairs", "encode held-out pairs", "held-out pass"):
        assert (f"{stage}:" in err) == progress, (stage, err)
