"""Probe `annotator`: did the reward model learn people's preferences, or one person's?

Preference data comes from a few annotators, and an RM can fit one of them: their
idiosyncrasies become what PPO optimises. Two kinds of data are recognised:

* **one annotator per row** (``--annotator-field FIELD`` names the column that holds the
  annotator's id): the share of pairs each annotator labelled (one annotator with more than
  half the data fails: the RM is that person's model), the RM's agreement with each, and,
  where several annotators labelled the same two responses to one prompt, how often they
  agree with each other;
* **a panel voting on every pair** (PandaLM's ``annotator1..3``, recognised without a flag):
  each annotator's vote against the RM's preference, inter-annotator agreement (raw and
  Fleiss' kappa over tie / first / second), and the pairs where the panel split.

Graded: the top annotator's share of rows, and the gap between the RM's agreement with the
annotator it agrees with most and its agreement with all the others' labels pooled. The
gap carries a 95% interval bootstrapped over prompts (pairs that share a prompt are not
independent evidence); a gap whose interval includes 0 passes whatever its size. Only
annotators with at least ``min_pairs`` non-tie labels are compared. A tie in the RM's
margin counts half; an annotator's tie vote is not a label.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rmaudit.data.pairs import PreferencePair
from rmaudit.data.split import prompt_keys
from rmaudit.findings import Comparison, Finding, Limit, Setting, Status, note
from rmaudit.probes.base import Probe, ProbeSkipped, clip_evidence, metric, with_reasons
from rmaudit.stats import cluster_bootstrap_statistic, pair_credit, wilson_interval

EVIDENCE_ROWS = 12
PANEL_KEY = "annotators"      # PandaLM adapter: votes 0 = tie, 1 or 2, relative to response1/2
PANEL_WINNER = "preferred"


@dataclass
class AnnotatorLabels:
    """Who labelled what: ``agree[i, k]`` is 1 when annotator k preferred pair i's chosen
    response, 0 when they preferred the rejected one, NaN for a tie or no label."""

    names: list[str]
    agree: np.ndarray
    kind: str                   # "panel" or "one per row"
    votes: list[list[int]] | None = None   # the panel's raw votes, for kappa
    unlabelled_rows: int = 0


def panel_labels(pairs: Sequence[PreferencePair]) -> AnnotatorLabels | None:
    """PandaLM-style votes in ``meta["annotators"]`` with the majority in ``meta["preferred"]``."""
    if not pairs or not all(isinstance(p.meta.get(PANEL_KEY), list) and p.meta.get(PANEL_WINNER) in (1, 2) for p in pairs):
        return None
    width = max(len(p.meta[PANEL_KEY]) for p in pairs)
    agree = np.full((len(pairs), width), np.nan)
    for i, pair in enumerate(pairs):
        winner = pair.meta[PANEL_WINNER]
        for k, vote in enumerate(pair.meta[PANEL_KEY]):
            if vote in (1, 2):
                agree[i, k] = 1.0 if vote == winner else 0.0
    return AnnotatorLabels([f"annotator{k + 1}" for k in range(width)], agree, "panel",
                           votes=[list(p.meta[PANEL_KEY]) for p in pairs])


def field_labels(pairs: Sequence[PreferencePair], field: str) -> AnnotatorLabels:
    """One annotator per row, named by ``meta[field]``; every row is that annotator's choice."""
    ids = [p.meta.get(field) for p in pairs]
    names = sorted({str(a) for a in ids if a not in (None, "")})
    column = {name: k for k, name in enumerate(names)}
    agree = np.full((len(pairs), len(names)), np.nan)
    for i, annotator in enumerate(ids):
        if annotator not in (None, ""):
            agree[i, column[str(annotator)]] = 1.0
    return AnnotatorLabels(names, agree, "one per row", unlabelled_rows=sum(a in (None, "") for a in ids))


def rm_agreement(labels: np.ndarray, margins: np.ndarray) -> np.ndarray:
    """Per labelled cell: 1 when the RM prefers what the annotator preferred (ties half), NaN elsewhere."""
    credit = pair_credit(margins)[:, None]
    return np.where(np.isnan(labels), np.nan, np.where(labels == 1.0, credit, 1.0 - credit))


