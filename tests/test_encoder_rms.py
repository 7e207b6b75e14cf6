"""Encoder reward models (BERT, DeBERTa: OpenAssistant's RMs): a state at one position
depends on the whole row, so no reading of theirs is named by a prefix of its ids.

Planted, each on a real tiny BertForSequenceClassification:
- the float32 cache once keyed both poolings of a text by its ids, so ``padding`` compared
  an encoder's mask readings with its native ones and failed by most of a reward-std;
- the consumers' shared memo answered the ``transformers`` consumer with mask-pooled
  rewards, and ``trl-ppo`` read a ``classifier`` head TRL's get_reward never applies;
- an over-long text was truncated from the left, dropping the first token the pooler reads;
- a text longer than learned positions crashed ``consumer_readout`` into a skip.
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


def test_padding_reads_an_encoders_two_poolings_apart_and_warns_on_left_pads(bert):
    model, tokenizer = bert
    result = run_configured(PaddingProbe, _ctx(model, tokenizer))
    m = result.metrics
    # mask pooling reads the last real token: pads on either side leave it where it was
    assert m["max_delta_std_right_mask"] <= m["tolerance_std"]
    assert m["max_delta_std_left_mask"] <= m["tolerance_std"]
    assert m["max_delta_std_right_native"] <= m["tolerance_std"]
    # the pooler reads position 0, a pad once padded left: said, and a warning (the tokenizer pads right)
    assert m["max_delta_std_left_native"] > 10 * m["tolerance_std"]
    left = next(f for f in result.findings if f.metric == "max_delta_std_left_native")
    assert left.status is Status.WARN and "does not attend causally" in left.message
    assert result.status is Status.WARN, result.summary


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
