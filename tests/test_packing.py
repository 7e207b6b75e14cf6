"""A packed training row (each pair's shared prompt once, each side's own tokens, read through
tree attention) gives the plain stacked forward's rewards and gradients for every architecture
and attention kernel it is enabled for, sliding windows shorter than the texts included, and
for pairs that share nothing and a side that begins the other."""

from __future__ import annotations

import pytest
import torch

from rmaudit.modeling.pooling import pooled_rewards
from rmaudit.prefix_sharing import TESTED_MODEL_TYPES
from rmaudit.scoring import render, tokenize_rendered
from rmaudit.train.batching import EncodedPair, collate_pairs, stack_batch
from rmaudit.train.packing import _pack, packed_pair_rewards, packing_support
from test_prefix_sharing import ANSWERS, PROMPTS, WINDOWED, capped_gemma2, tiny_model, windowed_model
from tiny_models import tiny_tokenizer


def encoded_pairs(tokenizer) -> list[EncodedPair]:
    """Answers to one prompt against each other, two different prompts (only the template's
    first tokens shared), two sides that differ from their first token (nothing shared), and
    a rejected side that is a prefix of the chosen one."""
    def ids(prompt: str, answer: str) -> list[int]:
        text = render(tokenizer, [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}])
        return tokenize_rendered(tokenizer, [text])[0][0]

    pairs = [EncodedPair(ids(p, ANSWERS[i]), ids(p, ANSWERS[i + 1])) for p in PROMPTS for i in range(0, 4, 2)]
    pairs.append(EncodedPair(ids(PROMPTS[0], ANSWERS[0]), ids(PROMPTS[1], ANSWERS[3])))
    other = ids(PROMPTS[1], ANSWERS[4])
    pairs.append(EncodedPair(ids(PROMPTS[0], ANSWERS[1]), [other[1]] + other[1:]))
    whole = ids(PROMPTS[2], ANSWERS[2])
    pairs.append(EncodedPair(whole, whole[:-3]))
    return pairs


def assert_packed_rows_give_the_plain_rewards_and_gradients(model, batch) -> torch.Tensor:
    """The plain stacked rewards, after checking that the packed rows give them and their gradients."""
    plain, plain_grads = rewards_and_grads(model, batch, packed=False)
    packed, packed_grads = rewards_and_grads(model, batch, packed=True)
    torch.testing.assert_close(packed, plain, rtol=1e-5, atol=1e-5)
    assert packed_grads.keys() == plain_grads.keys()
    for name, grad in plain_grads.items():
        # a shared token's gradients are one sum in a packed row, two in the stacked rows:
        # summation order moves entries by up to ~6e-5 of the tensor's largest (a wrong mask or
        # position moves them by its whole size)
        scale = max(1e-2, float(grad.abs().max()))
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-4, atol=1e-4 * scale, msg=name)
    return plain


def rewards_and_grads(model, batch, packed: bool):
    model.zero_grad(set_to_none=True)
    input_ids, mask = stack_batch(batch)
    rewards = (packed_pair_rewards(model, input_ids, mask, batch["shared"]) if packed
               else pooled_rewards(model, input_ids, mask))
    n = len(batch["shared"])
    (-torch.nn.functional.logsigmoid(rewards[:n] - rewards[n:]).mean()).backward()
    return rewards.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("model_type", TESTED_MODEL_TYPES)
def test_packed_rows_give_the_plain_rewards_and_gradients(model_type, attention):
    tokenizer = tiny_tokenizer()
    model = tiny_model(model_type, tokenizer)
    model.config._attn_implementation = attention
    supported, why = packing_support(model)
    assert supported, why
    pairs = encoded_pairs(tokenizer)
    batch = collate_pairs(pairs, tokenizer.pad_token_id)
    assert int(batch["shared"].min()) == 0 and int(batch["shared"].max()) > 32  # a prompt shared, and nothing
    plain = assert_packed_rows_give_the_plain_rewards_and_gradients(model, batch)
    assert float(plain.std()) > 0.01  # the rewards differ, so equal rewards are not a constant


def test_gemma2_soft_capped_logits_pack_under_eager_attention():
    """Gemma 2's eager attention caps the logits, then adds the mask: a packed row's tree mask
    is added after the same cap, so rewards and gradients stay the plain ones (query and key
    weights scaled so that a cap of 1.0 binds)."""
    tokenizer = tiny_tokenizer()
    model = capped_gemma2(tokenizer, cap=1.0, window=4096, binding=True)
    assert packing_support(model)[0]
    assert_packed_rows_give_the_plain_rewards_and_gradients(model, collate_pairs(encoded_pairs(tokenizer),
                                                                                 tokenizer.pad_token_id))


def test_a_packed_batch_forwards_the_shared_tokens_once_and_no_pads():
    tokenizer = tiny_tokenizer()
    pairs = encoded_pairs(tokenizer)
    batch = collate_pairs(pairs, tokenizer.pad_token_id)
    input_ids, mask = stack_batch(batch)
    ids, positions, segments, reads = _pack(input_ids, mask, batch["shared"], torch.device("cpu"))
    widths = [p.packed_length for p in pairs]
    assert widths == [len(p.chosen_ids) + len(p.rejected_ids) - p.shared for p in pairs]
    assert len(ids) == len(positions) == sum(widths) < 0.8 * int(mask.sum())
    # each side's last token is read, at the position it has in its own sequence
    sides = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
    assert [int(ids[r]) for r in reads] == [s[-1] for s in sides]
    assert [int(positions[r]) for r in reads] == [len(s) - 1 for s in sides]
    assert sum(s.end - s.start for s in segments) == len(ids)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("model_type", WINDOWED)
def test_a_sliding_window_shorter_than_the_texts_packs_and_gives_the_plain_rewards_and_gradients(model_type, attention):
    """An 8-token window over texts of 40-80 tokens: one packed row applies each layer's window
    as the model's own mask does (before 0.5.18 such a model trained stacked). The window
    changes the rewards, so a packed row that ignored it would fail."""
    tokenizer = tiny_tokenizer()
    model = windowed_model(model_type, tokenizer, window=8)
    model.config._attn_implementation = attention
    assert packing_support(model)[0]
    batch = collate_pairs(encoded_pairs(tokenizer), tokenizer.pad_token_id)
    assert int(stack_batch(batch)[1].sum(dim=1).min()) > 4 * 8
    windowed = assert_packed_rows_give_the_plain_rewards_and_gradients(model, batch)
    model.config.sliding_window = 4096
    unwindowed, _ = rewards_and_grads(model, batch, packed=False)
    assert float((unwindowed - windowed).abs().max()) > 0.1 * float(windowed.std())


def test_no_packing_where_sharing_a_prefix_is_not_exact():
    """The conditions are the audit's prefix sharing's: a tested causal architecture, rotary
    positions that do not scale with the length, logit caps only where the kernel applies them."""
    tokenizer = tiny_tokenizer()
    model = tiny_model("llama", tokenizer)
    dynamic = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
    model.config.rope_scaling = dynamic
    if getattr(model.config, "rope_parameters", None) is not None:  # transformers 5.x reads this one
        model.config.rope_parameters = dynamic
    supported, why = packing_support(model)
    assert not supported and "dynamic" in why
    capped = capped_gemma2(tokenizer, cap=50.0, window=4096)
    capped.config._attn_implementation = "sdpa"
    supported, why = packing_support(capped)
    assert not supported and "soft-caps" in why
