"""Tiny reward models whose heads are genuinely fitted, for the audit and probe tests.

The body is a random 2-layer Llama (tests/tiny_models.py) with SmolLM2's real tokenizer;
the head is trained with the Bradley-Terry loss on the mask-pooled hidden states of real
rendered pairs, so "healthy" means "learned to prefer chosen", not "hard-coded to".
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Sequence

import torch

from rmaudit import selftest
from rmaudit.data.pairs import PreferencePair
from tiny_models import make_tiny_rm, tiny_rm

REPO_ROOT = Path(__file__).resolve().parents[1]
CANONICAL_FILE = REPO_ROOT / "probes" / "canonical_pairs.jsonl"

TOPICS = [
    "rivers", "volcanoes", "bread", "chess", "bicycles", "owls", "glaciers", "tea", "violins", "comets",
    "bridges", "honey", "deserts", "trains", "coral", "maps", "lanterns", "wolves", "clocks", "gardens",
    "kites", "islands", "pottery", "storms", "whales", "forests", "mirrors", "satellites", "cheese", "rain",
    "castles", "ferns", "compasses", "tigers", "canyons", "poems", "marathons", "lighthouses", "apples", "caves",
]


def pooled_features(model, tokenizer, conversations: Sequence[Sequence[dict]]) -> torch.Tensor:
    """(N, d) float32 hidden states at each conversation's last real token (mask pooling)."""
    return selftest.pooled_features(model, tokenizer, conversations)


def fit_head_bt(model, tokenizer, pairs: Sequence[PreferencePair], *, shift: float = 3.0, steps: int = 200) -> None:
    """Train the linear head in place with -logsigmoid(r_c - r_r - shift) on the pooled features
    (the fitter `rmaudit selftest` uses: L-BFGS, a tiny L2 term)."""
    with torch.no_grad():
        model.score.weight.copy_(selftest.fit_head(model, tokenizer, pairs, margin=shift, steps=steps))


def scaled_head(model, factor: float):
    """A copy of the model whose head is multiplied by ``factor`` (-1 negates every preference)."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.score.weight.mul_(factor)
    return twin


def save_rm(model, tokenizer, out_dir: Path, manifest: dict | None = None) -> Path:
    """A real checkpoint folder with an rmaudit.json (so the audit uses mask pooling)."""
    path = make_tiny_rm(Path(out_dir), model=model, tokenizer=tokenizer, manifest=True)
    if manifest is not None:
        from rmaudit.modeling.manifest import read_manifest, write_manifest

        write_manifest(path, {**(read_manifest(path) or {}), **manifest})
    return path


def fitted_tiny_rm(pairs: Sequence[PreferencePair], *, hidden: int = 64, seed: int = 0, **fit):
    """(model, tokenizer): a tiny random Llama whose head was fitted on ``pairs``."""
    model, tokenizer = tiny_rm(hidden=hidden, seed=seed)
    fit_head_bt(model, tokenizer, pairs, **fit)
    return model, tokenizer


def topic_pairs(topics: Sequence[str] = TOPICS, category: str | None = None) -> list[PreferencePair]:
    """Pairs with one learnable rule: the chosen reply is courteous, the rejected one dismissive."""
    pairs = []
    for topic in topics:
        prompt = [{"role": "user", "content": f"Could you tell me something about {topic}?"}]
        pairs.append(PreferencePair(
            prompt=prompt,
            chosen=f"Of course! {topic.capitalize()} are fascinating, and I am glad you asked. Thank you!",
            rejected=f"No. {topic.capitalize()} are not worth my time. Figure it out yourself.",
            category=category,
        ))
    return pairs


def write_pairs_jsonl(pairs: Sequence[PreferencePair], path: Path, *, swap: Sequence[int] = ()) -> Path:
    """Write pairs in the explicit shape; rows in ``swap`` get chosen and rejected exchanged."""
    swapped = set(swap)
    with open(path, "w", encoding="utf-8") as handle:
        for i, pair in enumerate(pairs):
            chosen, rejected = (pair.rejected, pair.chosen) if i in swapped else (pair.chosen, pair.rejected)
            row = {"prompt": pair.prompt_text(), "chosen": chosen, "rejected": rejected}
            if pair.category:
                row["category"] = pair.category
            handle.write(json.dumps(row) + "\n")
    return path
