"""`padding`: does a text's reward depend on its batch companions or the padding side?

A sample of real texts is scored alone (batch of one: no padding), then right-padded and
left-padded in one batch with a strictly longer filler text, under both poolings a
consumer may use: ``mask`` (last attention-mask position, rmaudit's scorer) and
``native`` (the checkpoint's own ``forward``, which transformers pools by
``config.pad_token_id``). Rewards may move only by rounding noise; reading a pad position
moves them by whole reward-stds and makes padded rows collapse onto nearly one value.

Static checks explain what the dynamic ones find: ``config.pad_token_id`` exists and
equals the tokenizer's pad id; and when pad == eos, whether the end-of-turn eos changes
the reward at all (native pooling skips trailing pad-ids, so it may never see it).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from rmaudit.findings import Comparison, Finding, Limit, Setting, Status, note
from rmaudit.data.pairs import PreferencePair
from rmaudit.probes.base import Probe, ProbeSkipped, clip_evidence, dtype_name, metric, with_reasons
from rmaudit.probes.context import FLOAT32_SAMPLE_PAIRS
from rmaudit.results import ProbeResult
from rmaudit.modeling.pooling import apply_head, attends_causally, last_token_index, reward_body
from rmaudit.scoring import autocast_for, forward_rewards, pad_batch, resolve_pooling, tokenize_rendered

SIDES = ("right", "left")


@dataclass
class ModeResult:
    """Rewards of the sample under one (padding side, pooling) against the rewards alone."""

    side: str
    pooling: str
    rewards: np.ndarray | None      # None when this pooling cannot run on a padded batch
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.side}-padded / {self.pooling}"


def model_dtype(ctx) -> torch.dtype:
    """The dtype the audit scores in: ``ctx.dtype`` (autocast) or the weights' own."""
    return ctx.dtype or next(ctx.model.parameters()).dtype


@contextlib.contextmanager
def scored_in_float32(ctx) -> Iterator[None]:
    """Run the comparison on the float32 model (``ctx.float32_model``: the checkpoint's own
    float32 weights, float32 arithmetic) whatever the audit's dtype.

    Padding bugs are logic bugs, not precision effects; in bfloat16 rounding alone moves
    SmolLM2's rewards by ~0.2 reward-std, which would force a tolerance loose enough to
    hide a real shift. The sample is small, so float32 costs little.
    """
    saved_model, saved_dtype = ctx.model, ctx.dtype
    ctx.model, ctx.dtype = ctx.float32_model(), None
    try:
        yield
    finally:
        ctx.model, ctx.dtype = saved_model, saved_dtype


def tolerance_std(dtype: torch.dtype, n_layers: int, reward_rms: float, reward_std: float, ulps: float, floor: float) -> float:
    """Largest reward change (in reward-std units) that rounding alone can explain.

    Padding changes only the shapes and order of reductions, so each of the 2·L sublayers
    may round its output differently by about one unit in the last place, eps = 2^-(mantissa
    bits): 2^-23 for float32, 2^-7 for bfloat16 (8 significant bits), 2^-10 for float16.
    Independent roundings add like a random walk, sqrt(2·L) of them, and scale with the
    size of the reward itself (its rms, offset included), not with its spread; ``ulps`` is
    the safety factor (on SmolLM2-135M in bfloat16 the measured changes reached about a
    quarter of the bound at 16). The floor matters for float32, whose matmuls accumulate
    more than one rounding per sublayer (SmolLM2 float32: 1.2e-5 std, well under 1e-3).
    """
    eps = torch.finfo(dtype).eps
    rounding = ulps * eps * math.sqrt(2 * max(n_layers, 1)) * reward_rms
    return max(floor, rounding / reward_std)


def n_layers(model: Any) -> int:
    config = model.config
    return int(getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None) or 1)


