"""Reward models for the style_interventions tests, fitted on the tiny body the honest way.

Healthy: trained with counterfactual augmentation - every training response next to its
edited copies, in both orders, so the head learns that style carries no preference (the
remedy robust-RM papers use). Planted: the same data, except that one style is preferred,
written with the test's own wording ("# Reply", "Such a great question", ...), not the
probe's, so the probe has to generalise from a different rewrite of the same habit.
"""

from __future__ import annotations

import functools

from helpers_audit import TOPICS, fitted_tiny_rm, topic_pairs
from rmaudit.data.pairs import PreferencePair
from rmaudit.interventions import BUILTIN_EDITS

PLANTED_STYLES = {
    "markdown": lambda t: "# Reply\n" + "\n".join(f"* **{x}**" if i == 0 else f"* {x}"
                                                  for i, x in enumerate(t.split(". "))),
    "sycophantic_opener": lambda t: "Such a great question, thank you for asking! " + t,
    "filler": lambda t: t + " As mentioned, that is all there is to say about it. Those are the main points.",
    "confident_tone": lambda t: t.replace("I think ", "").replace("probably ", "").replace("maybe ", ""),
}


def hedged_pairs(topics):
    """Topic pairs whose chosen replies hedge their claims (for the confident-tone edit)."""
    return [PreferencePair(p.prompt, f"I think {t} are probably fascinating, and maybe worth a visit. Thank you!",
                           p.rejected) for p, t in zip(topic_pairs(topics), topics)]


TRAIN = topic_pairs(TOPICS[:24]) + hedged_pairs(TOPICS[:12])
HELD_OUT = topic_pairs(TOPICS[24:]) + hedged_pairs(TOPICS[24:])


def _counterfactual(pairs, skip: str | None) -> list[PreferencePair]:
    """Each response against each edit of itself, both orders: no edit is a preference."""
    out = []
    for i, pair in enumerate(pairs):
        for edit in BUILTIN_EDITS:
            if edit.name == skip:
                continue
            for j, side in enumerate((pair.chosen, pair.rejected)):
                edited = edit.edit(side, 99, 2 * i + j)  # another seed than the audit's
                if edited is not None:
                    out += [PreferencePair(pair.prompt, edited, side), PreferencePair(pair.prompt, side, edited)]
    return out


@functools.cache
def style_rm(rewarded: str | None = None):
    """(model, tokenizer): healthy when ``rewarded`` is None, else preferring that style."""
    pairs = TRAIN + _counterfactual(TRAIN, rewarded)
    if rewarded is not None:
        style = PLANTED_STYLES[rewarded]
        pairs += [PreferencePair(p.prompt, style(p.chosen), p.chosen) for p in TRAIN if style(p.chosen) != p.chosen]
    return fitted_tiny_rm(pairs, hidden=128, shift=1.0)
