"""Policy samples for the on-policy probes: rollouts.jsonl files written the way any policy's
samples arrive (prompt and response per line), and a real tiny causal LM to sample from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from helpers_probe_heads import NEUTRAL, POLITE, RUDE, words

DRIFT = "{ } ( ) ;; => ### $$ 0x7f <<< >>> ~~ @@ %% ^^ :: def return lambda yield 42 99 !!! ???".split()


def write_rollouts(path: Path, *, seed: int = 0, prompts: int = 16, per_prompt: int = 4, style: str = "mixed",
                   collapsed: bool = False) -> Path:
    """``style="mixed"``: polite or rude samples, lengths drawn independently (what a content
    RM should rank); ``"neutral"``: neutral words of varied lengths (what a length RM ranks by
    length); ``"drifted"``: symbols and code words no training response has; ``"hackable"``:
    per prompt, short rude, medium polite and (the longest) long rude samples, in 3:3:2 - a
    length-rewarding proxy's best-of-n drifts to the long rude ones. ``collapsed``: every sample of a prompt is the same text (a mode-collapsed policy)."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(prompts):
        prompt = words(rng, int(rng.integers(3, 9)), NEUTRAL) + f" {p}?"
        first = None
        for k in range(per_prompt):
            if collapsed and first is not None:
                response = first
            elif style == "drifted":     # a policy that left the data: code-like loops and symbols
                response = " ".join(rng.choice(DRIFT, size=int(rng.integers(8, 40))))
            elif style == "hackable":
                tier = (0, 0, 0, 1, 1, 1, 2, 2)[k % 8]
                low, high, pool = ((4, 8, RUDE), (15, 25, POLITE), (45, 60, RUDE))[tier]
                response = words(rng, int(rng.integers(low, high)), pool)
            elif style == "mixed":
                response = words(rng, int(rng.integers(4, 40)), POLITE if rng.random() < 0.5 else RUDE)
            else:
                response = words(rng, int(rng.integers(3, 60)), NEUTRAL)
            first = first or response
            rows.append({"prompt": prompt, "response": response})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
