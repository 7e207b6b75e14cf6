"""How each RL trainer reads a scalar reward from a ``*ForSequenceClassification`` checkpoint.

A reward model is trained to be read at one position of one token sequence. PPO code reads
it its own way, and the two need not agree. Each function below re-implements one
consumer's documented behaviour from its source (cited; the peers are never imported at
run time) and returns float32 rewards for ``(prompt messages, response text)`` pairs:

``rmaudit``       the readout ``rmaudit train`` trains: the rendered conversation, the head at
                  the last attention-mask position (``rmaudit/modeling/pooling.py``).
``transformers``  the model's own forward on the rendered conversation, tokenizer defaults
                  (its padding side, special tokens added): transformers pools at the last
                  token whose id is not ``config.pad_token_id``.
``trl-grpo``      TRL 1.x GRPO/RLOO (``trl/trainer/grpo_trainer.py`` ``_calculate_rewards``, 1.16):
                  the chat template over prompt + completion messages, right padding,
                  ``add_special_tokens=False``, the model's own forward, ``logits[:, 0]``.
``trl-ppo``       TRL 0.x PPO/RLOO ``get_reward`` (``trl/trainer/utils.py`` in 0.19; kept in
                  ``trl/experimental/utils.py`` in 1.16): query = prompt with the generation
                  prompt, left-padded; response = the policy's tokens ending with its eos,
                  right-padded; attention mask ``ids != pad_token_id`` (so with pad == eos every
                  eos in the prompt is hidden too), masked ids set to 0, position ids an
                  exclusive cumsum of the mask, the reward read at the token before the first
                  pad after the query.
``openrlhf``      OpenRLHF (``openrlhf/datasets/reward_dataset.py`` and ``openrlhf/models/model.py``):
                  the rendered text with trailing newlines stripped and ``" " + eos`` appended
                  unless it already ends with eos, no special tokens added, the last id forced
                  to eos, left padding, the reward at the last attention-mask position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from rmaudit.data.pairs import Message
from rmaudit.modeling.pooling import last_token_index, reward_body, reward_head
from rmaudit.scoring import TEMPLATE_SECONDS, pad_batch, render, template_time_limit, tokenize_rendered

CONSUMERS = ("rmaudit", "transformers", "trl-grpo", "trl-ppo", "openrlhf")


@dataclass
class Sample:
    """One response to be rewarded: the conversation before it, and its text."""

    prompt: Sequence[Message]
    response: str

    def messages(self) -> list[Message]:
        return [*self.prompt, {"role": "assistant", "content": self.response}]


def _batches(items: Sequence[Any], size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


@torch.inference_mode()
def read_rewards(consumer: str, model: Any, tokenizer: Any, samples: Sequence[Sample], *, batch_size: int = 8,
                 policy_tokenizer: Any = None) -> np.ndarray:
    """(N,) float32 rewards of ``samples`` as ``consumer`` reads them."""
    if consumer not in READERS:
        raise ValueError(f"unknown consumer {consumer!r} (known: {', '.join(CONSUMERS)})")
    reader = READERS[consumer]
    # Length-sorted batches waste little compute on padding; rewards go back in input order.
    order = sorted(range(len(samples)), key=lambda i: len(samples[i].response) + sum(len(m["content"]) for m in samples[i].prompt))
    rewards = np.zeros(len(samples), dtype=np.float64)
    for chunk in _batches(order, batch_size):
        rewards[chunk] = reader(model, tokenizer, [samples[i] for i in chunk], policy_tokenizer)
    return rewards


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _head_at(model: Any, hidden: torch.Tensor, index: torch.Tensor) -> np.ndarray:
    rows = torch.arange(hidden.size(0), device=hidden.device)
    return reward_head(model)(hidden[rows, index]).float()[:, 0].cpu().numpy()


def _rmaudit(model, tokenizer, samples, _policy) -> np.ndarray:
    ids, _ = tokenize_rendered(tokenizer, [render(tokenizer, s.messages()) for s in samples])
    input_ids, mask = pad_batch(ids, tokenizer.pad_token_id, "right")
    input_ids, mask = input_ids.to(_device(model)), mask.to(_device(model))
    hidden = reward_body(model)(input_ids=input_ids, attention_mask=mask,
                                position_ids=(mask.long().cumsum(-1) - 1).clamp(min=0), use_cache=False).last_hidden_state
    return _head_at(model, hidden, last_token_index(mask))


def _native_forward(model, tokenizer, texts: list[str], *, padding_side: str, add_special_tokens: bool) -> np.ndarray:
    encoded = tokenizer(texts, return_tensors="pt", padding=True, padding_side=padding_side,
                        add_special_tokens=add_special_tokens)
    encoded = {k: v.to(_device(model)) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
    return model(**encoded).logits.float()[:, 0].cpu().numpy()


def _transformers(model, tokenizer, samples, _policy) -> np.ndarray:
    texts = [render(tokenizer, s.messages()) for s in samples]
    return _native_forward(model, tokenizer, texts, padding_side=tokenizer.padding_side, add_special_tokens=True)


def _trl_grpo(model, tokenizer, samples, _policy) -> np.ndarray:
    with template_time_limit(TEMPLATE_SECONDS):
        texts = [tokenizer.apply_chat_template(s.messages(), tokenize=False) for s in samples]
    return _native_forward(model, tokenizer, texts, padding_side="right", add_special_tokens=False)


def trl_ppo_ids(tokenizer: Any, sample: Sample) -> tuple[list[int], list[int]]:
    """(query ids, response ids) as TRL's PPO loop holds them: the query rendered with the
    generation prompt, the response as the policy generates it, ending with its eos."""
    with template_time_limit(TEMPLATE_SECONDS):
        query = tokenizer.apply_chat_template(list(sample.prompt), add_generation_prompt=True, tokenize=True)
    if isinstance(query, dict) or hasattr(query, "input_ids"):  # newer transformers return a BatchEncoding
        query = query["input_ids"]
    response = tokenizer(sample.response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return list(query), response


def _trl_ppo(model, tokenizer, samples, policy) -> np.ndarray:
    ids_tokenizer = policy or tokenizer  # TRL hands the policy's token ids to the reward model as they are
    pad = ids_tokenizer.pad_token_id
    pairs = [trl_ppo_ids(ids_tokenizer, s) for s in samples]
    query_len = max(len(q) for q, _ in pairs)
    response_len = max(len(r) for _, r in pairs)
    rows = [[pad] * (query_len - len(q)) + q + r + [pad] * (response_len - len(r)) for q, r in pairs]
    ids = torch.tensor(rows, device=_device(model))
    mask = ids != pad
    positions = mask.long().cumsum(1) - mask.long()
    hidden = reward_body(model)(input_ids=ids.masked_fill(~mask, 0), attention_mask=mask, position_ids=positions,
                                use_cache=False).last_hidden_state
    is_pad = ids[:, query_len:] == pad
    first_pad = torch.where(is_pad.any(1), is_pad.long().argmax(1), torch.full_like(is_pad[:, 0], response_len,
                                                                                   dtype=torch.long))
    return _head_at(model, hidden, query_len + first_pad - 1)


def openrlhf_ids(tokenizer: Any, sample: Sample) -> list[int]:
    text = render(tokenizer, sample.messages()).rstrip("\n")
    if not text.endswith(tokenizer.eos_token):
        text += " " + tokenizer.eos_token
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids[-1] = tokenizer.eos_token_id  # OpenRLHF forces the last id to eos (against truncation)
    return ids


def _openrlhf(model, tokenizer, samples, _policy) -> np.ndarray:
    input_ids, mask = pad_batch([openrlhf_ids(tokenizer, s) for s in samples], tokenizer.pad_token_id, "left")
    input_ids, mask = input_ids.to(_device(model)), mask.to(_device(model))
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
    hidden = reward_body(model)(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                                use_cache=False).last_hidden_state
    return _head_at(model, hidden, last_token_index(mask))


READERS: dict[str, Callable[..., np.ndarray]] = {
    "rmaudit": _rmaudit, "transformers": _transformers, "trl-grpo": _trl_grpo, "trl-ppo": _trl_ppo,
    "openrlhf": _openrlhf,
}
