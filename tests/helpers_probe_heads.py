"""Reward heads fitted honestly on synthetic preference data, for the probe tests.

A tiny random Llama body is frozen; its scalar head is fitted by Bradley-Terry (L2-
regularised logistic regression on pooled hidden-state differences) to pairs where either
the LONGER response is chosen (a length-rewarding RM) or the chosen response comes from a
polite vocabulary and the rejected one from a rude vocabulary with lengths drawn
independently (an RM that learned content and for which length is uninformative).
"""

from __future__ import annotations

import numpy as np
import torch

from rmaudit.data.pairs import PreferencePair
from rmaudit.modeling.pooling import pooled_hidden
from rmaudit.scoring import pad_batch, render, tokenize_rendered
from tiny_models import tiny_rm

NEUTRAL = ("the a river stone light garden quick slow bright cold warm house paper music window "
           "answer simple careful small large green blue morning evening story number").split()
POLITE = "thanks please kindly gladly happy helpful careful clear correct gentle friendly welcome".split()
RUDE = "stupid idiot whatever ugly wrong lazy rude angry broken nasty useless boring".split()


def words(rng: np.random.Generator, n: int, pool: list[str]) -> str:
    return " ".join(rng.choice(pool, size=n))


def synthetic_pairs(seed: int, n: int, rule: str) -> list[PreferencePair]:
    """``rule="length"``: the longer neutral response is chosen. ``rule="content"``: polite
    beats rude, each side's length drawn independently in [3, 60) words."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        prompt = [{"role": "user", "content": words(rng, int(rng.integers(3, 10)), NEUTRAL) + "?"}]
        a, b = int(rng.integers(3, 60)), int(rng.integers(3, 60))
        if rule == "length":
            chosen, rejected = words(rng, max(a, b) + 2, NEUTRAL), words(rng, min(a, b), NEUTRAL)
        elif rule == "content":
            chosen, rejected = words(rng, a, POLITE), words(rng, b, RUDE)
        else:
            raise ValueError(rule)
        pairs.append(PreferencePair(prompt, chosen, rejected, source="synthetic.jsonl", row=i + 1))
    return pairs


def pooled_features(model, tokenizer, conversations) -> np.ndarray:
    ids, _ = tokenize_rendered(tokenizer, [render(tokenizer, c) for c in conversations])
    input_ids, mask = pad_batch(ids, tokenizer.pad_token_id, "right")
    with torch.inference_mode():
        return pooled_hidden(model, input_ids, mask).double().numpy()


def fit_bt_head(model, tokenizer, pairs: list[PreferencePair], strength: float = 1.0) -> float:
    """Fit ``model.score`` by Bradley-Terry on frozen pooled features; returns train accuracy."""
    from sklearn.linear_model import LogisticRegression

    diff = (pooled_features(model, tokenizer, [p.chosen_messages() for p in pairs])
            - pooled_features(model, tokenizer, [p.rejected_messages() for p in pairs]))
    # Both orientations of every pair: the BT likelihood is symmetric, so no intercept.
    x = np.vstack([diff, -diff])
    y = np.r_[np.ones(len(diff)), np.zeros(len(diff))]
    fit = LogisticRegression(fit_intercept=False, C=strength, max_iter=5000).fit(x, y)
    with torch.no_grad():
        model.score.weight.copy_(torch.tensor(fit.coef_, dtype=model.score.weight.dtype))
    return float(np.mean(diff @ fit.coef_[0] > 0))


def fitted_rm(rule: str, *, seed: int = 0, n_train: int = 80, hidden: int = 32):
    """(model, tokenizer): tiny Llama RM whose head was fitted on ``rule`` pairs."""
    model, tokenizer = tiny_rm(hidden=hidden, seed=seed)
    fit_bt_head(model, tokenizer, synthetic_pairs(seed, n_train, rule))
    return model, tokenizer
