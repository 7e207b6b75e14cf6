"""Probe `prompt_leakage`: eval prompts that also appear, exactly or nearly, in train.

Held-out accuracy only means something if the eval prompts are held out. Each side is
reduced to its UNIQUE prompts first (a prompt repeated in ten rows counts once), where a
prompt is the whole conversation before the final answer.

* Exact: the normalised prompt (Unicode NFKC, case folded, punctuation removed,
  whitespace collapsed; ``role: content`` per message in multi-turn prompts) has the same
  sha256 on both sides.
* Near: MinHash-LSH candidates over word shingles, confirmed by the exact Jaccard
  similarity of the two shingle sets (>= ``near_duplicate_similarity``, default 0.8); see
  :mod:`rmaudit.text.near_duplicates`. System messages are left out of this comparison
  because a shared system prompt would otherwise make every pair of prompts look alike.

Prompts that normalise to nothing (prompt-less data) are left out of the counts.
Defaults: any leaked eval prompt warns; >= 1% of unique eval prompts fails. With a model,
held-out accuracy on leaked vs clean pairs shows how much the leak inflates the headline
number (accuracy: margin > 0; a tie is wrong, as in the `accuracy` probe).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from rmaudit.data.pairs import PreferencePair
from rmaudit.findings import Comparison, Limit, Setting
from rmaudit.probes.base import Probe, ProbeSkipped, clip_evidence
from rmaudit.text.near_duplicates import (
    NearDuplicateConfig,
    Progress,
    find_near_duplicates,
    normalise_texts,
    text_digest,
)
from rmaudit.stats import pair_credit

EXAMPLES_PER_KIND = 10


def exact_text(pair: PreferencePair) -> str:
    """The prompt text compared for exact matches: a lone user message as its bare
    content, anything longer as ``role: content`` blocks (normalisation drops the colon)."""
    messages = pair.prompt
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def near_text(pair: PreferencePair) -> str | None:
    """The text compared for near duplicates when it differs from :func:`exact_text`:
    the prompt without its system messages; None when there are none to drop."""
    kept = [m for m in pair.prompt if m["role"] != "system"]
    if len(kept) == len(pair.prompt) or not kept:
        return None
    return "\n".join(f"{m['role']}: {m['content']}" for m in kept)


@dataclass
class UniquePrompts:
    """The distinct normalised prompts of one split and where they occur."""

    texts: list[str] = field(default_factory=list)        # normalised exact text per unique prompt
    near_texts: list[str] = field(default_factory=list)   # normalised near-duplicate text
    first_row: list[int] = field(default_factory=list)    # index of its first pair
    rows: list[int] = field(default_factory=list)         # how many pairs carry it
    row_to_unique: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # -1: empty prompt
    digests: dict[bytes, int] = field(default_factory=dict)


def unique_prompts(pairs: Sequence[PreferencePair], progress: Progress | None = None, stage: str = "",
                   chunk: int = 5000) -> UniquePrompts:
    """Normalise every prompt once (in batches) and group the pairs by normalised prompt."""
    out = UniquePrompts(row_to_unique=np.full(len(pairs), -1, np.int64))
    for lo in range(0, len(pairs), chunk):
        batch = pairs[lo:lo + chunk]
        need_near = []  # (unique id, text without system messages)
        for i, (pair, text) in enumerate(zip(batch, normalise_texts([exact_text(p) for p in batch])), start=lo):
            if not text:
                continue
            digest = text_digest(text)
            uid = out.digests.get(digest)
            if uid is None:
                uid = out.digests[digest] = len(out.texts)
                out.texts.append(text)
                out.near_texts.append(text)
                out.first_row.append(i)
                out.rows.append(0)
                near = near_text(pair)
                if near is not None:
                    need_near.append((uid, near))
            out.rows[uid] += 1
            out.row_to_unique[i] = uid
        for (uid, _), text in zip(need_near, normalise_texts([t for _, t in need_near])):
            out.near_texts[uid] = text
        if progress:
            progress(stage, min(lo + chunk, len(pairs)), len(pairs))
    return out


@dataclass(frozen=True)
class Leak:
    """One leaked unique eval prompt and the train prompt it matches best."""

    eval_unique: int
    train_unique: int
    similarity: float
    kind: str  # "exact" or "near"


def find_leaks(train: UniquePrompts, evaluation: UniquePrompts, config: NearDuplicateConfig,
               progress: Progress | None = None) -> list[Leak]:
    """Exact matches by digest, then near duplicates among the remaining eval prompts."""
    leaks = sorted((Leak(e, train.digests[digest], 1.0, "exact")
                    for digest, e in evaluation.digests.items() if digest in train.digests), key=lambda leak: leak.eval_unique)
    exact = {leak.eval_unique for leak in leaks}
    rest = [e for e in range(len(evaluation.texts)) if e not in exact]
    near = find_near_duplicates([evaluation.near_texts[e] for e in rest], train.near_texts, config, progress)
    leaks += [Leak(rest[m.query], m.corpus, m.similarity, "near") for m in near]
    return leaks


@contextlib.contextmanager
def progress_reporter(enabled: bool) -> Iterator[Progress | None]:
    """A ``progress(stage, done, total)`` callback drawing rich bars, or None when disabled."""
    if not enabled:
        yield None
        return
    from rich.progress import Progress as RichProgress

    with RichProgress(transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"prompt_leakage: {stage}", total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def _where(pair: PreferencePair) -> str:
    return f"{pair.source}:{pair.row}" if pair.source else f"row {pair.row}"


class PromptLeakage(Probe):
    """Find eval prompts that also occur in train, exactly (after normalisation) or as
    MinHash near duplicates, counted per unique prompt over the whole eval split."""

    name = "prompt_leakage"
    order = 50
    description = "Exact and near-duplicate prompts shared by the train and eval splits (counted per unique prompt)."
    why = ("Eval prompts that were trained on inflate held-out accuracy: the RM looks better than it will be on PPO's prompts.\n"
           "Exact matches after normalisation plus MinHash near duplicates confirmed by Jaccard similarity, counted per unique prompt.")
    inputs = ("eval_pairs",)
    limits = (
        Limit("leaked_prompts", Comparison.AT_LEAST, warn=1, help="unique eval prompts also found in train"),
        Limit("leaked_fraction", Comparison.AT_LEAST, fail=0.01, help="share of unique eval prompts found in train"),
    )
    settings = (
        Setting("near_duplicate_similarity", 0.8, "Jaccard similarity of word-shingle sets that counts as a near duplicate"),
        Setting("shingle_words", 1, "words per shingle (1 = bag of words)"),
    )

    def run(self, ctx):
        if not ctx.train_pairs:
            raise ProbeSkipped("no train split to compare with: give --train-data, or a checkpoint whose "
                               "rmaudit.json records its train data")
        # Counting needs no model, so it runs on the whole eval split, not the --max-pairs sample.
        eval_pairs = ctx.all_eval_pairs or ctx.eval_pairs
        config = NearDuplicateConfig(threshold=float(self.setting("near_duplicate_similarity")),
                                     shingle_words=int(self.setting("shingle_words")))
        with progress_reporter(ctx.progress) as progress:
            train = unique_prompts(ctx.train_pairs, progress, "normalise train prompts")
            evaluation = unique_prompts(eval_pairs, progress, "normalise eval prompts")
            if not evaluation.texts:
                raise ProbeSkipped("the eval pairs have no prompt text to compare (every prompt is empty)")
            leaks = find_leaks(train, evaluation, config, progress)
        metrics = self._counts(train, evaluation, leaks, ctx.train_pairs, eval_pairs)
        if ctx.model is not None and leaks:
            metrics.update(self._accuracy(ctx, eval_pairs, evaluation, leaks))
        where = (f"{metrics['leaked_prompts_exact']} exact, {metrics['leaked_prompts_near']} near-duplicate, "
                 f"of {metrics['eval_unique_prompts']} unique eval prompts")
        findings = [self.limit("leaked_prompts").check(metrics["leaked_prompts"], f"eval prompts also in train: {where}"),
                    self.limit("leaked_fraction").check(metrics["leaked_fraction"],
                                                        f"{100 * metrics['leaked_fraction']:.2f}% of unique eval prompts leaked")]
        return self.result(findings, self._summary(metrics), metrics=metrics,
                           evidence=self._examples(ctx.train_pairs, eval_pairs, train, evaluation, leaks),
                           chart=self._chart(metrics, leaks, config.threshold))

    @staticmethod
    def _counts(train: UniquePrompts, evaluation: UniquePrompts, leaks: list[Leak],
                train_pairs: Sequence[PreferencePair], eval_pairs: Sequence[PreferencePair]) -> dict[str, Any]:
        leaked_ids = np.array(sorted(leak.eval_unique for leak in leaks), dtype=np.int64)
        leaked_rows = int(np.isin(evaluation.row_to_unique, leaked_ids).sum())
        train_hit = {leak.train_unique for leak in leaks}
        n_eval = len(evaluation.texts)
        return {
            "eval_pairs": len(eval_pairs),
            "eval_unique_prompts": n_eval,
            "eval_empty_prompt_pairs": int((evaluation.row_to_unique < 0).sum()),
            "train_pairs": len(train_pairs),
            "train_unique_prompts": len(train.texts),
            "leaked_prompts": len(leaks),
            "leaked_prompts_exact": sum(leak.kind == "exact" for leak in leaks),
            "leaked_prompts_near": sum(leak.kind == "near" for leak in leaks),
            "leaked_fraction": round(len(leaks) / n_eval, 6),
            "leaked_pairs": leaked_rows,
            "leaked_pair_fraction": round(leaked_rows / len(eval_pairs), 6),
            "train_prompts_matched": len(train_hit),
            "train_pairs_matched": int(sum(train.rows[t] for t in train_hit)),
        }

    @staticmethod
    def _accuracy(ctx, eval_pairs: Sequence[PreferencePair], evaluation: UniquePrompts,
                  leaks: list[Leak]) -> dict[str, Any]:
        """Accuracy on the scored (--max-pairs) sample, split by whether its prompt leaked."""
        chosen, rejected = ctx.pair_rewards(ctx.eval_pairs)
        correct = pair_credit(chosen - rejected)
        # The sample's prompts grouped as the split's were, a chunk at a time: normalising 100k
        # prompts in one call peaked at about 1 GiB (benchmarks/results/scale.md, 0.5.10).
        sample = evaluation if ctx.eval_pairs is eval_pairs else unique_prompts(ctx.eval_pairs)
        leaked_digests = {text_digest(evaluation.texts[leak.eval_unique]) for leak in leaks}
        leaked_ids = [uid for digest, uid in sample.digests.items() if digest in leaked_digests]
        leaked = np.isin(sample.row_to_unique, np.array(leaked_ids, dtype=np.int64))
        if not leaked.any():
            return {}
        out: dict[str, Any] = {"accuracy_leaked": round(float(correct[leaked].mean()), 4)}
        if (~leaked).any():
            out["accuracy_clean"] = round(float(correct[~leaked].mean()), 4)
            out["accuracy_gap"] = round(out["accuracy_leaked"] - out["accuracy_clean"], 4)
        return out

    @staticmethod
    def _summary(m: dict[str, Any]) -> str:
        text = (f"{m['leaked_prompts']} of {m['eval_unique_prompts']} unique eval prompts "
                f"({100 * m['leaked_fraction']:.2f}%) also in train: {m['leaked_prompts_exact']} exact, "
                f"{m['leaked_prompts_near']} near-duplicate; {m['leaked_pairs']} of {m['eval_pairs']} eval pairs affected")
        if "accuracy_clean" in m:
            text += f"; accuracy leaked {m['accuracy_leaked']:.3f} vs clean {m['accuracy_clean']:.3f}"
        return text

    @staticmethod
    def _examples(train_pairs: Sequence[PreferencePair], eval_pairs: Sequence[PreferencePair], train: UniquePrompts,
                  evaluation: UniquePrompts, leaks: list[Leak]) -> list[dict[str, Any]]:
        """Up to 10 exact and 10 near examples; near ones spread over the similarity range
        so borderline matches are shown too."""
        exact = [leak for leak in leaks if leak.kind == "exact"][:EXAMPLES_PER_KIND]
        near = sorted((leak for leak in leaks if leak.kind == "near"), key=lambda leak: -leak.similarity)
        if len(near) > EXAMPLES_PER_KIND:
            near = [near[i] for i in np.linspace(0, len(near) - 1, EXAMPLES_PER_KIND).round().astype(int)]
        rows = []
        for leak in exact + near:
            e_pair = eval_pairs[evaluation.first_row[leak.eval_unique]]
            t_pair = train_pairs[train.first_row[leak.train_unique]]
            rows.append({
                "kind": leak.kind,
                "similarity": round(leak.similarity, 4),
                "eval_prompt": clip_evidence(exact_text(e_pair)),
                "train_prompt": clip_evidence(exact_text(t_pair)),
                "eval_rows": evaluation.rows[leak.eval_unique],
                "train_rows": train.rows[leak.train_unique],
                "eval_at": _where(e_pair),
                "train_at": _where(t_pair),
            })
        return rows

    @staticmethod
    def _chart(m: dict[str, Any], leaks: list[Leak], threshold: float) -> dict[str, Any]:
        counts = {"kind": "bar", "title": "Unique eval prompts by leakage", "y_label": "unique eval prompts",
                  "categories": ["exact match in train", "near duplicate in train", "clean"],
                  "series": [{"name": "eval prompts", "values": [
                      m["leaked_prompts_exact"], m["leaked_prompts_near"], m["eval_unique_prompts"] - m["leaked_prompts"]]}],
                  "note": f"{m['leaked_pairs']} of {m['eval_pairs']} eval pairs carry a leaked prompt"}
        near = [leak.similarity for leak in leaks if leak.kind == "near"]
        if not near:
            return counts
        spread = {"kind": "histogram", "title": "Similarity of near-duplicate matches", "x_label": "Jaccard similarity",
                  "series": [{"name": "near duplicates", "values": near}],
                  "vlines": [{"x": threshold, "label": "threshold"}]}
        return {"charts": [counts, spread]}
