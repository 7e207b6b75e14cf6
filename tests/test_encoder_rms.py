"""Encoder reward models (BERT, DeBERTa: OpenAssistant's RMs): a state at one position
depends on the whole row, so no reading of theirs is named by a prefix of its ids.

Planted, each on a real tiny BertForSequenceClassification:
- the float32 cache once keyed both poolings of a text by its ids, so ``padding`` compared
  an encoder's mask readings with its native ones and failed by most of a reward-std (and
  it read the last-token reading no trainer of an encoder uses);
- the consumers' shared memo answered the ``transformers`` consumer with mask-pooled
  rewards, and ``trl-ppo`` read a ``classifier`` head TRL's get_reward never applies;
- an over-long text was truncated from the left, dropping the first token the pooler reads;
- a text longer than learned positions crashed ``consumer_readout`` into a skip;
- RoBERTa's head (a hidden layer, then ``classifier.out_proj``) errored ``padding`` and
  ``head_integrity``, and the audit read it at positions counted from 0, where RoBERTa
  numbers them after its padding index;
- the hidden states ``reward_scale`` and ``policy_shift`` read were an encoder's last
  token's, not what its head reads;
- RoBERTa's 514 position embeddings hold 512 positions (the first two are reserved), and the
  audit's default max length was 514.
Healthy twins: causal decoders keep their prefix readings (tests/test_prefix_sharing.py and
tests/test_probe_consumer_readout.py), and an encoder whose tokenizer pads left still fails.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers_audit import TOPICS, topic_pairs
from helpers_probe import run_configured
from rmaudit.modeling.pooling import attends_causally
from rmaudit.probes.consumer_readout import ConsumerReadout
from rmaudit.probes.context import AuditContext
from rmaudit.probes.padding import PaddingProbe
from rmaudit.readouts import PREFIXES, Sample, read_rewards
from rmaudit.results import Status
from rmaudit.scoring import score_texts, tokenize_rendered
from tiny_models import require_smollm2, tiny_bert_rm, tiny_rm

PAIRS = topic_pairs(TOPICS[:12])


@pytest.fixture(scope="module")
def bert():
    require_smollm2()
    return tiny_bert_rm()


def _ctx(model, tokenizer, **inputs) -> AuditContext:
    from pathlib import Path

    return AuditContext(checkpoint=Path("."), model=model, tokenizer=tokenizer, eval_pairs=PAIRS, pooling="native",
                        **inputs)


def test_causal_attention_is_measured_on_the_body():
    from transformers import (BertConfig, BertForSequenceClassification, DebertaV2Config,
                              DebertaV2ForSequenceClassification, GPT2Config, GPT2ForSequenceClassification)

    require_smollm2()
    small = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
             "vocab_size": 100, "num_labels": 1}
    assert attends_causally(tiny_rm()[0])
    assert attends_causally(GPT2ForSequenceClassification(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100,
                                                                     num_labels=1)).eval())
    assert not attends_causally(DebertaV2ForSequenceClassification(DebertaV2Config(**small)).eval())
    # one class, both ways: BERT attends causally only as a decoder
    assert not attends_causally(BertForSequenceClassification(BertConfig(**small)).eval())
    assert attends_causally(BertForSequenceClassification(BertConfig(**small, is_decoder=True)).eval())


def test_an_encoders_two_poolings_are_two_readings(bert):
    from rmaudit.modeling.pooling import pooled_rewards
    from rmaudit.scoring import pad_batch

    model, tokenizer = bert
    ctx = _ctx(model, tokenizer)
    texts = ctx.pair_texts(PAIRS[:3])
    native = ctx.float32_rewards(texts, "native", alone=True)
    mask = ctx.float32_rewards(texts, "mask", alone=True)  # once answered from the native readings' keys
    ids = tokenize_rendered(tokenizer, texts)[0]
    with torch.no_grad():
        own = [float(model(input_ids=torch.tensor([r])).logits[0, 0]) for r in ids]
        last = [float(pooled_rewards(model, *pad_batch([r], tokenizer.pad_token_id))[0]) for r in ids]
    np.testing.assert_allclose(native, own, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mask, last, rtol=1e-4, atol=1e-5)
    assert np.abs(native - mask).max() > 0.1


def test_padding_warns_that_left_pads_move_a_first_token_pooler(bert):
    model, tokenizer = bert
    result = run_configured(PaddingProbe, _ctx(model, tokenizer))
    m = result.metrics
    assert m["max_delta_std_right_native"] <= m["tolerance_std"]
    assert "max_delta_std_right_mask" not in m  # no trainer reads an encoder at its last token
    # the pooler reads position 0, a pad once padded left: said, and a warning (the tokenizer pads right)
    assert m["max_delta_std_left_native"] > 10 * m["tolerance_std"]
    left = next(f for f in result.findings if f.metric == "max_delta_std_left_native")
    assert left.status is Status.WARN and "does not attend causally" in left.message
    assert result.status is Status.WARN, result.summary


def test_an_encoder_read_at_its_last_token_ignores_pads_on_either_side(bert):
    """An encoder trained at its last token (a manifest that says mask pooling, as rmaudit 0.5.15 and earlier wrote for one):
    with positions counted from the first real token, left pads move nothing."""
    model, tokenizer = bert
    ctx = _ctx(model, tokenizer)
    ctx.pooling = "mask"
    result = run_configured(PaddingProbe, ctx)
    assert result.metrics["max_delta_std_left_mask"] <= result.metrics["tolerance_std"], result.summary
    assert result.metrics["max_delta_std_right_mask"] <= result.metrics["tolerance_std"]


def test_an_encoder_whose_tokenizer_pads_left_fails_padding():
    require_smollm2()
    model, tokenizer = tiny_bert_rm()
    tokenizer.padding_side = "left"  # its own consumers now pad it left
    result = run_configured(PaddingProbe, _ctx(model, tokenizer))
    left = next(f for f in result.findings if f.metric == "max_delta_std_left_native")
    assert left.status is Status.FAIL and result.status is Status.FAIL


def test_consumers_read_an_encoder_by_running_it(bert):
    model, tokenizer = bert
    samples = [Sample(p.prompt, p.chosen) for p in PAIRS[:4]] + [Sample(p.prompt, p.rejected) for p in PAIRS[:4]]
    assert PREFIXES["transformers"](model, tokenizer, samples, None) is None
    texts = [tokenizer.apply_chat_template(s.messages(), tokenize=False) for s in samples]
    with torch.no_grad():
        own = model(**tokenizer(texts, return_tensors="pt", padding=True)).logits[:, 0].numpy()
    np.testing.assert_allclose(read_rewards("transformers", model, tokenizer, samples), own, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="no 'score' head"):
        read_rewards("trl-ppo", model, tokenizer, samples)


def test_a_declared_consumer_that_cannot_read_the_model_fails(bert):
    model, tokenizer = bert
    result = run_configured(ConsumerReadout, _ctx(model, tokenizer, consumer="trl-ppo"))
    assert result.status is Status.FAIL, result.summary
    failed = [f for f in result.findings if f.status is Status.FAIL]
    assert any("trl-ppo: cannot read the reward" in f.message and "score" in f.message for f in failed)
    # the trained readout is the model's own forward; the consumers that run it read the same
    assert result.metrics["trained_readout"] == "transformers"
    assert result.metrics["trl-grpo:pearson"] > 0.99
    # no trainer of an encoder reads its head at the last token: rmaudit's readout is not read
    assert "rmaudit:pearson" not in result.metrics and result.metrics["rmaudit:not_applicable"]


def test_an_encoders_over_long_text_keeps_the_start_its_pooler_reads():
    require_smollm2()
    model, tokenizer = tiny_bert_rm(max_positions=32)
    texts = [tokenizer.apply_chat_template(p.chosen_messages(), tokenize=False) for p in PAIRS[:4]]
    assert all(len(tokenizer(t)["input_ids"]) > 32 for t in texts)
    ours = score_texts(model, tokenizer, texts, pooling="native", max_length=32)
    with torch.no_grad():
        own = model(**tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=32)).logits[:, 0]
    assert ours.n_truncated == len(texts)
    np.testing.assert_allclose(ours.rewards, own.numpy(), rtol=1e-4, atol=1e-5)
    # a closing special token is kept, as the tokenizer's own truncation keeps [SEP]
    closed = texts[0].rstrip("\n")
    assert closed.endswith(tokenizer.eos_token)
    ids = tokenize_rendered(tokenizer, [closed], 16, keep="start")[0][0]
    whole = tokenize_rendered(tokenizer, [closed])[0][0]
    assert ids == whole[:15] + [tokenizer.eos_token_id]


def test_consumer_readout_compares_the_pairs_that_fit_learned_positions():
    require_smollm2()
    model, tokenizer = tiny_bert_rm(max_positions=128)
    long_answer = " ".join(["and then a few more words about it"] * 20)
    long_pairs = [type(p)(prompt=p.prompt, chosen=p.chosen + long_answer, rejected=p.rejected) for p in PAIRS[:3]]
    ctx = _ctx(model, tokenizer, max_length=128)
    ctx.eval_pairs = long_pairs + PAIRS
    result = run_configured(ConsumerReadout, ctx, max_pairs=8)
    assert result.status is not Status.SKIP, result.summary
    assert result.metrics["pairs_over_max_length"] == 3
    assert result.metrics["n_pairs"] == 8
    assert "3 pairs over the max length (128 tokens) passed over" in result.summary


@pytest.fixture(scope="module")
def roberta():
    require_smollm2()
    return tiny_bert_rm(family="roberta")


def test_an_encoder_is_read_at_the_positions_it_numbers_itself(roberta):
    model, tokenizer = roberta
    texts = [tokenizer.apply_chat_template(p.chosen_messages(), tokenize=False) for p in PAIRS[:6]]
    ours = score_texts(model, tokenizer, texts, pooling="native").rewards
    with torch.no_grad():
        own = model(**tokenizer(texts, return_tensors="pt", padding=True)).logits[:, 0].numpy()
    np.testing.assert_allclose(ours, own, rtol=1e-4, atol=1e-5)


def test_the_hidden_state_of_an_encoder_is_what_its_head_reads(bert, roberta):
    for model, tokenizer in (bert, roberta):
        ctx = _ctx(model, tokenizer)
        conversations = [p.chosen_messages() for p in PAIRS[:5]]
        ours = ctx.pooled_hidden(conversations)
        encoded = tokenizer([ctx.render(c) for c in conversations], return_tensors="pt", padding=True)
        with torch.no_grad():
            if model.config.model_type == "bert":
                theirs = model.bert(**encoded).pooler_output
            else:
                first = model.roberta(**encoded).last_hidden_state[:, 0]
                theirs = torch.tanh(model.classifier.dense(first))
        np.testing.assert_allclose(ours, theirs.double().numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ctx.hidden_norms(conversations), np.linalg.norm(ours, axis=1), rtol=1e-6)


def test_a_roberta_rms_padding_and_head_are_checked_not_errored(roberta, tmp_path):
    from rmaudit.probes.head_integrity import HeadIntegrity
    from rmaudit.probes.inference_invariance import InferenceInvariance

    model, tokenizer = roberta
    model.save_pretrained(tmp_path, safe_serialization=True)
    tokenizer.save_pretrained(tmp_path)
    ctx = _ctx(model, tokenizer)
    ctx.checkpoint = tmp_path
    padding = run_configured(PaddingProbe, ctx)
    assert padding.status is not Status.ERROR, padding.summary
    assert padding.metrics["max_delta_std_right_native"] <= padding.metrics["tolerance_std"]
    assert "max_delta_std_right_mask" not in padding.metrics  # no trainer reads an encoder's last token
    invariance = run_configured(InferenceInvariance, ctx)
    assert invariance.metrics["batch:max_delta_std"] <= invariance.metrics["tolerance_float32_std"]
    head = run_configured(HeadIntegrity, ctx)
    assert head.status is not Status.ERROR, head.summary
    assert head.metrics["head_weights_read_from"] == "the checkpoint's safetensors"
    assert head.metrics["head_features"] == model.config.hidden_size


def test_a_robertas_max_length_is_the_positions_it_can_use(roberta, tmp_path):
    """RoBERTa numbers its first token padding_idx + 1: with n embeddings and pad id p, it can
    read n - (p + 1) tokens."""
    from rmaudit.audit import AuditOptions, build_context

    model, tokenizer = roberta
    short_model, _ = tiny_bert_rm(family="roberta", max_positions=40)
    short_model.save_pretrained(tmp_path, safe_serialization=True)
    tokenizer.save_pretrained(tmp_path)
    ctx = build_context(tmp_path, AuditOptions(probes="accuracy"))
    usable = short_model.config.max_position_embeddings - (tokenizer.pad_token_id + 1)
    assert ctx.max_length == usable == 40 < short_model.config.max_position_embeddings
    texts = [tokenizer.apply_chat_template(p.chosen_messages(), tokenize=False) for p in PAIRS[:3]]
    assert all(len(tokenizer(t)["input_ids"]) > usable + 2 for t in texts)
    ours = ctx.score_texts(texts)  # one token more would index past the embeddings
    with torch.no_grad():
        own = short_model(**tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=usable))
    np.testing.assert_allclose(ours, own.logits[:, 0].numpy(), rtol=1e-4, atol=1e-5)


def test_an_encoder_without_a_config_pad_id_is_still_read_through_its_pooler(bert):
    """A missing config.pad_token_id sends a causal model to mask pooling (transformers cannot
    pool its padded batch); an encoder's pooler reads a fixed position and needs no pad id."""
    import copy

    model, tokenizer = copy.deepcopy(bert)
    model.config.pad_token_id = None
    texts = [tokenizer.apply_chat_template(p.chosen_messages(), tokenize=False) for p in PAIRS[:4]]
    ours = score_texts(model, tokenizer, texts, pooling="native")
    encoded = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        own = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits[:, 0]
    assert ours.pooling == "native"
    np.testing.assert_allclose(ours.rewards, own.numpy(), rtol=1e-4, atol=1e-5)
