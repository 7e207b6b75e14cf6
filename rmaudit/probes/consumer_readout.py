"""`consumer_readout`: does the RL trainer read the reward where the model was trained to put it?

The same held-out responses are rewarded once per consumer (``rmaudit/readouts.py``: TRL PPO's
``get_reward``, TRL GRPO, transformers' own forward, OpenRLHF, rmaudit) and compared with the
readout the model was trained with (``rmaudit`` for checkpoints with an ``rmaudit.json``,
``openrlhf`` for an OpenRLHF ``RewardModel``, ``transformers`` otherwise; the ``rmaudit``
readout is the audit's own cached reward): Pearson and Spearman correlation, the mean shift and the scale
ratio in reward-stds of the trained readout, held-out accuracy and the pairs whose preference
flips. A consumer that reads another position gets rewards that may be uncorrelated with the
trained ones: PPO then optimises noise while every other probe, reading the trained position,
passes.

Consumers that read the same token ids at the same place share one forward pass, and the
audit's own rewards answer every consumer that reads what the scorer read
(``PrefixRewards`` in ``rmaudit/readouts.py``); all of them read under the audit's scoring
dtype, like the trained readout they are compared with. The probe plans its consumers' token
ids (``TokenReadings``), so the scoring plan reads them with the audit's texts: ids that
begin a text (OpenRLHF's are the audit's less a trailing newline) are read inside its forward.

``--consumer NAME`` (``consumer = "trl-ppo"`` in ``[tool.rmaudit]``) declares the trainer that
will consume the model: its readout fails on the limits. With no consumer declared, every
consumer that would fail warns. With ``--policy``, TRL PPO hands the policy's token ids to the
reward model unchanged, so differing vocabularies or special-token ids are checked too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from rmaudit.data.store import head
from rmaudit.modeling.pooling import attends_causally
from rmaudit.findings import Comparison, Finding, Limit, Setting, Status, note
from rmaudit.probes.base import Probe, ProbeSkipped, clip_evidence, exception_line, metric, with_reasons
from rmaudit.probes.context import TokenReadings
from rmaudit.readouts import CONSUMERS, PREFIXES, PrefixRewards, Sample, read_rewards
from rmaudit.results import ProbeResult
from rmaudit.scoring import plain_readings, render, resolve_pooling, tokenize_rendered, truncation_keep
from rmaudit.stats import pair_credit

EVIDENCE_ROWS = 10
# Tokens a consumer may add to the audit's rendering (OpenRLHF's " " + eos, TRL PPO's eos):
# a pair is compared only when its longer text fits the max length with this much to spare.
CONSUMER_EXTRA_TOKENS = 16
SCAN_FACTOR = 4  # labelled pairs looked at per pair wanted, where long ones are passed over


class ConsumerReadout(Probe):
    """Reward held-out responses as each RL trainer reads them and compare with the trained
    readout; fail the declared consumer (warn on any, when none is declared) on a shifted
    mean, a low correlation or lost accuracy, naming the fix."""

    name = "consumer_readout"
    order = 80
    section = "Handoff: how PPO will read the reward"
    description = "Reads the reward as TRL PPO/GRPO, transformers and OpenRLHF will, against the trained readout."
    why = ("PPO reads the reward its own way; if that is not where the model was trained to put it, PPO optimises noise.\n"
           "Each consumer's readout re-implemented from its source, compared on held-out pairs with the trained one.")
    inputs = ("model", "tokenizer")
    limits = (
        Limit("abs_mean_shift_std", Comparison.AT_LEAST, fail=0.5, help="|mean shift| of the consumer's rewards, in trained reward-stds"),
        Limit("pearson", Comparison.BELOW, fail=0.9, help="Pearson correlation of the consumer's rewards with the trained readout"),
        Limit("accuracy_drop", Comparison.AT_LEAST, fail=0.03, help="held-out accuracy lost under the consumer's readout"),
    )
    settings = (Setting("max_pairs", 48, "pairs rewarded by every consumer (held-out first, then the canonical "
                                         "battery; two responses each)"),
                Setting("batch_size", 8, "responses per forward pass"))

    def plan(self, ctx):
        """The labelled texts, and every consumer's token ids where they are a plain reading:
        the plan reads them with the texts they begin (OpenRLHF's are the audit's less a
        trailing newline) or share a prompt with."""
        samples = _samples(consumer_pairs(ctx, int(self.setting("max_pairs")))[0])
        readings = TokenReadings()
        for name in consumers(ctx, trained_readout(ctx)):
            try:
                readings += PREFIXES[name](ctx.model, ctx.tokenizer, samples, ctx.policy_tokenizer) or []
            except Exception:  # noqa: BLE001 - run reports a consumer that cannot read this model
                continue
        return [*super().plan(ctx), readings]

    def run(self, ctx) -> ProbeResult:
        pairs, too_long = consumer_pairs(ctx, int(self.setting("max_pairs")))
        if not pairs:
            raise ProbeSkipped("no held-out pairs to reward: give --data or keep the canonical pairs" if not too_long else
                               f"every held-out pair is longer than the max length ({ctx.max_length} tokens), which "
                               "the audit reads truncated and the consumers whole")
        samples = _samples(pairs)
        trained = trained_readout(ctx)
        declared = getattr(ctx, "consumer", None)
        memo = self._audit_readings(ctx, samples)
        forwarded, reused = memo.forwarded, memo.reused
        read = {name: self._read(ctx, name, samples, trained, memo) for name in consumers(ctx, trained)}
        reference = read[trained]
        if isinstance(reference, str):
            raise ProbeSkipped(f"the trained readout ({trained}) cannot be computed: {reference}")
        std = float(reference.std())
        if not std > 0:
            raise ProbeSkipped("the trained readout gives every response the same reward: nothing to compare")
        n = len(pairs)
        base_accuracy = float(pair_credit(reference[:n] - reference[n:]).mean())
        metrics: dict[str, Any] = {"trained_readout": trained, "declared_consumer": declared or None, "n_pairs": n,
                                   "trained_readout_one_text_at_a_time": trained == "transformers"
                                   and reads_like_the_audit(ctx, trained),
                                   "reward_std": metric(std, 6), "accuracy_trained": metric(base_accuracy),
                                   "pairs_over_max_length": too_long,
                                   "readings_forwarded": memo.forwarded - forwarded,
                                   "readings_shared": memo.reused - reused}
        findings: list[Finding] = []
        rows: list[dict[str, Any]] = []
        for name in CONSUMERS:
            if name == trained:
                continue
            if name not in read:
                metrics[f"{name}:not_applicable"] = "the model does not attend causally"
                findings.append(note(Status.SKIP, f"{name}: not applicable (the model does not attend causally; "
                                     "no trainer of it reads the head at its last token)"))
                continue
            theirs = read[name]
            if isinstance(theirs, str):
                metrics[f"{name}:error"] = theirs
                # The declared consumer failing to read the model is a handoff that will crash.
                findings.append(note(Status.FAIL if declared == name else Status.WARN,
                                     f"{name}: cannot read the reward this way ({theirs})"))
                continue
            compared = compare(reference, theirs, n, std, base_accuracy)
            metrics.update({f"{name}:{k}": v for k, v in compared.items() if k != "flips"})
            rows.append({"consumer": name, **{k: v for k, v in compared.items() if k != "flips"}})
            if declared in (None, name):
                findings += self._grade(ctx, name, compared, strict=declared == name)
        findings += self._tokenizer_handoff(ctx, declared)
        if not findings:
            findings.append(note(Status.PASS, f"consumer {declared} is the trained readout ({trained})"))
        alone = " (one text at a time: config.pad_token_id is unset)" if metrics["trained_readout_one_text_at_a_time"] else ""
        summary = self._summary(trained + alone, declared, rows)
        if too_long:
            summary += f"; {too_long} pairs over the max length ({ctx.max_length} tokens) passed over"
        return self.result(findings, with_reasons(summary, findings), metrics=metrics,
                           evidence=self._flips(pairs, reference, read, n, trained, declared),
                           chart=self._chart(rows))

    @staticmethod
    def _audit_readings(ctx, samples: list[Sample]) -> PrefixRewards:
        """The audit's token-id rewards (``ctx.token_rewards``: what the scoring plan read of
        this probe's plan) and its own rewards for ``samples`` (the score cache), keyed by
        the token ids the scorer read: a consumer that reads the same ids gets them for free."""
        memo = ctx.token_rewards()
        texts = [ctx.render(s.messages()) for s in samples]
        pooling = resolve_pooling(ctx.model, ctx.pooling)
        ids, _ = tokenize_rendered(ctx.tokenizer, texts, ctx.max_length, truncation_keep(ctx.model, pooling))
        prefixes = plain_readings(ctx.model, ctx.tokenizer, ids, pooling)
        if prefixes is not None:
            memo.add(prefixes, ctx.score_texts(texts))
        return memo

    def _read(self, ctx, consumer: str, samples: list[Sample], trained: str, memo: PrefixRewards) -> np.ndarray | str:
        try:
            if consumer == trained and reads_like_the_audit(ctx, trained):
                # The trained readout is the audit's own reward (same rendering, mask pooling,
                # truncation to the trained max length): read from the scoring plan's cache.
                return ctx.score([s.messages() for s in samples])
            return read_rewards(consumer, ctx.model, ctx.tokenizer, samples, policy_tokenizer=ctx.policy_tokenizer,
                                memo=memo, dtype=ctx.dtype, batch_size=int(self.setting("batch_size")))
        except Exception as exc:  # noqa: BLE001 - a consumer that cannot read this model is a finding, not a crash
            return exception_line(exc)

    def _grade(self, ctx, name: str, c: dict[str, Any], strict: bool) -> list[Finding]:
        checks = [
            self.limit("abs_mean_shift_std").check(c["abs_mean_shift_std"], f"{name}: the mean reward moves by "
                                                   f"{c['mean_shift_std']:+.2f} trained reward-stds", metric=f"{name}:abs_mean_shift_std"),
            self.limit("pearson").check(c["pearson"], f"{name}: rewards correlate at {c['pearson']:.2f} with the "
                                        "trained readout", metric=f"{name}:pearson"),
            self.limit("accuracy_drop").check(c["accuracy_drop"], f"{name}: held-out accuracy {c['accuracy']:.3f} "
                                              f"({c['flipped_pairs']} of {c['n_pairs']} pairs flip)", metric=f"{name}:accuracy_drop"),
        ]
        failed = [f for f in checks if f.status is Status.FAIL]
        for finding in failed:
            if not strict:
                finding.status = Status.WARN
        if failed:  # the advice once per consumer, on its first crossed limit
            hint = fix_hint(ctx, name)
            failed[0].message += "" if strict else " (if it will be the consumer; declare it with --consumer)"
            failed[0].message += f"; fix: {hint}" if hint else ""
        return checks

    @staticmethod
    def _tokenizer_handoff(ctx, declared: str | None) -> list[Finding]:
        """TRL PPO passes the policy's ids straight to the reward model: the vocabularies must agree."""
        policy, rm = ctx.policy_tokenizer, ctx.tokenizer
        if policy is None:
            return []
        status = Status.FAIL if declared == "trl-ppo" else Status.WARN
        same_vocab = policy.get_vocab() == rm.get_vocab()
        findings = [Finding(Status.PASS if same_vocab else status,
                            "policy and reward-model vocabularies are identical" if same_vocab else
                            "the policy's vocabulary differs from the reward model's: TRL PPO feeds policy token ids to "
                            "the reward model unchanged, so it reads other words (re-tokenize, or use one tokenizer)",
                            "vocab_identical", same_vocab, True, Comparison.NOT_EQUAL)]
        for special in ("eos_token_id", "pad_token_id", "bos_token_id"):
            theirs, ours = getattr(policy, special), getattr(rm, special)
            if theirs != ours:
                findings.append(Finding(status, f"policy {special} {theirs} differs from the reward model's {ours}",
                                        f"policy_{special}", theirs, ours, Comparison.NOT_EQUAL))
        return findings

    @staticmethod
    def _summary(trained: str, declared: str | None, rows: list[dict[str, Any]]) -> str:
        parts = [f"{r['consumer']} r={r['pearson']:.2f}, shift {r['mean_shift_std']:+.2f} std, acc {r['accuracy']:.2f}"
                 for r in rows]
        who = f"declared consumer {declared}" if declared else "no consumer declared"
        return f"trained readout {trained}; {who}; " + ("; ".join(parts) or "no other consumer reads it")

    @staticmethod
    def _flips(pairs, reference, read, n, trained, declared) -> list[dict[str, Any]]:
        """Pairs under the declared (else the least correlated) consumer: those whose preference
        flips first, then those whose margin moves most."""
        usable = {k: v for k, v in read.items() if not isinstance(v, str) and k != trained}
        if not usable:
            return []
        name = declared if declared in usable else min(usable, key=lambda k: _pearson(reference, usable[k]))
        theirs = usable[name]
        ours_margin, their_margin = reference[:n] - reference[n:], theirs[:n] - theirs[n:]
        flipped = np.sign(ours_margin) != np.sign(their_margin)
        order = sorted(range(n), key=lambda i: (not flipped[i], -abs(their_margin[i] - ours_margin[i])))[:EVIDENCE_ROWS]
        return [{"consumer": name, "flipped": bool(flipped[i]), "prompt": clip_evidence(pairs[i].prompt_text()),
                 "chosen": clip_evidence(pairs[i].chosen), "rejected": clip_evidence(pairs[i].rejected),
                 "margin_trained": metric(ours_margin[i]), f"margin_{name}": metric(their_margin[i])} for i in order]

    @staticmethod
    def _chart(rows: list[dict[str, Any]]) -> dict[str, Any]:
        if not rows:
            return {}
        names = [r["consumer"] for r in rows]
        return {"charts": [
            {"kind": "table", "title": "Each consumer's readout against the trained one", "rows": rows},
            {"kind": "bar", "title": "Correlation with the trained readout", "categories": names, "y_label": "Pearson r",
             "series": [{"name": "Pearson", "values": [r["pearson"] for r in rows]}],
             "hlines": [{"y": 0.9, "label": "fail below 0.9 (declared consumer)"}]},
        ]}


