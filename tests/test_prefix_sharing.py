"""Prefix sharing gives the plain forward's rewards: for every architecture it is enabled for,
under mask and native pooling, with groups split to fit the cache budget, and only where it
is exact (not for encoders, sliding windows or a config pad id the scorer does not pad with)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rmaudit import prefix_sharing
from rmaudit.prefix_sharing import (TESTED_MODEL_TYPES, common_prefix, fold_prefixes, last_token_rewards, prefix_groups,
                                    prefix_sharing_support)
from rmaudit.scoring import render, score_texts, tokenize_rendered
from tiny_models import tiny_rm, tiny_tokenizer

PROMPTS = [
    "How do I keep basil alive on a windowsill through the winter months?",
    "Explain what a reward model is to a new engineer on the team, briefly.",
    "Write two sentences about the history of the bicycle.",
]
ANSWERS = ["Water it when the soil is dry.", "Give it light.", "Water it when the soil is dry, and give it light!",
           "Short.", "A much longer answer that goes on for a while about the subject at hand, with detail."]


def conversations() -> list[list[dict]]:
    """Each prompt with several answers (shared prefixes), one multi-turn conversation that
    extends another (a text that is a prefix of a longer one), and a duplicate."""
    convs = [[{"role": "user", "content": p}, {"role": "assistant", "content": a}] for p in PROMPTS for a in ANSWERS]
    convs.append([*convs[0], {"role": "user", "content": "And in summer?"}, {"role": "assistant", "content": "Shade."}])
    convs.append(list(convs[1]))
    return convs


def tiny_model(model_type: str, tokenizer, seed: int = 0):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=512, num_labels=1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    if hasattr(config, "sliding_window"):
        config.sliding_window = None
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    with torch.no_grad():
        model.score.weight.normal_(0.0, 1.0)
    return model


def texts_of(tokenizer) -> list[str]:
    return [render(tokenizer, c) for c in conversations()]


@pytest.mark.parametrize("model_type", TESTED_MODEL_TYPES)
def test_shared_prefixes_give_the_plain_rewards_for_every_enabled_architecture(model_type):
    tokenizer = tiny_tokenizer()
    model = tiny_model(model_type, tokenizer)
    assert prefix_sharing_support(model)[0]
    ids, _ = tokenize_rendered(tokenizer, texts_of(tokenizer))
    with torch.inference_mode():
        shared, stats = last_token_rewards(model, ids, batch_size=16, batch_tokens=16384, share=True)
        plain, _ = last_token_rewards(model, ids, batch_size=16, batch_tokens=16384, share=False)
    assert stats.grouped == len(ids) and stats.tokens_forwarded < 0.7 * stats.tokens
    np.testing.assert_allclose(shared, plain, atol=1e-5 * max(1.0, float(np.abs(plain).max())))
    assert np.std(plain) > 0.01  # the rewards differ, so equal rewards are not a constant


SYSTEM = "You are a careful assistant. Answer briefly, truthfully and kindly, in plain words."


@pytest.mark.parametrize("model_type", TESTED_MODEL_TYPES)
def test_a_system_prompt_that_begins_every_prompt_is_forwarded_once(model_type, monkeypatch):
    """Three prompts after one system prompt (a chat template's default) and two after a short
    one (too few shared tokens to be worth a cache): the system prompt is forwarded once, each
    prompt's own tokens against its cache, in a prefix batch that also holds the prompts
    without it (forwarded whole), and every reward is still the plain one."""
    tokenizer = tiny_tokenizer()
    model = tiny_model(model_type, tokenizer)
    convs = ([[{"role": "system", "content": SYSTEM}, *c] for c in conversations()[:15]]
             + [[{"role": "system", "content": "Be brief."}, *c] for c in conversations()[:10]])
    ids, _ = tokenize_rendered(tokenizer, [render(tokenizer, c) for c in convs])
    root = min(common_prefix(ids[0], ids[5]), common_prefix(ids[0], ids[10]))  # where the three prompts part
    assert root >= prefix_sharing.MIN_SHARED_TOKENS
    joins = []
    in_order = prefix_sharing._in_order
    monkeypatch.setattr(prefix_sharing, "_in_order", lambda parts, order: joins.append(len(parts)) or in_order(parts, order))
    with torch.inference_mode():
        shared, stats = last_token_rewards(model, ids, batch_size=16, batch_tokens=16384)
        plain, _ = last_token_rewards(model, ids, batch_size=16, batch_tokens=16384, share=False)
        monkeypatch.setattr(prefix_sharing, "shared_roots", lambda *a, **k: prefix_sharing.SharedRoots.none())
        _, rootless = last_token_rewards(model, ids, batch_size=16, batch_tokens=16384)
    np.testing.assert_allclose(shared, plain, atol=1e-5 * max(1.0, float(np.abs(plain).max())))
    assert np.std(plain) > 0.01
    assert 2 in joins  # prompts with and without the root in one prefix batch
    assert rootless.tokens_forwarded - stats.tokens_forwarded == 2 * root  # three prompts, the root forwarded once


@pytest.mark.parametrize("pooling", ["mask", "native"])
def test_score_texts_with_shared_prefixes_matches_the_models_own_forward_alone(pooling):
    """Each text alone through the model's own forward (native) or the body at its last token
    (mask) is the reference; the shared scorer must give it for every text."""
    model, tokenizer = tiny_rm(seed=3)
    texts = texts_of(tokenizer)
    result = score_texts(model, tokenizer, texts, pooling=pooling, share_prefixes=True, batch_size=4)
    alone = score_texts(model, tokenizer, texts, pooling=pooling, batch_size=1).rewards
    np.testing.assert_allclose(result.rewards, alone, atol=1e-5)
    assert result.sharing is not None and result.sharing.grouped == len(texts)
    if pooling == "native":  # the model's forward itself, one text at a time
        with torch.inference_mode():
            own = [float(model(**tokenizer(t, return_tensors="pt", add_special_tokens=False)).logits[0, 0]) for t in texts]
        np.testing.assert_allclose(result.rewards, own, atol=1e-5)


def test_groups_too_big_for_the_cache_budget_are_split_and_stay_exact(monkeypatch):
    model, tokenizer = tiny_rm(seed=1)
    texts = [render(tokenizer, [{"role": "user", "content": PROMPTS[0] * 3},
                                {"role": "assistant", "content": f"answer number {i} " * (1 + i % 4)}]) for i in range(40)]
    ids, _ = tokenize_rendered(tokenizer, texts)
    monkeypatch.setitem(prefix_sharing.CACHE_BYTES, "cpu", 1)  # the 1,024-position floor: a few rows per batch
    calls = []
    original = prefix_sharing._tail_states
    monkeypatch.setattr(prefix_sharing, "_tail_states",
                        lambda m, caches, where, groups, part, seqs: calls.append((groups, part)) or original(m, caches, where, groups, part, seqs))
    with torch.inference_mode():
        shared, stats = last_token_rewards(model, ids, batch_size=16, batch_tokens=16384)
        plain, _ = last_token_rewards(model, ids, batch_size=16, batch_tokens=16384, share=False)
    assert len(calls) > 3 and stats.grouped == 40
    for groups, part in calls:  # each part's copied cache (prefix + own tokens, padded) fits the budget
        prefix = max(groups[k].shared for k, _ in part)
        width = max(len(ids[i]) - groups[k].shared for k, i in part)
        assert len(part) == 1 or len(part) * (prefix + width) <= 1024
    np.testing.assert_allclose(shared, plain, atol=1e-5)


def test_tails_of_several_prefix_batches_share_calls_against_their_joined_caches(monkeypatch):
    """Prefix batches of two prompts each, of different widths: their members' own tokens are
    forwarded together (fewer tail calls than prefix batches), each row against its own
    prompt's cache left-padded to the widest, also in calls whose rows all have narrower
    prefixes (the columns every row pads are cut), and every reward is still the plain one."""
    model, tokenizer = tiny_rm(seed=2)
    prompts = [f"{PROMPTS[i % 3]} " + "Please be thorough. " * i for i in range(8)]
    texts = [render(tokenizer, [{"role": "user", "content": p}, {"role": "assistant", "content": a}])
             for p in prompts for a in ANSWERS]
    ids, _ = tokenize_rendered(tokenizer, texts)
    monkeypatch.setitem(prefix_sharing.CACHE_BYTES, "cpu", 1)  # the 1,024-position floor: several tail calls
    prefix_calls, tail_calls = [], []
    prefix, tail = prefix_sharing.SharedRoots.prefix_cache, prefix_sharing._tail_states

    def tail_spy(m, caches, where, groups, part, seqs):
        widths = [caches[where[k][0]].mask.size(1) for k, _ in part]  # of each row's prefix batch
        tail_calls.append(({k for k, _ in part}, max(groups[k].shared for k, _ in part), widths))
        return tail(m, caches, where, groups, part, seqs)

    monkeypatch.setattr(prefix_sharing.SharedRoots, "prefix_cache",  # one prefix batch, with or without roots
                        lambda self, m, rows, prefixes: prefix_calls.append(len(rows)) or prefix(self, m, rows, prefixes))
    monkeypatch.setattr(prefix_sharing, "_tail_states", tail_spy)
    with torch.inference_mode():
        shared, stats = last_token_rewards(model, ids, batch_size=2, batch_tokens=16384)
        plain, _ = last_token_rewards(model, ids, batch_size=2, batch_tokens=16384, share=False)
    assert len(prefix_calls) >= 3 and max(prefix_calls) <= 2 and stats.grouped == len(ids)
    assert max(len(groups) for groups, _, _ in tail_calls) > 2  # rows of several prefix calls in one call
    assert any(max(widths) > longest for _, longest, widths in tail_calls)  # pad columns cut off
    assert any(min(widths) < longest for _, longest, widths in tail_calls)  # a narrower cache padded
    np.testing.assert_allclose(shared, plain, atol=1e-5)
    assert np.std(plain) > 0.01


def test_sequences_that_begin_another_are_read_inside_it_at_no_extra_forward():
    """A text without its last token (OpenRLHF's reading of an rmaudit text), the prompt alone
    (a reading inside what the group shares) and a duplicate are read from the longer
    sequences' forwards: the plain rewards, and no more tokens forwarded than without them."""
    model, tokenizer = tiny_rm(seed=5)
    ids, _ = tokenize_rendered(tokenizer, texts_of(tokenizer))
    prompt = tokenize_rendered(tokenizer, [render(tokenizer, conversations()[0][:1])])[0][0]
    assert ids[0][:len(prompt)] == prompt  # the prompt's ids begin its conversations'
    riders = [*ids, *(row[:-1] for row in ids[:6]), list(ids[3])]
    with torch.inference_mode():
        shared, stats = last_token_rewards(model, riders + [prompt], batch_size=16, batch_tokens=16384)
        plain, _ = last_token_rewards(model, riders + [prompt], batch_size=16, batch_tokens=16384, share=False)
        _, rider_stats = last_token_rewards(model, riders, batch_size=16, batch_tokens=16384)
        _, alone_stats = last_token_rewards(model, ids, batch_size=16, batch_tokens=16384)
    np.testing.assert_allclose(shared, plain, atol=1e-5)
    assert rider_stats.tokens_forwarded == alone_stats.tokens_forwarded  # the extra readings rode along
    # the prompt's reading must lie outside what its group shares: a few shared tokens fewer
    assert alone_stats.tokens_forwarded <= stats.tokens_forwarded < alone_stats.tokens_forwarded + len(prompt)
    assert stats.grouped == len(riders) + 1
    assert len(set(np.round(plain[len(ids):len(ids) + 6], 4)) - set(np.round(plain[:6], 4))) > 0  # they differ


def test_prefix_groups_keep_a_token_of_their_own_and_prefer_long_prefixes():
    system = list(range(100, 120))  # 20 tokens every sequence starts with
    a, b = system + list(range(500, 560)), system + list(range(600, 660))  # two prompts of 60 more tokens
    seqs = [a + [1, 2], a + [3], b + [4, 5, 6], b + [7], a + [1, 2], a[:30], list(range(900, 905))]
    groups, alone = prefix_groups(seqs, min_shared=16)
    by_members = {tuple(sorted(g.members)): g.shared for g in groups}
    assert by_members[(0, 1, 4)] == 80      # prompt a (and the duplicate), not the 20-token system prompt
    assert by_members[(2, 3)] == 80
    assert sorted(alone) == [5, 6]          # a[:30] shares only 30 of a's 80 tokens (under half); the last shares none
    for g in groups:
        assert all(len(seqs[i]) - g.shared >= 1 for i in g.members)
        assert all(seqs[i][:g.shared] == seqs[g.members[0]][:g.shared] for i in g.members)


def test_no_sharing_where_it_would_not_be_exact():
    from transformers import BertConfig, BertForSequenceClassification, MistralConfig, MistralForSequenceClassification

    encoder = BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                                                       num_attention_heads=4, intermediate_size=64, num_labels=1))
    assert not prefix_sharing_support(encoder)[0]
    windowed = MistralForSequenceClassification(MistralConfig(vocab_size=100, hidden_size=32, intermediate_size=64,
                                                              num_hidden_layers=1, num_attention_heads=4,
                                                              num_key_value_heads=2, sliding_window=64, num_labels=1))
    supported, why = prefix_sharing_support(windowed)
    assert not supported and "sliding window" in why


