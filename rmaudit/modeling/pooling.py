"""Where a reward is read in a model: last-token pooling from the attention mask, the head,
and what kind of model reads it.

The reward is the head applied to the hidden state at the LAST REAL token of each row.
Reading ``hidden[:, -1]`` is the classic padding-side bug: with right padding it reads a
pad position. The index below is correct for right padding, left padding and any mask.

That reading, and naming a reward by the token ids up to it, hold for causal decoders.
An encoder's own pooling reads states of the whole row (BERT's [CLS]), so
:func:`attends_causally` is measured once per model and the readers below take it into
account: the position ids passed, which ids name a reading, what the head reads.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

# Attribute names under which known trainers keep the scalar head.
HEAD_NAMES = ("score", "v_head", "value_head", "classifier", "reward_head")


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last position whose mask is 1, per row (0 for an all-pad row)."""
    positions = torch.arange(attention_mask.size(-1), device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(dim=-1)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on the first real token, so left padding does not
    shift rotary/learned positions (pads get position 0; they are masked anyway)."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def position_ids_for(model: nn.Module, attention_mask: torch.Tensor) -> torch.Tensor:
    """The position ids to pass with a padded batch: :func:`position_ids_from_mask`, from the
    model's first position (:func:`first_position`: RoBERTa and XLM-R number their first
    token after their padding index, and ids counted from 0 would read other position
    embeddings than every consumer's forward)."""
    return position_ids_from_mask(attention_mask) + first_position(model)


def first_position(model: nn.Module) -> int:
    """The position id of a text's first token: ``padding_idx + 1`` where the position
    embedding has a padding index (RoBERTa, XLM-R and their kin), else 0."""
    embedding = getattr(getattr(getattr(model, model.base_model_prefix, None), "embeddings", None),
                        "position_embeddings", None)
    if isinstance(embedding, nn.Embedding) and embedding.padding_idx is not None:
        return embedding.padding_idx + 1
    return 0


def reward_head(model: nn.Module) -> nn.Linear:
    """The scalar head of a sequence-classification reward model, a Linear applied to the
    body's hidden state (not the output projection of a head with a hidden layer)."""
    name, head = scalar_head(model)
    if name not in HEAD_NAMES:
        raise ValueError(f"{type(model).__name__} has no scalar Linear head named one of {HEAD_NAMES} "
                         f"applied to the body's hidden state ({name} follows a hidden layer)")
    return head


def scalar_head(model: nn.Module) -> tuple[str, nn.Linear]:
    """(its name in the state dict, the Linear that outputs the reward): the scalar head
    :func:`reward_head` finds, or the output projection of a classification head that reads
    its own position and runs a hidden layer first (transformers' RoBERTa, XLM-R and ELECTRA
    heads: ``classifier.dense`` -> tanh -> ``classifier.out_proj``). For the head's weights and
    what it reads; only :func:`reward_head` may be applied to a body's hidden state."""
    for name in HEAD_NAMES:
        head = getattr(model, name, None)
        if isinstance(head, nn.Linear) and head.out_features == 1:
            return name, head
        out = getattr(head, "out_proj", None)
        if isinstance(out, nn.Linear) and out.out_features == 1:
            return f"{name}.out_proj", out
    raise ValueError(f"{type(model).__name__} has no scalar Linear head named one of {HEAD_NAMES} "
                     "(or their out_proj)")


def position_limit(model: nn.Module) -> int | None:
    """The most tokens the model can read at once: ``config.max_position_embeddings``, less the
    positions an embedding numbered after its padding index never uses (RoBERTa, XLM-R: 514
    embeddings, the first two reserved, 512 usable); None where the config names no limit."""
    positions = getattr(model.config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0:
        return None
    return positions - first_position(model)


def reward_body(model: nn.Module) -> nn.Module:
    """The transformer body (``model.model`` for Llama, ``model.transformer`` for GPT-2, ...)."""
    body = getattr(model, model.base_model_prefix, None)
    if body is None:
        raise ValueError(f"{type(model).__name__} exposes no body under {model.base_model_prefix!r}")
    return body


def pooled_hidden(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(N, d) hidden states at the last real token of each row."""
    out = reward_body(model)(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_for(model, attention_mask),
        use_cache=False,
    )
    hidden = out.last_hidden_state
    rows = torch.arange(hidden.size(0), device=hidden.device)
    return hidden[rows, last_token_index(attention_mask)]


def apply_head(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """(N,) float32 rewards from (N, d) pooled hidden states, the head computed in float32
    whatever the autocast or weight dtype: a bfloat16 reward has 8 significant bits, so
    rewards near -2 land on a 0.016 grid and close pairs tie (2% of 308 hh pairs under bf16
    autocast did; the backward still reaches bf16 bodies and fp32 master weights alike)."""
    return _float32_linear(reward_head(model), hidden)


def _float32_linear(head: nn.Linear, hidden: torch.Tensor) -> torch.Tensor:
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        bias = head.bias.float() if head.bias is not None else None
        return nn.functional.linear(hidden.float(), head.weight.float(), bias).squeeze(-1)


def head_inputs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(N, d) what the scalar head reads in the model's own forward, one state per row: an
    encoder's pooled first position (BERT, DeBERTa), the hidden layer of a RoBERTa-style head.
    For models whose own pooling picks one state per row before the head; a head applied at
    every position (a decoder's ``score``) is refused."""
    _, head = scalar_head(model)
    seen: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_for(model, attention_mask))
    finally:
        hook.remove()
    if not seen or seen[-1].dim() != 2:
        raise ValueError(f"{type(model).__name__}'s head does not read one state per row")
    return seen[-1]


def pooled_rewards(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(N,) float32 rewards with mask pooling: the head applied at each row's last real token."""
    return apply_head(model, pooled_hidden(model, input_ids, attention_mask))


def native_rewards(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(N,) float32 rewards as the model's own forward reads them, for a model whose own
    pooling picks one state per row (an encoder's pooler): what transformers and TRL's
    RewardTrainer read, with the scalar head computed in float32 as :func:`apply_head` does."""
    return _float32_linear(scalar_head(model)[1], head_inputs(model, input_ids, attention_mask))


def native_read_prefix(ids: Sequence[int], pad_id: int) -> list[int]:
    """The prefix transformers' own pooling reads in a right-padded row: up to the last token
    whose id is not ``config.pad_token_id`` (the first token when every id is the pad id)."""
    last = max((i for i, t in enumerate(ids) if t != pad_id), default=0)
    return list(ids[:last + 1])


def attends_causally(model: nn.Module) -> bool:
    """Whether each position's hidden state depends on the tokens up to it only (a causal
    decoder), so that a reward read at a token is named by the ids up to it. Measured, not
    looked up: BERT-family encoders share classes with their causal variants
    (``config.is_decoder``) and remote code names no family. Two rows that differ only in
    their last token go through the body once; an encoder's earlier states move with it.
    Cached on the model; a body that cannot run this way counts as not causal (the safe side:
    its readings are then taken whole, never by prefix)."""
    known = getattr(model, "_rmaudit_attends_causally", None)
    if known is None:
        known = False if getattr(model.config, "is_encoder_decoder", False) else _earlier_states_fixed(model)
        model._rmaudit_attends_causally = known
    return known


def _earlier_states_fixed(model: nn.Module, length: int = 8) -> bool:
    param = next(model.parameters())
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    if vocab < 2:
        return False
    ids = torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(0)).repeat(2, 1)
    ids[1, -1] = (ids[0, -1] + 1) % vocab
    ids = ids.to(param.device)
    training = model.training
    model.eval()  # dropout would move the rows apart at random
    try:
        with torch.inference_mode():
            try:
                out = reward_body(model)(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
            except TypeError:  # a body (remote code) that takes no use_cache
                out = reward_body(model)(input_ids=ids, attention_mask=torch.ones_like(ids))
            hidden = out[0].float()  # last_hidden_state, or a tuple's first
    except Exception:  # noqa: BLE001 - a body this call cannot run is read whole (the safe side)
        return False
    finally:
        model.train(training)
    earlier = hidden[:, :-1]
    # The rows' earlier positions run the same kernels on the same inputs: a causal body gives
    # them the same states up to rounding; a different last token moves an encoder's by far more.
    return bool((earlier[0] - earlier[1]).abs().max() <= 1e-3 * earlier.abs().max().clamp(min=1e-12))


def native_prefixes(model: Any, tokenizer: Any, rows: Sequence[Sequence[int]], padding_side: str) -> list[list[int]] | None:
    """What the model's own forward reads in a batch of ``rows`` padded on ``padding_side``,
    as the ids its reward depends on; None where that is not a prefix of the row: a model
    that does not attend causally pools positions whose states depend on the whole row (an
    encoder's first token), so its own forward's reward is read only by running it."""
    if not attends_causally(model):
        return None
    pad = getattr(model.config, "pad_token_id", None)
    if pad is None:
        if len(rows) > 1:  # transformers' own refusal (GenericForSequenceClassification)
            raise ValueError("Cannot handle batch sizes > 1 if no padding token is defined (config.pad_token_id)")
        return [list(r) for r in rows]
    if padding_side != "right" or pad != tokenizer.pad_token_id:
        return None  # default positions count left pads; a pad id the rows are not padded with is read past the end
    return [native_read_prefix(r, pad) for r in rows]
