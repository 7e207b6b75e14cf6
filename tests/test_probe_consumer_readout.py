"""consumer_readout: each consumer's readout equals that consumer's own code on the same inputs
(TRL's get_reward, TRL's chat-template helper + the model's forward, transformers' forward);
a model trained with pad == eos and a trailing newline after the end-of-turn token fails
under TRL PPO with the fix named; its twin (distinct pad, reward at the end-of-turn token)
passes; a policy with another vocabulary fails the handoff. Consumers share forward passes
where they read the same ids, and the shared path equals each consumer's own batch code."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers_probe import configured, run_configured
from probe_fixtures import END_AT_EOS, MULTI_HELD_OUT, consumer_ctx, consumer_rm
from rmaudit.probes.consumer_readout import ConsumerReadout
from rmaudit.readouts import PrefixRewards, Sample, openrlhf_ids, read_rewards, trl_ppo_ids
from rmaudit.results import Status
from rmaudit.probes.context import AuditContext
from scratch import scratch_dir
from tiny_models import llama3_tokenizer_dir, require_smollm2, tiny_tokenizer

HELD_OUT = MULTI_HELD_OUT


@pytest.fixture(scope="module")
def pad_is_eos_rm():
    require_smollm2()
    return consumer_rm(distinct_pad=False)


def _audit(distinct_pad: bool, consumer=None, policy=None):
    return run_configured(ConsumerReadout, consumer_ctx(distinct_pad, consumer, policy))


def _samples():
    return [Sample(p.prompt, p.chosen) for p in HELD_OUT[:6]] + [Sample(p.prompt, p.rejected) for p in HELD_OUT[:6]]


def test_trl_ppo_readout_equals_trls_own_get_reward(pad_is_eos_rm):
    utils = pytest.importorskip("trl.experimental.utils")
    model, tokenizer = pad_is_eos_rm
    samples = _samples()
    ours = read_rewards("trl-ppo", model, tokenizer, samples, batch_size=len(samples))
    pairs = [trl_ppo_ids(tokenizer, s) for s in samples]
    width_q, width_r = max(len(q) for q, _ in pairs), max(len(r) for _, r in pairs)
    pad = tokenizer.pad_token_id
    rows = [[pad] * (width_q - len(q)) + q + r + [pad] * (width_r - len(r)) for q, r in pairs]
    with torch.no_grad():
        _, theirs, _ = utils.get_reward(model, torch.tensor(rows), pad, width_q)
    np.testing.assert_allclose(ours, theirs.float().numpy(), rtol=1e-4, atol=1e-5)


def test_trl_grpo_and_transformers_readouts_equal_the_models_own_forward(pad_is_eos_rm):
    data_utils = pytest.importorskip("trl.data_utils")
    model, tokenizer = pad_is_eos_rm
    samples = _samples()
    texts = [data_utils.apply_chat_template({"messages": s.messages()}, tokenizer)["text"] for s in samples]
    grpo = tokenizer(text=texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)
    plain = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        theirs_grpo = model(**grpo).logits[:, 0].numpy()
        theirs_plain = model(**plain).logits[:, 0].numpy()
    np.testing.assert_allclose(read_rewards("trl-grpo", model, tokenizer, samples), theirs_grpo, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(read_rewards("transformers", model, tokenizer, samples), theirs_plain, rtol=1e-4, atol=1e-5)


def _grpo_trainers_rewards(reward_model, tokenizer, samples) -> np.ndarray:
    """TRL's own GRPO reward code: a GRPOTrainer built around ``reward_model`` (its __init__
    sets the model's config.pad_token_id from the reward tokenizer), then its
    ``_calculate_rewards`` on the samples."""
    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    from transformers import LlamaForCausalLM

    from tiny_models import tiny_config

    args = trl.GRPOConfig(output_dir=str(scratch_dir("grpo-")), use_cpu=True, report_to="none", bf16=False,
                          per_device_train_batch_size=2, num_generations=2, max_completion_length=4)
    policy = LlamaForCausalLM(tiny_config(tiny_tokenizer()))
    trainer = trl.GRPOTrainer(model=policy, reward_funcs=[reward_model], args=args, processing_class=tiny_tokenizer(),
                              train_dataset=datasets.Dataset.from_list([{"prompt": list(s.prompt)} for s in samples]),
                              reward_processing_classes=[copy.deepcopy(tokenizer)])
    rewards = trainer._calculate_rewards([{"prompt": list(s.prompt)} for s in samples], [list(s.prompt) for s in samples],
                                         [[{"role": "assistant", "content": s.response}] for s in samples], None)
    return rewards[:, 0].numpy()


@pytest.mark.parametrize("distinct_pad,config_pad", [(False, None), (True, None), (True, "eos"), (True, "unused")])
def test_trl_grpo_readout_equals_grpo_trainers_own_code_whatever_the_config_pad_id(distinct_pad, config_pad):
    """GRPOTrainer overwrites the reward model's config.pad_token_id with its tokenizer's pad
    (TRL 1.16 grpo_trainer.py): a checkpoint with none (most Llama RMs), or with eos where the
    tokenizer pads with another token, is read at the tokenizer's pad boundary, not refused
    and not read at the config's pad."""
    require_smollm2()
    model, tokenizer = copy.deepcopy(consumer_rm(distinct_pad))  # consumer_rm is cached
    model.config.pad_token_id = {None: None, "eos": tokenizer.eos_token_id, "unused": 7}[config_pad]
    samples = _samples()
    ours = read_rewards("trl-grpo", model, tokenizer, samples, batch_size=5)
    assert model.config.pad_token_id == {None: None, "eos": tokenizer.eos_token_id, "unused": 7}[config_pad]  # untouched
    theirs = _grpo_trainers_rewards(copy.deepcopy(model), tokenizer, samples)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_trl_grpo_batch_code_equals_grpo_trainers_own_code_on_an_encoder():
    from tiny_models import tiny_bert_rm

    model, tokenizer = tiny_bert_rm()
    model.config.pad_token_id = None
    samples = _samples()
    ours = read_rewards("trl-grpo", model, tokenizer, samples, batch_size=5)  # an encoder: the batch code
    np.testing.assert_allclose(ours, _grpo_trainers_rewards(copy.deepcopy(model), tokenizer, samples),
                               rtol=1e-4, atol=1e-5)