def trained_readout(ctx) -> str:
    """The consumer whose reading the model was trained to give: rmaudit's for checkpoints
    with a mask-pooled manifest, OpenRLHF's for an OpenRLHF RewardModel, transformers'
    (the model's own forward) otherwise."""
    if ctx.manifest is not None and ctx.manifest.pooling == "mask":
        return "rmaudit"
    return "openrlhf" if (ctx.head_origin or {}).get("trainer") == "openrlhf" else "transformers"


def reads_like_the_audit(ctx, trained: str) -> bool:
    """Whether the trained readout is what the audit's scorer reads: rmaudit's own, or the
    model's own forward where ``config.pad_token_id`` is unset. transformers then refuses a
    padded batch and reads one text at a time at its last token, which is mask pooling (the
    audit's fallback, rmaudit/scoring.py ``resolve_pooling``); ``padding`` warns about the
    batches."""
    if resolve_pooling(ctx.model, ctx.pooling) != "mask":
        return False
    return trained == "rmaudit" or (trained == "transformers" and getattr(ctx.model.config, "pad_token_id", None) is None)


def consumers(ctx, trained: str) -> list[str]:
    """The consumers read: all, less rmaudit's last-token readout of a model that does not
    attend causally (an encoder pools the whole row; no trainer of one reads its last token)
    unless that is the readout it was trained with."""
    return [name for name in CONSUMERS if name != "rmaudit" or name == trained or attends_causally(ctx.model)]


