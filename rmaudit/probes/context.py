"""Everything a probe may read, built once per audit and shared by all probes.

The context owns the score cache: every distinct rendered text is scored once per audit,
whichever probes ask for it. Probes call :meth:`AuditContext.score` with conversations
(lists of messages) and get rewards back in input order. Conversations are rendered and
scored a chunk at a time and the cache keeps a 16-byte digest per text, not the text, so
an audit of 100k pairs holds rewards, not rendered conversations.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from rmaudit.data.pairs import Message, PreferencePair
from rmaudit.modeling.manifest import Manifest
from rmaudit.probes.base import ProbeSkipped


# How a user supplies each input, for the skip reason.
INPUT_FLAGS = {"eval_pairs": "--data", "all_eval_pairs": "--data", "train_pairs": "--train-data",
               "policy_tokenizer": "--policy", "model": "a loadable checkpoint", "canonical_pairs": "--pairs",
               "tokenizer": "a checkpoint with a tokenizer", "manifest": "an rmaudit checkpoint (rmaudit.json)"}


def _missing(value: Any) -> bool:
    return value is None or (hasattr(value, "__len__") and len(value) == 0)


@dataclass
class AuditContext:
    """Inputs of one audit. Optional inputs are ``None`` when the user did not supply them
    and the manifest had no default; probes call :meth:`require` to skip cleanly."""

    checkpoint: Path
    model: Any = None                      # a transformers *ForSequenceClassification, eval mode
    tokenizer: Any = None                  # the RM's tokenizer (with its chat template)
    manifest: Manifest | None = None       # rmaudit.json of the checkpoint, if any
    eval_pairs: list[PreferencePair] | None = None      # the scored sample (--max-pairs)
    all_eval_pairs: list[PreferencePair] | None = None  # the whole eval split, for model-free counts
    train_pairs: list[PreferencePair] | None = None
    policy_tokenizer: Any = None           # --policy: tokenizer (and chat template) PPO will use
    canonical_pairs: list[PreferencePair] = field(default_factory=list)
    annotator_field: str | None = None     # --annotator-field: the column naming each row's annotator
    training_log: Path | None = None       # --training-log; else the training_log probe looks in the checkpoint
    dtype: Any = None                      # torch dtype used for scoring
    max_length: int | None = None
    batch_size: int = 16
    pooling: str = "auto"
    progress: bool = False
    consumer: str | None = None            # --consumer: the RL trainer that will read the reward
    head_origin: dict | None = None        # the loader's account of where the head came from
    notes: dict[str, Any] = field(default_factory=dict)   # facts for the report context
    _cache: dict[bytes, float] = field(default_factory=dict, repr=False)  # digest(pooling, text) -> reward
    _advance: Callable[[int], None] | None = field(default=None, repr=False)  # the open progress bar

    def require(self, *names: str) -> None:
        """Raise ProbeSkipped naming every missing input, e.g. ``require("eval_pairs", "model")``."""
        missing = [name for name in names if _missing(getattr(self, name))]
        if missing:
            needs = ", ".join(f"{m} ({INPUT_FLAGS.get(m, m)})" for m in missing)
            raise ProbeSkipped(f"missing input: {needs}")

    def render(self, messages: Sequence[Message], chat_template: str | None = None) -> str:
        from rmaudit.scoring import render

        return render(self.tokenizer, messages, chat_template=chat_template)

    def score(self, conversations: Sequence[Sequence[Message]], chat_template: str | None = None) -> np.ndarray:
        """Rewards for conversations rendered with the RM's template (or ``chat_template``),
        rendered and scored a chunk at a time."""
        from rmaudit.scoring import CHUNK_TEXTS

        rewards = np.empty(len(conversations), dtype=np.float64)
        with self._progress_bar(len(conversations)):
            for start in range(0, len(conversations), CHUNK_TEXTS):
                texts = [self.render(c, chat_template) for c in conversations[start:start + CHUNK_TEXTS]]
                rewards[start:start + len(texts)] = self.score_texts(texts)
        return rewards

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Rewards for already-rendered texts; each distinct text is scored once per audit."""
        from rmaudit.scoring import score_texts

        salt = self.pooling.encode()
        keys = [hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=16, key=salt).digest() for t in texts]
        todo: dict[bytes, int] = {}   # key -> index of its first text, in input order
        for i, key in enumerate(keys):
            if key not in self._cache and key not in todo:
                todo[key] = i
        with self._progress_bar(len(texts)) as advance:
            advance(len(texts) - len(todo))
            if todo:
                result = score_texts(
                    self.model, self.tokenizer, [texts[i] for i in todo.values()], batch_size=self.batch_size,
                    dtype=self.dtype, pooling=self.pooling, max_length=self.max_length, progress=advance,
                )
                self.notes["pooling"] = result.pooling
                self._cache.update(zip(todo, result.rewards.tolist()))
        return np.array([self._cache[k] for k in keys], dtype=np.float64)

    def pair_rewards(self, pairs: Sequence[PreferencePair]) -> tuple[np.ndarray, np.ndarray]:
        """(chosen rewards, rejected rewards) for pairs, through the shared cache."""
        from rmaudit.scoring import CHUNK_TEXTS

        chosen = np.empty(len(pairs), dtype=np.float64)
        rejected = np.empty(len(pairs), dtype=np.float64)
        step = max(1, CHUNK_TEXTS // 2)
        with self._progress_bar(2 * len(pairs)):
            for start in range(0, len(pairs), step):
                part = pairs[start:start + step]
                both = self.score([p.chosen_messages() for p in part] + [p.rejected_messages() for p in part])
                chosen[start:start + len(part)], rejected[start:start + len(part)] = both[:len(part)], both[len(part):]
        return chosen, rejected

    @contextlib.contextmanager
    def _progress_bar(self, total: int) -> Iterator[Callable[[int], None]]:
        """One bar per outermost scoring call (nested calls advance it); none without --progress."""
        if self._advance is not None:
            yield self._advance
            return
        if not self.progress:
            yield lambda n: None
            return
        from rmaudit.scoring import scoring_progress

        with scoring_progress(total) as advance:
            self._advance = advance
            try:
                yield advance
            finally:
                self._advance = None

    def labelled_pairs(self, limit: int | None = None) -> list[PreferencePair]:
        """Held-out pairs first, then the canonical battery, at most ``limit``: the most labelled
        evidence available (a demo split of 8 pairs alone proves nothing)."""
        pairs = list(self.eval_pairs or []) + list(self.canonical_pairs or [])
        return pairs[:limit] if limit is not None else pairs

    def reference_rewards(self) -> np.ndarray:
        """Rewards of every response in the eval pairs (else the canonical pairs): the
        reference set whose spread is the unit for 'shift in reward-std'."""
        pairs = self.eval_pairs or self.canonical_pairs
        if not pairs:
            raise ProbeSkipped("no reference set: give --data or keep the canonical pairs")
        chosen, rejected = self.pair_rewards(pairs)
        return np.concatenate([chosen, rejected])

    def reward_std(self) -> float:
        """Std of rewards over the reference set; probes express shifts in these units."""
        std = float(self.reference_rewards().std())
        return std if std > 0 else float("nan")
