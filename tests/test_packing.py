"""Packed pair rows (the shared prompt once, each side's own tokens under a tree mask) give the
plain stacked forward's rewards and gradients for every architecture and attention kernel
they are enabled for, including pairs that share nothing and a side that begins the other."""

from __future__ import annotations

import pytest
import torch

from rmaudit.modeling.pooling import pooled_rewards
from rmaudit.prefix_sharing import TESTED_MODEL_TYPES
from rmaudit.scoring import render, tokenize_rendered
from rmaudit.train.batching import EncodedPair, collate_pairs, stack_batch
from rmaudit.train.packing import packed_padded_fraction, packed_pair_rewards, packing_support
from test_prefix_sharing import ANSWERS, PROMPTS, capped_gemma2, tiny_model
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
    supported, why = packing_support(model, max_length=512)
    assert supported and attention in why, why
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
    assert packing_support(model, max_length=512)[0]
    assert_packed_rows_give_the_plain_rewards_and_gradients(model, collate_pairs(encoded_pairs(tokenizer),
                                                                                 tokenizer.pad_token_id))


def test_a_packed_batch_forwards_the_shared_tokens_once():
    tokenizer = tiny_tokenizer()
    pairs = encoded_pairs(tokenizer)
    batch = collate_pairs(pairs, tokenizer.pad_token_id)
    _, mask = stack_batch(batch)
    widths = [p.packed_length for p in pairs]
    assert widths == [len(p.chosen_ids) + len(p.rejected_ids) - p.shared for p in pairs]
    assert sum(widths) < 0.8 * int(mask.sum())
    assert packed_padded_fraction(mask, batch["shared"]) == pytest.approx(1 - sum(widths) / (len(widths) * max(widths)))


def test_no_packing_where_the_attention_takes_no_custom_mask_or_a_window_is_shorter_than_max_length():
    tokenizer = tiny_tokenizer()
    model = tiny_model("llama", tokenizer)
    model.config._attn_implementation = "flash_attention_2"
    supported, why = packing_support(model)
    assert not supported and "flash_attention_2" in why
    sliding = tiny_model("mistral", tokenizer)
    sliding.config.sliding_window = 16
    for max_length in (None, 17, 512):  # one packed mask for every layer cannot window a longer sequence
        supported, why = packing_support(sliding, max_length)
        assert not supported and "sliding window of 16 tokens" in why
    assert packing_support(sliding, 16)[0]  # within the window it hides nothing