def sample_pairs(ctx, pairs: Sequence[PreferencePair], n_pairs: int) -> list[int]:
    """Indices of ``n_pairs`` of ``pairs`` (the audit's short pairs, ``ctx.short_pairs``)
    spread by token length over the shorter half of those that fit the max length: varied
    amounts of padding without paying float32 for long texts (padding bugs do not need
    length). padding and inference_invariance pick their padded batch this way from the same
    short pairs, so they share its float32 forwards (:func:`padded_rewards`)."""
    texts = ctx.pair_texts(pairs)  # chosen block, then rejected block
    ids, _ = tokenize_rendered(ctx.tokenizer, texts)
    n, limit = len(pairs), ctx.max_length or math.inf
    widths = [max(len(ids[i]), len(ids[i + n])) for i in range(n)]
    usable = sorted((width, i) for i, width in enumerate(widths) if width < limit)
    usable = usable[: max(n_pairs, math.ceil(len(usable) / 2))]
    picks = np.unique(np.linspace(0, len(usable) - 1, num=min(n_pairs, len(usable))).round().astype(int))
    return [usable[k][1] for k in picks] if usable else []


def sample_texts(ctx, size: int) -> list[str]:
    """The chosen, then the rejected texts of ``size // 2`` pairs (:func:`sample_pairs`)."""
    pairs = ctx.short_pairs(FLOAT32_SAMPLE_PAIRS)
    if not pairs:
        raise ProbeSkipped("no texts to score: give --data or keep the canonical pairs")
    picked = sample_pairs(ctx, pairs, max(1, size // 2))
    texts = ctx.pair_texts([pairs[i] for i in picked])
    if len(set(texts)) < 2:
        raise ProbeSkipped("fewer than two distinct texts fit the max length: nothing to compare")
    return texts


def filler_text(ctx, texts: Sequence[str]) -> str:
    """A text strictly longer (in tokens) than every sample, so every sample row gets pads
    (still true after left-truncation to max_length, which every sample is shorter than):
    the longest sample with a few words more."""
    ids, _ = tokenize_rendered(ctx.tokenizer, list(texts))
    longest = max(range(len(texts)), key=lambda i: len(ids[i]))
    return texts[longest] + " and a few more words"


def score_padded(ctx, texts: Sequence[str], *, side: str) -> dict[str, np.ndarray | Exception]:
    """Rewards of ``texts`` in ONE batch with the filler, padded on ``side``, by ``ctx.model``,
    under both poolings from ONE forward: ``native`` from the checkpoint's own ``forward``,
    ``mask`` from the hidden states its body returned inside that forward (the same call the
    mask scorer makes: ``pooled_rewards``). Where the own forward cannot pool (no
    ``config.pad_token_id``), its error stands in for the native rewards."""
    model = ctx.model
    ids, _ = tokenize_rendered(ctx.tokenizer, [*texts, filler_text(ctx, texts)], ctx.max_length)
    input_ids, mask = pad_batch(ids, ctx.tokenizer.pad_token_id, side)
    hidden: list[torch.Tensor] = []
    hook = reward_body(model).register_forward_hook(lambda module, args, out: hidden.append(out.last_hidden_state))
    out: dict[str, np.ndarray | Exception] = {}
    with torch.inference_mode(), autocast_for(model, ctx.dtype):
        try:
            if getattr(model.config, "pad_token_id", None) is None:
                raise ValueError("Cannot handle batch sizes > 1 if no padding token is defined (config.pad_token_id)")
            out["native"] = forward_rewards(model, input_ids, mask, "native").double().numpy()[:-1]
        except Exception as exc:  # noqa: BLE001 - reported as this pooling's result
            out["native"] = exc
        finally:
            hook.remove()
        try:
            if not hidden:  # the own forward failed before its body ran
                out["mask"] = forward_rewards(model, input_ids, mask, "mask").double().numpy()[:-1]
            else:
                read = hidden[0][torch.arange(len(ids)), last_token_index(mask.to(hidden[0].device))]
                out["mask"] = apply_head(model, read).double().cpu().numpy()[:-1]
        except ValueError as exc:  # a head that reads no body state directly (RoBERTa's): no mask reading
            out["mask"] = exc
    return out


def padded_rewards(ctx, texts: Sequence[str], *, side: str, pooling: str) -> np.ndarray:
    """:func:`score_padded` on the float32 model (``ctx.float32_model``), once per audit for
    the same texts and side: padding's modes (both poolings) and inference_invariance's batch
    and padding-side axes are this same forward."""
    def compute() -> dict[str, np.ndarray | Exception]:
        with scored_in_float32(ctx):
            return score_padded(ctx, texts, side=side)

    return of_pooling(ctx.shared(("float32-padded", tuple(texts), side), compute), pooling)


def of_pooling(readings: dict[str, np.ndarray | Exception], pooling: str) -> np.ndarray:
    """One pooling's rewards from :func:`score_padded`; its error raised where it could not run."""
    rewards = readings[pooling]
    if isinstance(rewards, Exception):
        raise rewards
    return rewards


def padded_modes(ctx, texts: Sequence[str], poolings: Sequence[str]) -> list[ModeResult]:
    """Every sample text in ONE float32 batch with the filler, for each side (and pooling)."""
    modes = []
    for pooling in poolings:
        for side in SIDES:
            try:
                modes.append(ModeResult(side, pooling, padded_rewards(ctx, texts, side=side, pooling=pooling)))
            except Exception as exc:  # e.g. native pooling with no config.pad_token_id cannot batch
                modes.append(ModeResult(side, pooling, None, f"{type(exc).__name__}: {exc}"))
    return modes


def left_padding_caveat(ctx, pooling: str) -> str | None:
    """Why a reward that left padding moves is the consumer's error rather than the model's,
    or None. A model that does not attend causally, read by its own pooling, reads a state of
    the whole row at a fixed place (BERT's and DeBERTa's poolers read position 0, which left
    padding fills with a pad): every such checkpoint moves under left padding, and its
    tokenizer pads right, as transformers' and TRL GRPO's reads do. Where the tokenizer itself
    pads left, its own consumers read wrong rewards, and the move stays a failure."""
    if pooling != "native" or attends_causally(ctx.model) or ctx.tokenizer.padding_side != "right":
        return None
    return ("this model does not attend causally and its own pooling reads a fixed position (BERT-style poolers read "
            "position 0, a pad when padded left); its tokenizer pads right, as the consumers that run its own forward "
            "do: a consumer must not pad it left")


def end_of_turn_variants(text: str, eos: str) -> tuple[str, str]:
    """(without, with) the end-of-turn eos: strip the template's final eos when it ends
    with one (trailing whitespace allowed), otherwise append one, as trainers do."""
    stripped = text.rstrip()
    if stripped.endswith(eos):
        cut = len(stripped) - len(eos)
        return text[:cut] + text[len(stripped):], text
    return text, text + eos


class PaddingProbe(Probe):
    """Score a sample alone, right-padded and left-padded under mask and native pooling, in
    float32; fail when padding moves a reward past the rounding tolerance or pad ids disagree."""

    name = "padding"
    order = 20
    description = "Is a reward independent of batch companions and padding side? Alone vs right- vs left-padded, pad/eos config checks."
    why = ("If the reward is read at a pad position, PPO's batched rewards are noise that depends on batch companions.\n"
           "Compares rewards alone, right-padded and left-padded (mask and native pooling), and checks pad/eos ids.")
    inputs = ("model",)
    limits = (
        Limit("spread_ratio", Comparison.BELOW, fail=0.1,
              help="padded-row reward std / alone std: below it, padded rows read one pad position"),
    )
    settings = (
        Setting("tolerance_ulps", 16.0, "safety factor on the rounding bound of the padded-vs-alone comparison"),
        Setting("tolerance_floor_std", 1e-3, "never flag a change smaller than this many reward-stds"),
        Setting("sample_size", 8, "texts scored alone and padded: the chosen and rejected texts of half as many short "
                                   "pairs (inference_invariance's computation_pairs; the same pairs share forwards)"),
    )

    def run(self, ctx) -> ProbeResult:
        texts = sample_texts(ctx, int(self.setting("sample_size")))
        served = resolve_pooling(ctx.model, ctx.pooling)
        poolings = self._poolings(ctx, served)
        audit_dtype = model_dtype(ctx)
        audit_std = self._audit_reward_std(ctx)
        with scored_in_float32(ctx):
            alone = {p: ctx.float32_rewards(texts, p, alone=True) for p in poolings}
            modes = padded_modes(ctx, texts, poolings)
            std = self._reference_std(audit_std, alone[served])
            rms = float(np.sqrt(np.mean(alone[served] ** 2)))
            dtype = model_dtype(ctx)
            tol = tolerance_std(dtype, n_layers(ctx.model), rms, std, self.setting("tolerance_ulps"),
                                self.setting("tolerance_floor_std"))
            findings: list[Finding] = []
            metrics: dict[str, Any] = {
                "served_pooling": served, "dtype": dtype_name(dtype),
                "audit_dtype": dtype_name(audit_dtype), "n_texts": len(texts),
                "reward_std": metric(std), "tolerance_std": metric(tol, 6),
            }
            deltas = self._check_modes(modes, alone, std, tol, metrics, findings, left_padding_caveat(ctx, "native"))
            self._check_pad_ids(ctx, metrics, findings)
            self._check_end_of_turn(ctx, texts, served, std, tol, metrics, findings)

        return self.result(
            findings, with_reasons(self._summary(deltas, tol), findings), metrics=metrics,
            evidence=self._evidence(ctx, texts, alone, modes, std),
            chart=self._chart(deltas, tol),
        )

    @staticmethod
    def _poolings(ctx, served: str) -> list[str]:
        """The served pooling first, then the other one where the checkpoint supports it and a
        consumer may read it: not the last-token reading of a model whose own pooling reads
        the whole row (an encoder), which no trainer of it uses."""
        other = "native" if served == "mask" else "mask"
        if other == "native" and getattr(ctx.model.config, "pad_token_id", None) is None:
            return [served]
        if other == "mask" and not attends_causally(ctx.model):
            return [served]
        return [served, other]

    @staticmethod
    def _audit_reward_std(ctx) -> float:
        """Reward std of the reference set, scored (and cached) in the audit's own dtype."""
        try:
            return ctx.reward_std()
        except ProbeSkipped:
            return float("nan")

    @staticmethod
    def _reference_std(std: float, alone: np.ndarray) -> float:
        if not np.isfinite(std) or std <= 0:
            std = float(np.std(alone))
        if not np.isfinite(std) or std <= 0:
            raise ProbeSkipped("every text gets the same reward: no reward spread to measure padding effects against")
        return std

    def _check_modes(self, modes, alone, std, tol, metrics, findings,
                     native_left_caveat: str | None = None) -> dict[str, float | None]:
        """Per mode: max |padded - alone| in reward-stds, and the collapse tell-tale; a move of
        left-padded native rewards only warns where ``native_left_caveat`` explains it."""
        deltas: dict[str, float | None] = {}
        for mode in modes:
            key = f"{mode.side}_{mode.pooling}"
            if mode.rewards is None:
                deltas[mode.label] = None
                metrics[f"max_delta_std_{key}"] = None
                findings.append(note(Status.WARN, f"{mode.label}: cannot score a padded batch ({mode.error})",
                                     f"max_delta_std_{key}"))
                continue
            delta = float(np.max(np.abs(mode.rewards - alone[mode.pooling]))) / std
            spread = float(np.std(alone[mode.pooling]))
            ratio = float(np.std(mode.rewards)) / spread if spread > 0 else None
            deltas[mode.label] = delta
            metrics[f"max_delta_std_{key}"] = metric(delta, 6)
            metrics[f"spread_ratio_{key}"] = metric(ratio)
            # The tolerance is derived from the dtype's rounding, so it is a computed limit, not a setting.
            caveat = native_left_caveat if (mode.side, mode.pooling) == ("left", "native") and delta > tol else None
            findings.append(Finding(
                (Status.WARN if caveat else Status.FAIL) if delta > tol else Status.PASS,
                f"{mode.label}: rewards move by up to {delta:.3g} reward-std against scoring alone"
                + (f": {caveat}" if caveat else ""),
                f"max_delta_std_{key}", metric(delta, 6), metric(tol, 6), Comparison.ABOVE))
            if ratio is not None and len(mode.rewards) >= 3:
                finding = self.limit("spread_ratio").check(
                    metric(ratio), f"{mode.label}: padded rows keep {ratio:.2g}x the reward spread of scoring alone",
                    metric=f"spread_ratio_{key}")
                if finding.status is not Status.PASS:
                    finding.message += ": the reward is read at a pad position"
                findings.append(finding)
        return deltas

    @staticmethod
    def _check_pad_ids(ctx, metrics, findings) -> None:
        tok, config = ctx.tokenizer, ctx.model.config
        config_pad = getattr(config, "pad_token_id", None)
        metrics.update({"config_pad_token_id": config_pad, "tokenizer_pad_token_id": tok.pad_token_id,
                        "tokenizer_eos_token_id": tok.eos_token_id,
                        "pad_is_eos": tok.pad_token_id is not None and tok.pad_token_id == tok.eos_token_id})
        if config_pad is None:
            findings.append(note(Status.WARN, "config.pad_token_id is unset: the checkpoint's own forward cannot "
                                 "score a padded batch", "config_pad_token_id", None))
        else:
            mismatch = config_pad != tok.pad_token_id
            findings.append(Finding(
                Status.FAIL if mismatch else Status.PASS,
                "config.pad_token_id differs from the tokenizer's pad id: native pooling reads pad positions of "
                "right-padded rows" if mismatch else "config.pad_token_id equals the tokenizer's pad id",
                "config_pad_token_id", config_pad, tok.pad_token_id, Comparison.NOT_EQUAL))

    @staticmethod
    def _check_end_of_turn(ctx, texts, served, std, tol, metrics, findings) -> None:
        """With pad == eos, native pooling skips trailing eos: does the eos change anything?"""
        tok = ctx.tokenizer
        if tok.eos_token is None or tok.pad_token_id != tok.eos_token_id:
            metrics["eos_delta_std"] = None
            return
        variants = [end_of_turn_variants(t, tok.eos_token) for t in texts[:4]]
        flat = [v for pair in variants for v in pair]
        rewards = ctx.float32_rewards(flat, served)  # the sample's own readings (alone) are reused
        delta = float(np.max(np.abs(rewards[0::2] - rewards[1::2]))) / std
        metrics["eos_delta_std"] = metric(delta, 6)
        unchanged = delta <= tol
        findings.append(Finding(
            Status.WARN if unchanged else Status.PASS,
            f"pad == eos and the end-of-turn eos {'leaves the reward unchanged' if unchanged else 'changes the reward'} "
            f"({served} pooling)" + (": the model never sees the end of the turn" if unchanged else ""),
            "eos_delta_std", metric(delta, 6), metric(tol, 6), Comparison.AT_MOST))

    @staticmethod
    def _evidence(ctx, texts, alone, modes, std) -> list[dict[str, Any]]:
        ids, _ = tokenize_rendered(ctx.tokenizer, texts)
        rows = []
        for i, text in enumerate(texts):
            row: dict[str, Any] = {"text": clip_evidence(text),
                                   "tokens": len(ids[i])}
            for pooling, rewards in alone.items():
                row[f"alone_{pooling}"] = metric(rewards[i])
            for mode in modes:
                row[f"{mode.side}_{mode.pooling}"] = None if mode.rewards is None else metric(mode.rewards[i])
            rows.append(row)
        return rows

    @staticmethod
    def _chart(deltas: dict[str, float | None], tol: float) -> dict[str, Any]:
        labels = list(deltas)
        return {
            "kind": "bar", "title": "Largest reward change from padding, in reward-stds",
            "x_label": "padding / pooling", "y_label": "max |padded − alone| / reward std",
            "categories": labels,
            "series": [{"name": "max |delta|", "values": [deltas[k] for k in labels]}],
            "hlines": [{"y": tol, "label": "tolerance"}],
        }

    @staticmethod
    def _summary(deltas, tol: float) -> str:
        measured = ", ".join(f"{k} {v:.2g}" for k, v in deltas.items() if v is not None)
        return f"max reward change in reward-stds: {measured} (tolerance {tol:.2g})"