def fleiss_kappa(votes: Sequence[Sequence[int]], categories: Sequence[int] = (0, 1, 2)) -> float:
    """Fleiss' kappa of raters who each put every item in one category (equal raters per item)."""
    counts = np.array([[row.count(c) for c in categories] for row in votes], dtype=np.float64)
    raters = counts.sum(axis=1)
    if len(counts) == 0 or raters.min() < 2 or raters.min() != raters.max():
        return float("nan")
    n = raters[0]
    p_item = ((counts * (counts - 1)).sum(axis=1)) / (n * (n - 1))
    p_cat = counts.sum(axis=0) / counts.sum()
    expected = float((p_cat ** 2).sum())
    return float((p_item.mean() - expected) / (1 - expected)) if expected < 1 else float("nan")


class AnnotatorProbe(Probe):
    """Share of pairs per annotator, the RM's agreement with each and the best-vs-rest gap (with a
    prompt-clustered interval), inter-annotator agreement, and the pairs annotators split on."""

    name = "annotator"
    order = 72
    description = "Per-annotator share and RM agreement, best-vs-rest gap, inter-annotator agreement, split pairs."
    why = ("An RM that agrees with one annotator far more than with the others learned that person's taste, and PPO\n"
           "will optimise it; one annotator labelling most of the data makes that the default outcome.")
    inputs = ("model", "eval_pairs")
    limits = (
        Limit("top_annotator_share", Comparison.ABOVE, fail=0.5,
              help="share of the labelled rows that the most prolific annotator labelled (one annotator per row)"),
        Limit("agreement_gap", Comparison.AT_LEAST, warn=0.1, fail=0.2,
              help="RM agreement with its best-matched annotator minus with the others' labels pooled, "
                   "graded only when its 95% interval excludes 0"),
    )
    settings = (Setting("min_pairs", 20, "annotators with fewer non-tie labels are not compared"),)

    def run(self, ctx):
        pairs = ctx.preference_pairs()
        labels = self._labels(ctx, pairs)
        chosen, rejected = ctx.pair_rewards(pairs)
        margins = chosen - rejected
        agreement = rm_agreement(labels.agree, margins)
        prompts = prompt_keys(pairs)
        # Rows about the same two responses to one prompt, whichever order they list them in.
        # hashes, not the texts: a stored eval file's responses are not all held in memory at once
        same_pair = [hash((int(h), frozenset((p.chosen, p.rejected)))) for h, p in zip(prompts, pairs)]
        per_annotator = _per_annotator(labels, agreement)
        metrics: dict[str, Any] = {"annotator_kind": labels.kind, "n_pairs": len(pairs),
                                   "n_annotators": len(labels.names), "unlabelled_rows": labels.unlabelled_rows}
        metrics.update(_shares(labels))
        metrics.update(_gap(agreement, per_annotator, prompts, int(self.setting("min_pairs"))))
        inter, split = _inter_annotator(labels, pairs, same_pair)
        metrics.update(inter)
        metrics.update(_split_accuracy(split, margins))
        for name, row in per_annotator.items():
            metrics[f"rm_agreement[{name}]"] = row["agreement"]
            metrics[f"n_labels[{name}]"] = row["n"]
        findings = self._findings(metrics, labels)
        return self.result(findings, with_reasons(_summary(metrics), findings), metrics=metrics,
                           evidence=_evidence(pairs, labels, split, margins, same_pair), chart=_chart(per_annotator))

    def _labels(self, ctx, pairs: Sequence[PreferencePair]) -> AnnotatorLabels:
        field = getattr(ctx, "annotator_field", None)
        labels = field_labels(pairs, field) if field else panel_labels(pairs)
        if labels is None:
            raise ProbeSkipped("the data names no annotators: pass --annotator-field FIELD "
                               "(PandaLM's annotator1..3 are recognised without it)")
        if len(labels.names) < 2:
            raise ProbeSkipped(f"fewer than 2 annotators in field {field!r}: nothing to compare" if field
                               else "fewer than 2 annotators: nothing to compare")
        return labels

    def _findings(self, m: dict[str, Any], labels: AnnotatorLabels) -> list[Finding]:
        findings = []
        if labels.kind == "one per row":
            findings.append(self.limit("top_annotator_share").check(m["top_annotator_share"], (
                f"annotator {m['top_annotator']!r} labelled {m['top_annotator_share']:.1%} of the "
                f"{m['n_labelled_rows']} labelled rows")))
        else:
            findings.append(note(Status.PASS, f"a panel of {len(labels.names)} annotators voted on every pair: "
                                              "no annotator dominates the labels"))
        if m["agreement_gap"] is None:
            findings.append(note(Status.PASS, f"fewer than 2 annotators have {self.setting('min_pairs')} non-tie "
                                              "labels: the agreement gap is not graded"))
            return findings
        message = (f"the RM agrees with {m['best_annotator']!r} on {m['best_agreement']:.1%} of its labels and with the "
                   f"others on {m['rest_agreement']:.1%}: gap {m['agreement_gap']:+.3f} (95% CI "
                   f"{m['agreement_gap_ci_low']:+.3f} to {m['agreement_gap_ci_high']:+.3f}, bootstrap over prompts)")
        if m["agreement_gap_ci_low"] is not None and m["agreement_gap_ci_low"] > 0:
            finding = self.limit("agreement_gap").check(m["agreement_gap"], message)
            if finding.status is not Status.PASS:
                finding.message += ": the RM fits one annotator's taste"
            findings.append(finding)
        else:
            findings.append(note(Status.PASS, message + ": not distinguishable from no gap", "agreement_gap",
                                 m["agreement_gap"]))
        return findings