def consumer_pairs(ctx, limit: int) -> tuple[list[Any], int]:
    """(the first ``limit`` labelled pairs whose texts fit the max length with room to spare,
    how many longer ones were passed over). The consumers read a text whole, the audit's own
    readout truncated to the max length: on a longer text the two differ by the truncation,
    not by where they read, and a model with learned positions (BERT's 512, GPT-2's 1,024)
    cannot read it whole at all. At most ``SCAN_FACTOR * limit`` pairs are looked at."""
    def compute() -> tuple[list[Any], int]:
        scanned = head(ctx.labelled_pairs(), SCAN_FACTOR * limit if ctx.max_length else limit)
        if not ctx.max_length:
            return scanned, 0
        ids, _ = tokenize_rendered(ctx.tokenizer, ctx.pair_texts(scanned))
        n = len(scanned)
        fits = [max(len(ids[i]), len(ids[i + n])) + CONSUMER_EXTRA_TOKENS <= ctx.max_length for i in range(n)]
        kept: list[Any] = []
        passed_over = 0
        for pair, ok in zip(scanned, fits):
            if len(kept) == limit:
                break
            if ok:
                kept.append(pair)
            else:
                passed_over += 1
        return kept, passed_over
    return ctx.shared(("consumer_pairs", limit), compute)