def test_a_foreign_rm_without_a_config_pad_id_is_compared_not_skipped():
    """A checkpoint whose config has no pad id (common for Llama RMs): transformers reads it one
    text at a time, at its last token, which is the audit's own reading; the consumers are
    compared with that instead of the probe skipping."""
    require_smollm2()
    model, tokenizer = copy.deepcopy(consumer_rm(True))  # consumer_rm is cached
    model.config.pad_token_id = None
    ctx = AuditContext(checkpoint=Path("."), model=model, tokenizer=tokenizer, eval_pairs=HELD_OUT, pooling="native")
    result = run_configured(ConsumerReadout, ctx)
    assert result.status is not Status.SKIP, result.summary
    assert result.metrics["trained_readout"] == "transformers"
    assert result.metrics["trained_readout_one_text_at_a_time"] is True
    # the turn ends at eos and the tokenizer pads with another token: GRPO reads where it was trained
    assert result.metrics["trl-grpo:pearson"] == pytest.approx(1.0, abs=1e-6)


def test_openrlhf_readout_reads_at_the_appended_eos(pad_is_eos_rm):
    """OpenRLHF is not installable here (it needs DeepSpeed and Ray); its documented rule is
    checked on the ids: trailing newline stripped, the text ends with eos, no BOS added."""
    _, tokenizer = pad_is_eos_rm
    sample = _samples()[0]
    ids = openrlhf_ids(tokenizer, sample)
    assert ids[-1] == tokenizer.eos_token_id and ids[-2] != tokenizer.eos_token_id
    assert tokenizer.decode(ids).endswith("Thank you!<|im_end|>")


def test_pad_is_eos_with_trailing_newline_fails_under_declared_trl_ppo_and_names_the_fix(pad_is_eos_rm):
    result = _audit(False, consumer="trl-ppo")
    assert result.status is Status.FAIL, result.summary
    failing = [f for f in result.reasons if f.metric.startswith("trl-ppo:")]
    assert failing and all("fix:" in f.message for f in failing)
    assert "pad token distinct from eos" in failing[0].message and "'\\n'" in failing[0].message
    assert result.metrics["trl-ppo:pearson"] < 0.9 or result.metrics["trl-ppo:abs_mean_shift_std"] >= 0.5
    assert result.evidence and result.evidence[0]["consumer"] == "trl-ppo"  # the flipped pairs, with text
    undeclared = _audit(False, consumer=None)
    assert undeclared.status is Status.WARN and any("declare it with --consumer" in f.message for f in undeclared.reasons)


def test_distinct_pad_and_reward_at_end_of_turn_passes_under_trl_ppo():
    require_smollm2()
    result = _audit(True, consumer="trl-ppo")
    assert result.status is Status.PASS, result.summary
    assert result.metrics["trl-ppo:pearson"] > 0.999 and result.metrics["trl-ppo:abs_mean_shift_std"] < 0.01
    assert result.metrics["trl-ppo:accuracy"] == result.metrics["accuracy_trained"]


