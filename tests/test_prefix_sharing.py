"""Prefix sharing gives the plain forward's rewards: for every architecture it is enabled for,
with their sliding windows and soft-capped attention logits, under mask and native pooling,
with the prefix tree split into rows of a token budget, and only where it is exact (not for
encoders, length-scaled rotary positions or a config pad id the scorer does not pad with)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rmaudit import prefix_sharing
from rmaudit.prefix_sharing import (TESTED_MODEL_TYPES, fold_prefixes, last_token_rewards,
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
    """A random 2-layer reward model of ``model_type``, full attention everywhere."""
    from transformers import AutoConfig

    config = AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=512, num_labels=1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    if hasattr(config, "sliding_window"):
        # Gemma's sliding layers need a window: one longer than any text here is full attention.
        config.sliding_window = 4096 if "sliding_attention" in (getattr(config, "layer_types", None) or ()) else None
    if model_type == "gemma2":
        config.attn_logit_softcapping = None  # its own test below: a cap of 50 never binds at this scale
    return random_rm(config, seed)


def random_rm(config, seed: int):
    from transformers import AutoModelForSequenceClassification

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
def test_a_system_prompt_that_begins_every_prompt_is_forwarded_once(model_type):
    """Three prompts after one system prompt (a chat template's default), two after another,
    several answers each, a text that extends another and a duplicate: every distinct prefix
    of them is forwarded exactly once (the tokens forwarded are the nodes of their trie), and
    every reward is still the plain one."""
    tokenizer = tiny_tokenizer()
    model = tiny_model(model_type, tokenizer)
    convs = ([[{"role": "system", "content": SYSTEM}, *c] for c in conversations()]
             + [[{"role": "system", "content": "Be brief."}, *c] for c in conversations()[:10]])
    ids, _ = tokenize_rendered(tokenizer, [render(tokenizer, c) for c in convs])
    trie_nodes = len({tuple(row[:k]) for row in ids for k in range(1, len(row) + 1)})
    with torch.inference_mode():
        shared, stats = last_token_rewards(model, ids, batch_size=16, batch_tokens=16384)
        plain, _ = last_token_rewards(model, ids, batch_size=16, batch_tokens=16384, share=False)
    np.testing.assert_allclose(shared, plain, atol=1e-5 * max(1.0, float(np.abs(plain).max())))
    assert np.std(plain) > 0.01
    assert stats.tokens_forwarded == trie_nodes < 0.5 * stats.tokens


WINDOWED = [t for t in TESTED_MODEL_TYPES if t in ("mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3",
                                                    "mixtral", "starcoder2", "qwen3_moe")]


def windowed_model(model_type: str, tokenizer, window: int):
    """``tiny_model`` with every sliding-window layer the architecture has given ``window``
    tokens (Qwen's layers all made sliding, as its config alone never does at 2 layers)."""
    config = tiny_model(model_type, tokenizer).config
    config.sliding_window = window
    if hasattr(config, "use_sliding_window"):
        config.use_sliding_window, config.max_window_layers = True, 0
        if getattr(config, "layer_types", None):
            config.layer_types = ["sliding_attention"] * config.num_hidden_layers
    return random_rm(config, seed=0)


def capped_gemma2(tokenizer, cap: float | None, window: int, binding: bool = False):
    """A random Gemma 2 RM on eager attention (the only one that caps), its attention logits
    capped at ``cap`` (None: uncapped); ``binding`` scales the query and key weights by 30, so
    that the logits reach several units and a cap of 1.0 moves the rewards."""
    config = windowed_model("gemma2", tokenizer, window).config
    config.attn_logit_softcapping = cap
    model = random_rm(config, seed=0)
    model.config._attn_implementation = "eager"
    if binding:
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.q_proj.weight.mul_(30.0)
                layer.self_attn.k_proj.weight.mul_(30.0)
    return model


def system_prompt_ids(tokenizer) -> list[list[int]]:
    convs = [[{"role": "system", "content": SYSTEM}, *c] for c in conversations()]
    return tokenize_rendered(tokenizer, [render(tokenizer, c) for c in convs])[0]


@pytest.mark.parametrize("model_type", WINDOWED)
def test_a_sliding_window_shorter_than_the_texts_is_applied_as_the_plain_forward_applies_it(model_type):
    """An 8-token window over texts of 40-80 tokens, a system prompt shared by all: a shared
    segment's queries sit after their ancestors' columns, and each must see the last 8
    positions of its own sequence, no more. The window changes the rewards by several
    reward-stds (so a tree attention that ignored it would fail here)."""
    tokenizer = tiny_tokenizer()
    model = windowed_model(model_type, tokenizer, window=8)
    assert prefix_sharing_support(model)[0]
    ids = system_prompt_ids(tokenizer)
    assert min(map(len, ids)) > 5 * 8
    with torch.inference_mode():
        shared, stats = last_token_rewards(model, ids, batch_size=16, batch_tokens=16384)
        plain, _ = last_token_rewards(model, ids, batch_size=16, batch_tokens=16384, share=False)
        model.config.sliding_window = 4096
        unwindowed, _ = last_token_rewards(model, ids, batch_size=16, batch_tokens=16384, share=False)
    scale = max(1.0, float(np.abs(plain).max()))
    np.testing.assert_allclose(shared, plain, atol=1e-5 * scale)
    assert stats.tokens_forwarded < 0.5 * stats.tokens
    assert float(np.abs(unwindowed - plain).max()) > 0.5 * float(np.std(plain))


def test_a_sequence_one_token_longer_than_the_window_loses_its_first_token_as_the_plain_forward_does():
    """The window's edge: the last of ``window + 1`` tokens no longer sees the first (transformers
    keeps kv > q - window), one of ``window`` tokens still sees all; two such sequences share
    their first tokens, so each is read in a packed row."""
    tokenizer = tiny_tokenizer()
    model = windowed_model("mistral", tokenizer, window=8)
    ids = [[5, 6, 7, 8, 9, 10, 11, 12, 13], [5, 6, 7, 8, 9, 10, 11, 14], [5, 6, 7, 8, 9, 10, 11, 15, 16]]
    with torch.inference_mode():
        shared, stats = last_token_rewards(model, ids, batch_size=16, batch_tokens=16384)
        plain, _ = last_token_rewards(model, ids, batch_size=16, batch_tokens=16384, share=False)
    assert stats.grouped == 3
    np.testing.assert_allclose(shared, plain, atol=1e-5 * max(1.0, float(np.abs(plain).max())))


def test_gemma2_soft_capped_attention_logits_are_capped_as_its_eager_attention_caps_them():
    """Gemma 2 caps its attention logits at ``attn_logit_softcapping`` (tanh) in an eager
    forward; the tree attention must cap them the same way, with its sliding window too. The
    query and key weights are scaled so that the logits reach several units and a cap of 1.0 moves the rewards."""
    if "gemma2" not in TESTED_MODEL_TYPES:
        pytest.skip("gemma2 is not enabled")
    tokenizer = tiny_tokenizer()
    model = capped_gemma2(tokenizer, cap=1.0, window=16, binding=True)
    assert prefix_sharing_support(model)[0]  # eager, 5.x's default for gemma2
    model.config._attn_implementation = "sdpa"  # transformers 4.x's sdpa skipped the cap (5.x refuses it)
    assert not prefix_sharing_support(model)[0]
    model.config._attn_implementation = "eager"
    uncapped = capped_gemma2(tokenizer, cap=None, window=16, binding=True)
    ids = system_prompt_ids(tokenizer)
    with torch.inference_mode():
        shared, _ = last_token_rewards(model, ids, batch_size=16, batch_tokens=16384)
        plain, _ = last_token_rewards(model, ids, batch_size=16, batch_tokens=16384, share=False)
        uncapped, _ = last_token_rewards(uncapped, ids, batch_size=16, batch_tokens=16384, share=False)
    np.testing.assert_allclose(shared, plain, atol=1e-5 * max(1.0, float(np.abs(plain).max())))
    assert float(np.abs(uncapped - plain).max()) > 0.1 * float(np.std(plain))


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


def test_rows_over_the_token_budget_are_split_each_whole_and_stay_exact(monkeypatch):
    """A small row budget: several packed rows, each within it (or one sequence alone), each
    holding the whole path of every sequence it reads, ancestors before descendants, and
    the rewards still the plain ones."""
    model, tokenizer = tiny_rm(seed=1)
    texts = [render(tokenizer, [{"role": "user", "content": PROMPTS[i % 3] * (1 + i % 2)},
                                {"role": "assistant", "content": f"answer number {i} " * (1 + i % 4)}]) for i in range(40)]
    ids, _ = tokenize_rendered(tokenizer, texts)
    budget = 2 * max(map(len, ids))
    monkeypatch.setitem(prefix_sharing.PACKED_TOKENS, "cpu", budget)
    rows = []
    packed = prefix_sharing._packed_states
    monkeypatch.setattr(prefix_sharing, "_packed_states", lambda m, seqs, segments: rows.append(segments) or packed(m, seqs, segments))
    with torch.inference_mode():
        shared, stats = last_token_rewards(model, ids, batch_size=16, batch_tokens=16384)
        plain, _ = last_token_rewards(model, ids, batch_size=16, batch_tokens=16384, share=False)
    np.testing.assert_allclose(shared, plain, atol=1e-5)
    assert len(rows) > 3 and stats.grouped == 40
    assert stats.tokens_forwarded == sum(len(s) for segments in rows for s in segments)
    for segments in rows:
        assert sum(map(len, segments)) <= budget
        for n, segment in enumerate(segments):
            assert all(a in segments[:n] for a in segment.path()[:-1])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=8), min_size=1, max_size=16), st.integers(1, 20))