def _samples(pairs) -> list[Sample]:
    """The responses every consumer rewards: the pairs' chosen ones, then their rejected ones."""
    return [Sample(p.prompt, p.chosen) for p in pairs] + [Sample(p.prompt, p.rejected) for p in pairs]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(stats.pearsonr(a, b)[0])


def compare(reference: np.ndarray, theirs: np.ndarray, n: int, std: float, base_accuracy: float) -> dict[str, Any]:
    """How a consumer's rewards relate to the trained readout's on the same 2n responses."""
    accuracy = float(pair_credit(theirs[:n] - theirs[n:]).mean())
    flips = np.sign(reference[:n] - reference[n:]) != np.sign(theirs[:n] - theirs[n:])
    shift = float(theirs.mean() - reference.mean()) / std
    rho = float(stats.spearmanr(reference, theirs)[0]) if np.ptp(theirs) > 0 else 0.0
    return {
        "pearson": metric(_pearson(reference, theirs)), "spearman": metric(rho),
        "mean_shift_std": metric(shift), "abs_mean_shift_std": metric(abs(shift)),
        "scale_ratio": metric(float(theirs.std()) / std), "accuracy": metric(accuracy),
        "accuracy_drop": metric(base_accuracy - accuracy), "flipped_pairs": int(flips.sum()), "n_pairs": n,
        "flips": flips,
    }