def test_policy_with_another_vocabulary_fails_the_handoff_to_trl_ppo():
    from transformers import AutoTokenizer

    require_smollm2()
    policy = AutoTokenizer.from_pretrained(llama3_tokenizer_dir())
    policy.pad_token = policy.eos_token
    policy.chat_template = END_AT_EOS
    result = _audit(True, consumer="trl-ppo", policy=policy)
    vocab = next(f for f in result.findings if f.metric == "vocab_identical")
    assert vocab.status is Status.FAIL and "vocabulary differs" in vocab.message
    assert result.status is Status.FAIL


@pytest.mark.parametrize("distinct_pad", [False, True])
def test_shared_readings_equal_each_consumers_own_batch_code(distinct_pad):
    """The prefix path (one forward per distinct token sequence, right-padded) gives what each
    consumer's own batch code gives: its padding side, positions and read index."""
    from rmaudit.readouts import read_rewards_batched

    require_smollm2()
    model, tokenizer = consumer_rm(distinct_pad)
    samples = _samples()
    for consumer in ("transformers", "trl-grpo", "trl-ppo"):
        shared = read_rewards(consumer, model, tokenizer, samples, batch_size=5)
        own = read_rewards_batched(consumer, model, tokenizer, samples, batch_size=5)
        np.testing.assert_allclose(shared, own, rtol=1e-4, atol=1e-5, err_msg=consumer)


def test_a_left_padding_tokenizer_runs_the_models_own_forward():
    """Left padding shifts the model's default positions by the pads: not a plain reading, so
    the consumer's own batch runs, and its rewards equal transformers' forward."""
    require_smollm2()
    model, shared_tokenizer = consumer_rm(True)
    tokenizer = copy.deepcopy(shared_tokenizer)  # consumer_rm is cached: leave its tokenizer as it was
    tokenizer.padding_side = "left"
    samples = _samples()
    memo = PrefixRewards()
    ours = read_rewards("transformers", model, tokenizer, samples, memo=memo)
    assert memo.forwarded == 0
    texts = [s.messages() for s in samples]
    encoded = tokenizer([tokenizer.apply_chat_template(t, tokenize=False) for t in texts], return_tensors="pt", padding=True)
    with torch.no_grad():
        theirs = model(**encoded).logits[:, 0].numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_consumers_that_read_what_the_scorer_read_reuse_the_audits_rewards():
    """A distinct pad and the turn ending at eos: every consumer reads exactly the ids the audit
    scored, so the probe costs no forward pass. SmolLM2's tokenizer as shipped (pad == eos, a
    newline after the turn): transformers and TRL GRPO still read the audit's ids, TRL PPO and
    OpenRLHF read others and are forwarded, once per response each."""
    require_smollm2()
    aligned = _audit(True, consumer="trl-ppo").metrics
    responses = 2 * aligned["n_pairs"]
    assert (aligned["readings_forwarded"], aligned["readings_shared"]) == (0, 4 * responses)
    assert all(aligned[f"{c}:pearson"] == 1.0 for c in ("transformers", "trl-grpo", "trl-ppo", "openrlhf"))
    shipped = _audit(False, consumer="trl-ppo").metrics
    assert (shipped["readings_forwarded"], shipped["readings_shared"]) == (2 * responses, 2 * responses)
    assert shipped["transformers:pearson"] == 1.0 and shipped["trl-ppo:pearson"] < 1.0


def test_the_scoring_plan_reads_the_consumers_ids_and_changes_no_number():
    """Planned, the consumers' own ids are read with the audit's texts (OpenRLHF's inside the
    texts they begin): the probe then forwards nothing, and every number is what the probe
    computes on its own."""
    from rmaudit.runner import run_probe, score_plan

    require_smollm2()
    alone = _audit(False, consumer="trl-ppo")
    ctx = consumer_ctx(False, "trl-ppo")
    probe = configured(ConsumerReadout)
    score_plan(ctx, [probe])
    planned = run_probe(probe, ctx)
    assert ctx.notes["scoring_plan"]["token_readings_read"] > 0
    assert alone.metrics["readings_forwarded"] > 0 and planned.metrics["readings_forwarded"] == 0
    assert planned.status is alone.status
    for name in ("trl-ppo", "openrlhf", "transformers", "trl-grpo"):
        for key in ("pearson", "mean_shift_std", "accuracy"):
            assert planned.metrics[f"{name}:{key}"] == pytest.approx(alone.metrics[f"{name}:{key}"], abs=2e-4)