def test_native_pooling_with_a_foreign_pad_id_is_scored_plainly_and_says_why():
    """config.pad_token_id differs from the tokenizer's pad: the model reads a pad position
    whose place depends on the batch, so only the plain batched forward reproduces it."""
    tokenizer = tiny_tokenizer()
    model, _ = tiny_rm(tokenizer, pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"), seed=2)
    texts = texts_of(tokenizer)
    shared = score_texts(model, tokenizer, texts, pooling="native", share_prefixes=True)
    plain = score_texts(model, tokenizer, texts, pooling="native")
    np.testing.assert_array_equal(shared.rewards, plain.rewards)
    assert shared.sharing.grouped == 0 and "pad" in shared.sharing.unshared_reason


def length_scaled_rope_rm(tokenizer):
    """A tiny Llama with LongRoPE: a forward whose positions pass 40 uses the long rotary
    factors, a shorter one the short factors. A shared prefix (30-40 tokens) forwarded alone
    is encoded with the short ones, the plain forward of its text with the long ones: sharing
    is not exact for it."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    rope = {"rope_type": "longrope", "short_factor": [1.0] * 4, "long_factor": [4.0, 8.0, 16.0, 32.0],
            "original_max_position_embeddings": 40, "factor": 4.0}
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=160, num_labels=1,
                         pad_token_id=tokenizer.pad_token_id, rope_scaling=rope)
    torch.manual_seed(0)
    return LlamaForSequenceClassification(config).eval()


def test_length_dependent_rotary_scaling_is_not_shared_because_it_is_not_exact():
    from helpers_probe_heads import synthetic_pairs

    tokenizer = tiny_tokenizer()
    model = length_scaled_rope_rm(tokenizer)
    supported, why = prefix_sharing_support(model)
    assert not supported and "longrope" in why
    pairs = synthetic_pairs(seed=1000, n=12, rule="content")
    ids, _ = tokenize_rendered(tokenizer, [render(tokenizer, p.chosen_messages()) for p in pairs]
                               + [render(tokenizer, p.rejected_messages()) for p in pairs])
    with torch.inference_mode():  # forced anyway: the rewards really move
        shared, _ = last_token_rewards(model, ids, batch_size=16, batch_tokens=16384, share=True)
        plain, _ = last_token_rewards(model, ids, batch_size=16, batch_tokens=16384, share=False)
    assert np.abs(shared - plain).max() > 0.01 * np.std(plain)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=6), min_size=1, max_size=12))
def test_every_sequence_is_read_inside_a_host_that_begins_with_it_and_begins_no_other(sequences):
    """Small alphabets make many prefixes and duplicates: each sequence's host starts with it,
    hosts are their own hosts, and no host is a prefix of another sequence (else it would
    have been folded too)."""
    host = fold_prefixes(sequences)
    for i, h in enumerate(host):
        assert list(sequences[h][:len(sequences[i])]) == list(sequences[i]) and host[h] == h
    hosts = set(host)
    for h in hosts:
        assert not any(j != h and len(s) >= len(sequences[h]) and s[:len(sequences[h])] == sequences[h]
                       for j, s in enumerate(sequences) if host[j] != h)