def _per_annotator(labels: AnnotatorLabels, agreement: np.ndarray) -> dict[str, dict[str, Any]]:
    out = {}
    for k, name in enumerate(labels.names):
        cells = agreement[:, k][~np.isnan(agreement[:, k])]
        low, high = wilson_interval(float(cells.sum()), len(cells)) if len(cells) else (float("nan"), float("nan"))
        out[name] = {"n": len(cells), "agreement": metric(cells.mean()) if len(cells) else None,
                     "ci_low": metric(low), "ci_high": metric(high)}
    return out


def _shares(labels: AnnotatorLabels) -> dict[str, Any]:
    """Rows per annotator; a panel votes on every pair, so there no annotator has a share."""
    if labels.kind == "panel":
        return {"n_labelled_rows": len(labels.agree), "top_annotator": None, "top_annotator_share": None}
    counts = (~np.isnan(labels.agree)).sum(axis=0)
    total = int(counts.sum())
    top = int(np.argmax(counts))
    return {"n_labelled_rows": total, "top_annotator": labels.names[top],
            "top_annotator_share": metric(counts[top] / total) if total else None}


def _gap(agreement: np.ndarray, per_annotator: dict[str, dict[str, Any]], prompts: np.ndarray,
         min_pairs: int) -> dict[str, Any]:
    names = list(per_annotator)
    eligible = [k for k, n in enumerate(names) if per_annotator[n]["n"] >= min_pairs]
    out: dict[str, Any] = {"agreement_gap": None, "best_annotator": None, "best_agreement": None,
                           "rest_agreement": None, "agreement_gap_ci_low": None, "agreement_gap_ci_high": None}
    if len(eligible) < 2:
        return out
    best = max(eligible, key=lambda k: per_annotator[names[k]]["agreement"])
    rest = np.array([k for k in eligible if k != best])

    def gap(rows: np.ndarray) -> float:
        mine, others = agreement[rows, best], agreement[np.ix_(rows, rest)].ravel()
        mine, others = mine[~np.isnan(mine)], others[~np.isnan(others)]
        return float(mine.mean() - others.mean()) if len(mine) and len(others) else float("nan")

    everything = np.arange(len(agreement))
    low, high = cluster_bootstrap_statistic(gap, prompts)
    others = agreement[:, rest].ravel()
    out.update(agreement_gap=metric(gap(everything)), best_annotator=names[best],
               best_agreement=per_annotator[names[best]]["agreement"],
               rest_agreement=metric(np.nanmean(others)), agreement_gap_ci_low=metric(low), agreement_gap_ci_high=metric(high))
    return out


