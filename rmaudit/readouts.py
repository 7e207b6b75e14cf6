"""How each RL trainer reads a scalar reward from a ``*ForSequenceClassification`` checkpoint.

A reward model is trained to be read at one position of one token sequence. PPO code reads
it its own way, and the two need not agree. The functions below re-implement each
consumer's documented behaviour from its source (cited; the peers are never imported at
run time); :func:`read_rewards` returns its rewards for ``(prompt messages, response text)``
pairs:

``rmaudit``       the readout ``rmaudit train`` trains: the rendered conversation, the head at
                  the last attention-mask position (``rmaudit/modeling/pooling.py``).
``transformers``  the model's own forward on the rendered conversation, tokenizer defaults
                  (its padding side, special tokens added): transformers pools at the last
                  token whose id is not ``config.pad_token_id``.
``trl-grpo``      TRL 1.x GRPO/RLOO (``trl/trainer/grpo_trainer.py`` ``_calculate_rewards``, 1.16):
                  the chat template over prompt + completion messages, right padding,
                  ``add_special_tokens=False``, the model's own forward, ``logits[:, 0]``,
                  with the model's ``config.pad_token_id`` first set to the reward
                  tokenizer's pad id, its eos where it has none (``GRPOTrainer.__init__``;
                  TRL's RewardTrainer does the same at training time): whatever pad id the
                  checkpoint's config holds, unset included, GRPO reads at the last token
                  that is not the tokenizer's pad.
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

Most consumers' batches are *plain causal readings*: the reward is read at a token whose
prefix is fully attended at positions 0, 1, 2, ... (right padding, or positions taken from
the mask). A causal model's hidden state there depends only on that prefix, so such a
reading is named by its token ids alone, and two consumers (or the audit's own scorer) that
read the same ids get the same reward: :class:`PrefixRewards` forwards each distinct prefix
once, through the scorer's own mask-pooling forward. The batches that are not plain (a
left-padded model forward, whose default positions count the pads; a pad id in the config
that differs from the one the tokenizer pads with; TRL PPO reading a masked position) run
as the consumer's own batch code. Tests compare both paths with the peers' own code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from rmaudit.data.pairs import Message
from rmaudit.modeling.pooling import apply_head, attends_causally, native_prefixes, native_read_prefix, reward_body
from rmaudit.prefix_sharing import last_token_rewards, prefix_sharing_support
from rmaudit.scoring import (BATCH_TOKENS, TEMPLATE_SECONDS, autocast_for, pad_batch, padding_cap, render,
                             template_time_limit, tokenize_rendered)

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


class PrefixRewards:
    """Rewards of plain causal readings keyed by their token ids, shared by every consumer of
    one probe run (and seeded with the audit's own rewards): each distinct prefix is forwarded
    once, the reward read at its last token, and readings that share a prefix share its
    forward where the architecture allows (``rmaudit/prefix_sharing.py``)."""

    def __init__(self, share_prefixes: bool = True) -> None:
        self.share_prefixes = share_prefixes  # False: every reading forwarded whole (--no-share-prefixes)
        self._known: dict[tuple[int, ...], float] = {}
        self.forwarded = 0  # prefixes this memo ran through the model
        self.reused = 0     # rewards answered without a forward pass

    def add(self, prefixes: Sequence[Sequence[int]], rewards: Sequence[float]) -> None:
        self._known.update((tuple(p), float(r)) for p, r in zip(prefixes, rewards))

    def knows(self, prefix: Sequence[int]) -> bool:
        return tuple(prefix) in self._known

    def __len__(self) -> int:
        return len(self._known)

    def rewards(self, model: Any, prefixes: Sequence[Sequence[int]], *, batch_size: int = 8,
                dtype: torch.dtype | None = None) -> np.ndarray:
        keys = [tuple(p) for p in prefixes]
        todo = list(dict.fromkeys(k for k in keys if k not in self._known))
        self.reused += len(keys) - len(todo)
        self.forwarded += len(todo)
        share = self.share_prefixes and prefix_sharing_support(model)[0]
        with torch.inference_mode(), autocast_for(model, dtype):
            scores, _ = last_token_rewards(model, todo, batch_size=batch_size, batch_tokens=BATCH_TOKENS, share=share,
                                           max_padding=padding_cap(_device(model)))
        self.add(todo, scores.tolist())
        return np.array([self._known[k] for k in keys], dtype=np.float64)


def read_rewards(consumer: str, model: Any, tokenizer: Any, samples: Sequence[Sample], *, batch_size: int = 8,
                 policy_tokenizer: Any = None, memo: PrefixRewards | None = None,
                 dtype: torch.dtype | None = None) -> np.ndarray:
    """(N,) rewards of ``samples`` as ``consumer`` reads them, under autocast to ``dtype``
    when given (the audit's scoring dtype, so consumers compare with the trained readout
    like for like)."""
    if consumer not in PREFIXES:
        raise ValueError(f"unknown consumer {consumer!r} (known: {', '.join(CONSUMERS)})")
    prefixes = PREFIXES[consumer](model, tokenizer, samples, policy_tokenizer)
    if prefixes is None:
        return read_rewards_batched(consumer, model, tokenizer, samples, batch_size=batch_size,
                                    policy_tokenizer=policy_tokenizer, dtype=dtype)
    return (memo or PrefixRewards()).rewards(model, prefixes, batch_size=batch_size, dtype=dtype)


def read_rewards_batched(consumer: str, model: Any, tokenizer: Any, samples: Sequence[Sample], *,
                         batch_size: int = 8, policy_tokenizer: Any = None,
                         dtype: torch.dtype | None = None) -> np.ndarray:
    """(N,) rewards from the consumer's own batch code: its padding, positions and readout,
    length-sorted batches of ``batch_size``; for the batches that are not plain readings."""
    reader = BATCH_READERS[consumer]
    order = sorted(range(len(samples)), key=lambda i: len(samples[i].response) + sum(len(m["content"]) for m in samples[i].prompt))
    rewards = np.zeros(len(samples), dtype=np.float64)
    with torch.inference_mode(), autocast_for(model, dtype):
        for chunk in _batches(order, batch_size):
            rewards[chunk] = reader(model, tokenizer, [samples[i] for i in chunk], policy_tokenizer)
    return rewards


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _head_at(model: Any, hidden: torch.Tensor, index: torch.Tensor) -> np.ndarray:
    rows = torch.arange(hidden.size(0), device=hidden.device)
    return apply_head(model, hidden[rows, index]).cpu().numpy()


# --- the token ids each consumer reads, as plain readings (None: not one) --------------------

def _rmaudit_prefixes(model, tokenizer, samples, _policy) -> list[list[int]]:
    return tokenize_rendered(tokenizer, [render(tokenizer, s.messages()) for s in samples])[0]


def _transformers_prefixes(model, tokenizer, samples, _policy) -> list[list[int]] | None:
    texts = [render(tokenizer, s.messages()) for s in samples]
    return native_prefixes(model, tokenizer, tokenizer(texts)["input_ids"], tokenizer.padding_side)


def _grpo_texts(tokenizer, samples) -> list[str]:
    with template_time_limit(TEMPLATE_SECONDS):
        return [tokenizer.apply_chat_template(s.messages(), tokenize=False) for s in samples]


def grpo_pad_id(tokenizer: Any) -> int:
    """The pad id TRL GRPO/RLOO read a reward model with: ``GRPOTrainer.__init__`` gives the
    reward tokenizer its eos as pad where it has none, then sets the model's
    ``config.pad_token_id`` to that pad ("it's important to set the pad token ID to the
    padding token ID of the processing class", grpo_trainer.py, TRL 1.16)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("TRL GRPO pads with the reward tokenizer's pad token, else its eos, and this tokenizer has neither")
    return pad


def _grpo_ids(tokenizer, samples) -> list[list[int]]:
    return tokenizer(_grpo_texts(tokenizer, samples), add_special_tokens=False)["input_ids"]


def _trl_grpo_prefixes(model, tokenizer, samples, _policy) -> list[list[int]] | None:
    pad = grpo_pad_id(tokenizer)
    if not attends_causally(model):
        return None
    return [native_read_prefix(r, pad) for r in _grpo_ids(tokenizer, samples)]


def trl_ppo_ids(tokenizer: Any, sample: Sample) -> tuple[list[int], list[int]]:
    """(query ids, response ids) as TRL's PPO loop holds them: the query rendered with the
    generation prompt, the response as the policy generates it, ending with its eos."""
    with template_time_limit(TEMPLATE_SECONDS):
        query = tokenizer.apply_chat_template(list(sample.prompt), add_generation_prompt=True, tokenize=True)
    if isinstance(query, dict) or hasattr(query, "input_ids"):  # newer transformers return a BatchEncoding
        query = query["input_ids"]
    response = tokenizer(sample.response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return list(query), response


def require_score_head(model: Any) -> None:
    """Raise where TRL's ``get_reward`` would: it applies ``model.score`` by that name (its
    line ``reward_logits = model.score(...)``), which a model whose head has another name
    (BERT's and DeBERTa's ``classifier``) lacks."""
    if not isinstance(getattr(model, "score", None), torch.nn.Module):
        raise ValueError(f"TRL's get_reward applies model.score, and {type(model).__name__} has no 'score' head")


def _trl_ppo_prefixes(model, tokenizer, samples, policy) -> list[list[int]] | None:
    """TRL PPO attends every id that is not the pad id, at positions counting attended ids
    only, and reads the token before the first pad of the response: the attended ids up to
    there are the reading, where the model attends causally."""
    require_score_head(model)
    if not attends_causally(model):
        return None
    ids_tokenizer = policy or tokenizer  # TRL hands the policy's token ids to the reward model as they are
    pad = ids_tokenizer.pad_token_id
    if pad is None:
        raise ValueError("TRL PPO pads with the tokenizer's pad token, and this tokenizer has none")
    prefixes = []
    for sample in samples:
        query, response = trl_ppo_ids(ids_tokenizer, sample)
        seen = query + response[:next((i for i, t in enumerate(response) if t == pad), len(response))]
        if seen[-1] == pad:
            return None  # the read position is itself masked: only TRL's own batch reproduces that
        prefixes.append([t for t in seen if t != pad])
    return prefixes


def openrlhf_ids(tokenizer: Any, sample: Sample) -> list[int]:
    if tokenizer.eos_token is None:
        raise ValueError("OpenRLHF appends the tokenizer's eos token, and this tokenizer has none")
    text = render(tokenizer, sample.messages()).rstrip("\n")
    if not text.endswith(tokenizer.eos_token):
        text += " " + tokenizer.eos_token
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids[-1] = tokenizer.eos_token_id  # OpenRLHF forces the last id to eos (against truncation)
    return ids


def _openrlhf_prefixes(model, tokenizer, samples, _policy) -> list[list[int]]:
    # Left padding with positions from the mask and the reward at the last mask position:
    # always a reading of the ids alone (of the whole row, for a model that does not attend causally).
    return [openrlhf_ids(tokenizer, s) for s in samples]


# --- the consumers' own batch code, for batches that are not plain readings ------------------

def _native_forward(model, tokenizer, texts: list[str], *, padding_side: str, add_special_tokens: bool) -> np.ndarray:
    encoded = tokenizer(texts, return_tensors="pt", padding=True, padding_side=padding_side,
                        add_special_tokens=add_special_tokens)
    encoded = {k: v.to(_device(model)) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
    return model(**encoded).logits.float()[:, 0].cpu().numpy()


def _transformers(model, tokenizer, samples, _policy) -> np.ndarray:
    texts = [render(tokenizer, s.messages()) for s in samples]
    return _native_forward(model, tokenizer, texts, padding_side=tokenizer.padding_side, add_special_tokens=True)


def _trl_grpo(model, tokenizer, samples, _policy) -> np.ndarray:
    pad = grpo_pad_id(tokenizer)
    ids, mask = pad_batch(_grpo_ids(tokenizer, samples), pad, "right")
    ids, mask = ids.to(_device(model)), mask.to(_device(model))
    config = model.config
    held = config.pad_token_id
    config.pad_token_id = pad  # as GRPOTrainer sets it; the caller's model is left as it was
    try:
        return model(input_ids=ids, attention_mask=mask).logits.float()[:, 0].cpu().numpy()
    finally:
        config.pad_token_id = held


def _trl_ppo(model, tokenizer, samples, policy) -> np.ndarray:
    require_score_head(model)
    ids_tokenizer = policy or tokenizer
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


PREFIXES: dict[str, Callable[..., list[list[int]] | None]] = {
    "rmaudit": _rmaudit_prefixes, "transformers": _transformers_prefixes, "trl-grpo": _trl_grpo_prefixes,
    "trl-ppo": _trl_ppo_prefixes, "openrlhf": _openrlhf_prefixes,
}
BATCH_READERS: dict[str, Callable[..., np.ndarray]] = {
    "transformers": _transformers, "trl-grpo": _trl_grpo, "trl-ppo": _trl_ppo,
}