def test_the_prefix_tree_forwards_each_distinct_prefix_once_and_rows_hold_whole_paths(sequences, budget):
    """Small alphabets make deep trees: each sequence is the tokens along its path, the
    segments hold each distinct prefix once (the trie's nodes), siblings part at their first
    token, and every packed row holds each of its sequences' whole path."""
    hosts = sorted(set(fold_prefixes(sequences)))
    seqs = [sequences[h] for h in hosts]
    order, leaves = prefix_sharing.prefix_tree(seqs)
    assert sorted(order) == list(range(len(seqs)))
    segments = {id(s): s for leaf in leaves.values() for s in leaf.path()}.values()
    for i, leaf in leaves.items():
        assert [t for s in leaf.path() for t in seqs[s.source][s.start:s.end]] == list(seqs[i])
    assert sum(map(len, segments)) == len({tuple(s[:k]) for s in seqs for k in range(1, len(s) + 1)})
    firsts = [(id(s.parent), seqs[s.source][s.start]) for s in segments]
    assert len(firsts) == len(set(firsts)) and all(len(s) > 0 for s in segments)
    read = []
    for row, members in prefix_sharing.packed_calls(order, leaves, budget):
        assert len(members) == 1 or sum(map(len, row)) <= budget
        assert all(all(s in row for s in leaves[i].path()) for i in members)
        read += members
    assert sorted(read) == list(range(len(seqs)))


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
    assert stats.tokens_forwarded == alone_stats.tokens_forwarded  # the prompt too, inside its shared segment
    assert stats.grouped == len(riders) + 1
    assert len(set(np.round(plain[len(ids):len(ids) + 6], 4)) - set(np.round(plain[:6], 4))) > 0  # they differ