def fix_hint(ctx, consumer: str) -> str:
    """The training or config change that makes ``consumer`` read where the model was trained."""
    tok = ctx.tokenizer
    if consumer in ("trl-ppo", "openrlhf") and not attends_causally(ctx.model):
        return ("this consumer applies the head to the body's state at the last token, past this encoder's own "
                "pooling, which no template change moves: hand the model to a consumer that runs its own forward "
                "(as trl-grpo does)")
    hints = []
    if consumer == "trl-ppo" and tok.pad_token_id is not None and tok.pad_token_id == tok.eos_token_id:
        hints.append("set a pad token distinct from eos (TRL's get_reward masks every pad id, eos included, and reads "
                     "the token before the response's eos)")
    probe_text = render(tok, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    eos = tok.eos_token or ""
    if eos and eos in probe_text and not probe_text.endswith(eos) and consumer in ("trl-ppo", "openrlhf"):
        tail = probe_text[probe_text.rindex(eos) + len(eos):]
        hints.append(f"train with the trailing {tail!r} after the end-of-turn token removed from the chat template, "
                     "so the reward is read at the end-of-turn token as this consumer reads it")
    if consumer == "transformers" and getattr(ctx.model.config, "pad_token_id", None) == tok.eos_token_id:
        hints.append("set config.pad_token_id to a token other than eos: the model's own forward skips every trailing "
                     "pad id")
    if consumer == "trl-grpo" and (tok.pad_token_id is None or tok.pad_token_id == tok.eos_token_id):
        hints.append("give the tokenizer a pad token other than eos: TRL GRPO sets config.pad_token_id to the "
                     "tokenizer's pad (its eos where it has none), and the model's own forward skips every trailing "
                     "pad id")
    return "; ".join(hints)
