"""rmaudit.policy_sampler against transformers' own generate: greedy decoding token for token
on real tiny causal LMs (Llama; GPT-2 with learned positions; Mistral with a sliding window
shorter than the prompts), rows that end early leaving the batch, and the sampler's draws
against the distribution they claim."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

from rmaudit.policy_sampler import (
    CACHE_BYTES,
    MAX_ROWS,
    MIN_ROWS,
    cache_bytes_per_token,
    draw_tokens,
    plan_batches,
    sample_continuations,
)

VOCAB, PAD = 97, 0


def _llama():
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, pad_token_id=PAD))


def _gpt2():
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=128,
                                      pad_token_id=PAD))


def _mistral():
    return MistralForCausalLM(MistralConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, sliding_window=6,
                                            pad_token_id=PAD))


def _prompts(lengths):
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(1, VOCAB, (n,), generator=generator).tolist() for n in lengths]


def _reference(model, prompt, max_new_tokens):
    """transformers' greedy generate on the prompt alone: no padding, no batch."""
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens,
                         min_new_tokens=max_new_tokens, pad_token_id=PAD, eos_token_id=None)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("build", [_llama, _gpt2, _mistral], ids=["llama", "gpt2", "mistral-sliding-window"])
def test_greedy_decoding_matches_generate_token_for_token_with_early_stops(build):
    torch.manual_seed(0)
    model = build().double().eval()  # float64: no argmax near-tie can flip between two correct computations
    prompts = _prompts([3, 11, 7, 16])
    with torch.inference_mode():
        references = [_reference(model, p, 10) for p in prompts]
        stop = _stop_for_some(references)
        drawn = sample_continuations(model, prompts, n=2, max_new_tokens=10, temperature=0,
                                     generator=torch.Generator(), stop_ids={stop}, pad_id=PAD)
    assert len(drawn) == 8
    for i, reference in enumerate(references):
        expected = reference[:reference.index(stop) + 1] if stop in reference else reference
        assert drawn[2 * i] == expected and drawn[2 * i + 1] == expected, f"prompt {i}"
    assert any(len(c) < 10 for c in drawn) and any(len(c) == 10 for c in drawn)  # rows left the batch mid-way


def _stop_for_some(references):
    """A token that ends some continuations after their first step and not others: rows leave
    the batch while others go on."""
    for token in sorted({t for r in references for t in r[1:]}):
        ends = [token in r and 0 < r.index(token) for r in references]
        if any(ends) and not all(token in r for r in references):
            return token
    raise AssertionError(f"no token ends some continuations only: {references}")


def test_draws_follow_the_tempered_distribution_and_never_pick_a_zero_probability_token():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2, 0.0])).repeat(40_000, 1)
    generator = torch.Generator().manual_seed(0)
    for temperature in (1.0, 2.0):
        expected = torch.softmax(logits[0] / temperature, dim=-1)
        counts = torch.bincount(draw_tokens(logits, temperature, generator), minlength=4) / len(logits)
        assert counts[3] == 0
        assert torch.allclose(counts, expected, atol=0.01), (temperature, counts, expected)  # 4 standard errors


def test_sampling_is_seeded_and_each_sample_ends_at_its_stop_token_or_the_limit_as_the_bar_hears():
    torch.manual_seed(0)
    model = _llama().eval()
    prompts = _prompts([5, 9, 2])

    def draw(seed, ended=lambda count: None):
        with torch.inference_mode():
            return sample_continuations(model, prompts, n=3, max_new_tokens=15, temperature=1.0,
                                        generator=torch.Generator().manual_seed(seed), stop_ids={5, 6, 7}, pad_id=PAD,
                                        ended=ended)

    heard: list[int] = []
    first = draw(0, heard.append)
    assert first == draw(0) and first != draw(1)
    assert any(len(c) < 15 for c in first) and any(len(c) == 15 for c in first)  # some rows left the batch early
    # the progress bar hears of each continuation once, when it ends: step by step, not per batch
    assert sum(heard) == 9 and heard[-1] == sum(len(c) == 15 for c in first)
    assert [sum(heard[:step + 1]) for step in range(len(heard))][:-1] == [
        sum(len(c) <= step + 1 for c in first) for step in range(len(heard) - 1)]
    for continuation in first:
        assert all(t not in {5, 6, 7} for t in continuation[:-1])
        assert len(continuation) == 15 or continuation[-1] in {5, 6, 7}


@pytest.mark.parametrize("per_token", [40_000, 4_000_000, None], ids=["small-cache", "large-cache", "unknown"])
def test_batches_are_length_sorted_and_grow_past_the_minimum_only_within_the_cache_budget(per_token):
    lengths = [40, 5, 300, 12, 12, 700, 60, 8, 30, 31, 33, 35, 36, 37, 38, 39, 41, 42, 43, 44]
    batches = plan_batches(lengths, n=4, max_new_tokens=100, cache_bytes_per_token=per_token)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat)
    for batch in batches:
        rows, width = len(batch) * 4, max(lengths[i] for i in batch) + 100
        assert rows <= MIN_ROWS or (rows <= MAX_ROWS and rows * width * per_token <= CACHE_BYTES)
    sizes = [len(b) * 4 for b in batches]
    if per_token == 40_000:  # 44 rows of 140 tokens fit 512 MiB: the short prompts go together
        assert max(sizes) > MIN_ROWS
    else:
        assert max(sizes) == MIN_ROWS


@pytest.mark.parametrize("build", [_llama, _gpt2, _mistral], ids=["llama", "gpt2", "mistral"])
def test_the_cache_size_estimate_is_what_the_model_caches(build):
    model = build().eval()
    with torch.inference_mode():
        cache = model(torch.randint(1, VOCAB, (3, 5)), use_cache=True).past_key_values
    cached = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    assert cache_bytes_per_token(model) == cached / (3 * 5)


def test_a_state_space_policy_is_refused_naming_rollouts_file():
    """transformers 4.x: Mamba takes no key/value cache; 5.x: its cache layers cannot be cut by row."""
    from transformers import MambaConfig, MambaForCausalLM

    model = MambaForCausalLM(MambaConfig(vocab_size=VOCAB, hidden_size=16, state_size=4, num_hidden_layers=1)).eval()
    with pytest.raises(TypeError, match="MambaForCausalLM.*--rollouts-file"):
        sample_continuations(model, [[1, 2, 3]], n=1, max_new_tokens=2, temperature=1.0,
                             generator=torch.Generator(), stop_ids=set(), pad_id=PAD)