def test_no_sharing_where_it_would_not_be_exact():
    from transformers import BertConfig, BertForSequenceClassification

    encoder = BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                                                       num_attention_heads=4, intermediate_size=64, num_labels=1))
    assert not prefix_sharing_support(encoder)[0]


def test_a_packed_forward_whose_attention_bypasses_tree_attention_fails_loudly():
    """BLOOM computes its own attention (ALiBi), not through transformers' interface: forced to
    pack, its texts would attend to the texts before them in the row. The scorer raises
    instead of returning those rewards."""
    from transformers import BloomConfig, BloomForSequenceClassification

    tokenizer = tiny_tokenizer()
    bloom = BloomForSequenceClassification(BloomConfig(vocab_size=len(tokenizer), hidden_size=32, n_layer=2, n_head=4,
                                                       num_labels=1)).eval()
    assert not prefix_sharing_support(bloom)[0]
    ids, _ = tokenize_rendered(tokenizer, texts_of(tokenizer))
    with torch.inference_mode(), pytest.raises(RuntimeError, match="never ran rmaudit's tree attention"):
        last_token_rewards(bloom, ids, batch_size=16, batch_tokens=16384, share=True)


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


def length_scaled_rope_rm(tokenizer, original_max: int = 40):
    """A tiny Llama with LongRoPE: a forward whose positions pass ``original_max`` uses the long
    rotary factors, a shorter one the short factors. A text shorter than that, forwarded alone, is
    encoded with the short ones; packed in a row with longer texts, with the long ones:
    sharing is not exact for it."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    rope = {"rope_type": "longrope", "short_factor": [1.0] * 4, "long_factor": [4.0, 8.0, 16.0, 32.0],
            "original_max_position_embeddings": original_max, "factor": 4.0}
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4 * original_max, num_labels=1,
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
    ids += [row[:30] for row in ids[:4]]  # short readings: the short factors alone, the long ones inside a text
    with torch.inference_mode():  # forced anyway: the rewards really move
        shared, _ = last_token_rewards(model, ids, batch_size=16, batch_tokens=16384, share=True)
        alone, _ = last_token_rewards(model, ids, batch_size=1, batch_tokens=16384, share=False)
    assert np.abs(shared - alone).max() > 1e-3 * np.std(alone)  # rounding moves them by 1e-6 of it


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