def _inter_annotator(labels: AnnotatorLabels, pairs: Sequence[PreferencePair],
                     same_pair: Sequence[int]) -> tuple[dict[str, Any], list[int]]:
    """(agreement metrics, indices of pairs the annotators split on); ``same_pair[i]`` keys the
    rows that label the same two responses to one prompt."""
    if labels.kind == "panel":
        agreed = total = 0
        split = []
        for i, row in enumerate(labels.agree):
            given = row[~np.isnan(row)]
            for a, b in combinations(given, 2):
                total, agreed = total + 1, agreed + int(a == b)
            if len(set(labels.votes[i])) > 1:          # type: ignore[index]
                split.append(i)
        return ({"inter_annotator_agreement": metric(agreed / total) if total else None,
                 "fleiss_kappa": metric(fleiss_kappa(labels.votes or [])), "n_split_pairs": len(split)}, split)
    # One annotator per row: rows that label the same two responses to one prompt.
    groups: dict[int, list[tuple[str, int]]] = defaultdict(list)  # key -> (annotator, hash of their choice)
    for i, pair in enumerate(pairs):
        k = np.flatnonzero(~np.isnan(labels.agree[i]))
        if len(k):
            groups[same_pair[i]].append((labels.names[k[0]], hash(pair.chosen)))
    agreed = total = 0
    split_keys = set()
    for key, votes in groups.items():
        for (a, choice_a), (b, choice_b) in combinations(votes, 2):
            if a != b:
                total, agreed = total + 1, agreed + int(choice_a == choice_b)
                if choice_a != choice_b:
                    split_keys.add(key)
    split = [i for i, key in enumerate(same_pair) if key in split_keys]
    return ({"inter_annotator_agreement": metric(agreed / total) if total else None,
             "n_multiply_labelled": sum(len({a for a, _ in v}) > 1 for v in groups.values()),
             "n_split_pairs": len(split)}, split)


def _split_accuracy(split: list[int], margins: np.ndarray) -> dict[str, Any]:
    """The RM's accuracy on pairs the annotators agreed on and on those they split on."""
    if not split:
        return {}
    mask = np.zeros(len(margins), dtype=bool)
    mask[split] = True
    credit = pair_credit(margins)
    return {"accuracy_unanimous": metric(credit[~mask].mean()) if (~mask).any() else None,
            "accuracy_split": metric(credit[mask].mean())}


def _summary(m: dict[str, Any]) -> str:
    parts = [f"{m['n_annotators']} annotators ({m['annotator_kind']}) on {m['n_pairs']} pairs"]
    if m["agreement_gap"] is not None:
        parts.append(f"RM agreement best {m['best_agreement']:.1%} ({m['best_annotator']}) vs rest "
                     f"{m['rest_agreement']:.1%}")
    if m.get("inter_annotator_agreement") is not None:
        parts.append(f"annotators agree with each other on {m['inter_annotator_agreement']:.1%}")
    return "; ".join(parts)


def _evidence(pairs, labels: AnnotatorLabels, split: list[int], margins: np.ndarray,
              same_pair: Sequence[int]) -> list[dict[str, Any]]:
    """Pairs the annotators split on (one row per pair of responses), the RM's most confident
    first; ``votes`` says which response each annotator preferred."""
    shown: dict[int, dict[str, Any]] = {}
    for i in sorted(split, key=lambda i: -abs(margins[i])):
        pair = pairs[i]
        key = same_pair[i]
        row = shown.get(key)
        if row is None:
            if len(shown) == EVIDENCE_ROWS:
                continue
            row = shown[key] = {"prompt": clip_evidence(pair.prompt_text()), "response_1": clip_evidence(pair.chosen),
                                "response_2": clip_evidence(pair.rejected), "votes": {}, "rm_margin_1_minus_2": metric(margins[i]),
                                "source": f"{Path(pair.source).name}:{pair.row}" if pair.source else "",
                                "_first": pair.chosen}
        if labels.votes:
            row["votes"] = {name: {0: "tie", 1: "response 1" if pair.meta[PANEL_WINNER] == 1 else "response 2",
                                   2: "response 2" if pair.meta[PANEL_WINNER] == 1 else "response 1"}[v]
                            for name, v in zip(labels.names, labels.votes[i])}
        else:
            for k in np.flatnonzero(~np.isnan(labels.agree[i])):
                row["votes"][labels.names[k]] = "response 1" if pair.chosen == row["_first"] else "response 2"
    rows = list(shown.values())
    for row in rows:
        del row["_first"]
        row["votes"] = ", ".join(f"{name}: {choice}" for name, choice in row["votes"].items())
    return rows


def _chart(per_annotator: dict[str, dict[str, Any]]) -> dict[str, Any]:
    names = list(per_annotator)
    return {"kind": "bar", "title": "RM agreement with each annotator", "categories": names, "y_label": "agreement",
            "series": [{"name": "agreement", "values": [per_annotator[n]["agreement"] for n in names]}],
            "hlines": [{"y": 0.5, "label": "chance"}]}
