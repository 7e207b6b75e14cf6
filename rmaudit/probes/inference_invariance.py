"""`inference_invariance`: does a reward change with how it is computed, or with small input edits?

A sample of labelled pairs (``ctx.short_pairs``: spread over the shorter half of the held-out
pairs, since what the axes test does not depend on length and float32 cost grows with it;
chosen and rejected) is rewarded once in float32 (``ctx.float32_rewards``) and again along
each axis:

* computation axes, where nothing should change but rounding, on ``computation_pairs`` pairs
  spread over the shorter half of the sample (padding's own sample: ``padding.sample_pairs``;
  a batching bug moves every padded row, a packed row whose texts see each other moves
  every shared one), against their float32 readings alone (batch of one, no padding): one
  padded batch right- and left-padded with a longer filler (the very batches the padding
  probe reads, computed once: ``padding.padded_rewards``), ``attn_implementation`` eager vs
  sdpa (not applicable, a skipped finding, where transformers offers the architecture only
  one of them: Gemma 2's capped logits run eager only), and the audit's own shortcut, shared
  prefixes (``rmaudit/prefix_sharing.py``), where the audit uses it. A change past the
  float32 rounding bound
  (``padding.tolerance_std``: eps x sqrt(2 x layers) x reward rms, times a safety factor)
  fails: the reward depends on how PPO (or the audit) batches it;
* precision, graded against the bfloat16 rounding bound (warns: the rewards are another
  reading). In a bfloat16 audit it checks the audit's own readings, so the report says how
  far the numbers every probe used are from float32; in a float32 audit, bfloat16 autocast
  (what a consumer scoring in bf16 reads). Where the device only emulates bf16 (a CPU without
  AMX or AVX512-BF16, 50-80x slower than float32) that autocast axis rewards the first
  ``emulated_bf16_pairs`` pairs of the sample and says so in its finding;
* input axes, which consumers really do differ on: the tokenizer's own special tokens added
  or not (a BOS, for tokenizers that add one: transformers adds them, TRL GRPO does not), and
  the text with and without what follows the final end-of-turn token (a trailing newline
  that OpenRLHF strips; the eos itself when the text ends at it). Reading another position
  moves rewards by design, so these are graded on what PPO would feel: the held-out
  accuracy lost under the edit warns (``consumer_readout`` says which trainers do edit).
  They are read as the audit reads (its dtype, its scoring plan) and compared with the
  audit's own readings of the unedited texts: effects of whole reward-stds need no float32.

Every axis reports its max and median |delta| in reward-stds of the reference and the
held-out accuracy under it; the tolerances are stated per axis in the report.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import numpy as np

from rmaudit.findings import Comparison, Finding, Limit, Setting, Status, note
from rmaudit.probes.base import Probe, ProbeSkipped, dtype_name, exception_line, metric, with_reasons
from rmaudit.probes.context import FLOAT32_SAMPLE_PAIRS
from rmaudit.probes.padding import (end_of_turn_variants, left_padding_caveat, model_dtype, n_layers, of_pooling, padded_rewards,
                                    sample_pairs, score_padded, scored_in_float32, tolerance_std)
from rmaudit.results import ProbeResult
from rmaudit.prefix_sharing import prefix_sharing_support
from rmaudit.scoring import resolve_pooling, score_texts
from rmaudit.stats import pair_credit
from rmaudit.tree_attention import attention_implementation

COMPUTATION_AXES = ("batch", "padding_side", "attention", "prefix_sharing")
INPUT_AXES = ("bos", "end_of_turn")


class InferenceInvariance(Probe):
    """Reward a sample along computation, precision and input axes against a float32
    batch-of-one reference; fail when batching, padding or attention changes a reward past
    rounding, warn on precision or input edits that move it."""

    name = "inference_invariance"
    order = 85
    section = "Handoff: how PPO will read the reward"
    description = "Rewards under batch size, padding side, attention kernel, bf16 vs fp32, BOS and end-of-turn edits."
    why = ("PPO scores in batches, in its own dtype, with its own tokenisation; a reward that moves with any of these is noise to PPO.\n"
           "Each axis' max and median change in reward-stds against a float32 batch-of-one reference, with dtype-aware tolerances.")
    inputs = ("model",)
    limits = (Limit("input_accuracy_drop", Comparison.AT_LEAST, warn=0.05,
                    help="held-out accuracy lost when special tokens are added or the end-of-turn tail is edited"),)
    settings = (
        Setting("sample_pairs", FLOAT32_SAMPLE_PAIRS, "pairs rewarded along every axis, spread over the shorter half "
                                                      "of the held-out pairs (ctx.short_pairs; padding reads the same)"),
        Setting("computation_pairs", 4, "pairs of the sample, spread over its lengths, rewarded in one padded "
                                         "float32 batch for the batch, padding-side, attention and prefix-sharing axes"),
        Setting("emulated_bf16_pairs", 2, "pairs of the sample rewarded in bfloat16 where the device only emulates "
                                          "it (CPUs without AMX or AVX512-BF16: 50-80x slower than float32)"),
        Setting("tolerance_ulps", 16.0, "safety factor on the rounding bound"),
        Setting("tolerance_floor_std", 1e-3, "never flag a change smaller than this many reward-stds"),
    )

    def plan(self, ctx):
        """The labelled texts, and the input-axis variants of the sample: they share all but
        their last tokens with their originals, so the audit's scorer reads them nearly free."""
        texts = ctx.pair_texts(ctx.short_pairs(int(self.setting("sample_pairs"))))
        return [*super().plan(ctx), [v for variants in self._input_variants(ctx, texts).values() for v in variants]]

    def run(self, ctx) -> ProbeResult:
        pairs = ctx.short_pairs(int(self.setting("sample_pairs")))
        if len(pairs) < 2:
            raise ProbeSkipped("fewer than two pairs to reward: give --data or keep the canonical pairs")
        texts = ctx.pair_texts(pairs)
        pooling = resolve_pooling(ctx.model, ctx.pooling)
        reference = ctx.float32_rewards(texts, pooling)  # batched: exact to float32 rounding, for the dtype axis
        std = float(reference.std())
        if not std > 0:
            raise ProbeSkipped("every sampled text gets the same reward: no spread to measure changes against")
        n = len(pairs)
        # padding's sample: the same padded float32 batches serve both probes (padded_rewards)
        picked = sample_pairs(ctx, pairs, int(self.setting("computation_pairs")))
        few = [*picked, *(i + n for i in picked)]  # those pairs' chosen, then rejected texts: one padded batch
        audit_dtype = model_dtype(ctx)
        # axis -> (rewards or the error, the rewards it is compared with)
        axes: dict[str, tuple[np.ndarray | str, np.ndarray]] = {}
        bf16_reason = ""
        batch = [texts[i] for i in few]
        with scored_in_float32(ctx):
            if few:
                self._computation_axes(ctx, batch, pooling, axes)
            else:  # said, not passed: the computation axes were not checked
                reason = f"no sample pair fits the max length ({ctx.max_length} tokens) with room for padding"
                axes.update((axis, (reason, np.zeros(0))) for axis in COMPUTATION_AXES)
            if audit_dtype == _float32():  # what a consumer reading in bf16 gets
                subset, why = self._bf16_subset(ctx, n)
                bf16_reason = why if len(subset) < 2 * n else ""
                axes["dtype"] = (_attempt(lambda: self._bf16_rewards(ctx, [texts[i] for i in subset], pooling)),
                                 reference[subset])
            layers = n_layers(ctx.model)
        audit = ctx.score_texts(texts)
        if audit_dtype != _float32():  # the numbers every probe of this audit used
            axes["dtype"] = (audit, reference)
        for axis, variants in self._input_variants(ctx, texts).items():  # read as the audit reads: like for like
            axes[axis] = (_attempt(partial(ctx.score_texts, variants)), audit)
        rms = float(np.sqrt(np.mean(reference ** 2)))
        tol32 = tolerance_std(_float32(), layers, rms, std, self.setting("tolerance_ulps"), self.setting("tolerance_floor_std"))
        tol16 = tolerance_std(_bfloat16(), layers, rms, std, self.setting("tolerance_ulps"), self.setting("tolerance_floor_std"))
        metrics: dict[str, Any] = {"n_texts": 2 * n, "reward_std": metric(std, 6), "tolerance_float32_std": metric(tol32, 6),
                                   "tolerance_bfloat16_std": metric(tol16, 6), "bf16_sample_reason": bf16_reason or None,
                                   "dtype_axis": ("bfloat16 autocast over the float32 weights" if audit_dtype == _float32()
                                                  else f"the audit's own {dtype_name(audit_dtype)} readings"),
                                   "accuracy_reference": metric(float(pair_credit(reference[:n] - reference[n:]).mean()))}
        findings: list[Finding] = []
        for axis, (rewards, ref) in axes.items():
            if isinstance(rewards, NotApplicable):
                metrics[f"{axis}:not_applicable"] = str(rewards)
                findings.append(note(Status.SKIP, f"{axis}: not applicable ({rewards})"))
                continue
            if isinstance(rewards, str):
                metrics[f"{axis}:error"] = rewards
                findings.append(note(Status.WARN, f"{axis}: cannot score this variant ({rewards})"))
                continue
            k = len(ref) // 2
            delta = np.abs(rewards - ref) / std
            metrics.update({f"{axis}:max_delta_std": metric(float(delta.max()), 6),
                            f"{axis}:median_delta_std": metric(float(np.median(delta)), 6),
                            f"{axis}:n_texts": len(ref),
                            f"{axis}:accuracy_reference": metric(float(pair_credit(ref[:k] - ref[k:]).mean())),
                            f"{axis}:accuracy": metric(float(pair_credit(rewards[:k] - rewards[k:]).mean()))})
            findings.append(self._grade(axis, delta, tol32, tol16, metrics,
                                        left_padding_caveat(ctx, pooling) if axis == "padding_side" else None))
        return self.result(findings, with_reasons(self._summary(metrics), findings), metrics=metrics,
                           chart=self._chart(metrics, tol32, tol16))

    @staticmethod
    def _input_variants(ctx, texts: list[str]) -> dict[str, list[str]]:
        """The texts under each input edit consumers really make: the tokenizer's BOS toggled
        (for tokenizers that add one) and the end-of-turn tail edited."""
        variants = {"end_of_turn": [_toggle_end_of_turn(ctx.tokenizer, t) for t in texts]} if ctx.tokenizer.eos_token else {}
        if _adds_bos(ctx.tokenizer):
            variants = {"bos": [_toggle_bos(ctx.tokenizer, t) for t in texts], **variants}
        return variants

    def _grade(self, axis: str, delta: np.ndarray, tol32: float, tol16: float, m: dict[str, Any],
               caveat: str | None = None) -> Finding:
        worst, median = m[f"{axis}:max_delta_std"], m[f"{axis}:median_delta_std"]
        accuracy = f"accuracy {m[f'{axis}:accuracy_reference']:.3f} -> {m[f'{axis}:accuracy']:.3f}"
        if axis == "dtype" and m["bf16_sample_reason"]:
            accuracy += f"; on {m[f'{axis}:n_texts']} of {m['n_texts']} texts: {m['bf16_sample_reason']}"
        if axis in COMPUTATION_AXES:
            moved = worst > tol32
            why = f": {caveat}" if caveat else ": the reward depends on how the batch is computed"
            return Finding((Status.WARN if caveat else Status.FAIL) if moved else Status.PASS,
                           f"{axis}: rewards move by up to {worst:.3g} reward-std ({accuracy})" + (why if moved else ""),
                           f"{axis}:max_delta_std", worst, metric(tol32, 6), Comparison.ABOVE)
        if axis == "dtype":
            moved = worst > tol16
            return Finding(Status.WARN if moved else Status.PASS,
                           f"bfloat16 vs float32: rewards move by up to {worst:.3g} reward-std ({accuracy})"
                           + (", past bfloat16 rounding" if moved else ""),
                           "dtype:max_delta_std", worst, metric(tol16, 6), Comparison.ABOVE)
        what = {"bos": "adding or removing the tokenizer's BOS",
                "end_of_turn": "editing what follows the final end-of-turn token"}[axis]
        drop = metric(m[f"{axis}:accuracy_reference"] - m[f"{axis}:accuracy"])
        m[f"{axis}:accuracy_drop"] = drop
        finding = self.limit("input_accuracy_drop").check(
            drop, f"{what} moves rewards by {median:.3g} reward-std (median; max {worst:.3g}; {accuracy})",
            metric=f"{axis}:accuracy_drop")
        if finding.status is not Status.PASS:
            finding.message += ": a consumer that tokenises this way reads a worse reward"
        return finding

    def _bf16_subset(self, ctx, n_pairs: int) -> tuple[list[int], str]:
        """(indices of the texts the dtype axis rewards, chosen block then rejected; why): all of
        them where the device runs bfloat16 natively, the first ``emulated_bf16_pairs`` pairs
        elsewhere (an emulated bf16 forward costs as much as 50-80 float32 ones)."""
        from rmaudit.devices import bf16_support

        native, why = bf16_support(ctx.device)
        k = n_pairs if native else max(1, min(n_pairs, int(self.setting("emulated_bf16_pairs"))))
        return [*range(k), *range(n_pairs, n_pairs + k)], why

    def _computation_axes(self, ctx, batch: list[str], pooling: str, axes: dict[str, Any]) -> None:
        """The batch, padding-side, attention and prefix-sharing axes of ``batch`` against its
        float32 readings alone, under ``scored_in_float32``."""
        alone = ctx.float32_rewards(batch, pooling, alone=True)
        for axis, side in (("batch", "right"), ("padding_side", "left")):
            axes[axis] = (_attempt(partial(padded_rewards, ctx, batch, side=side, pooling=pooling)), alone)
        axes["attention"] = (_attempt(lambda: self._other_attention(
            ctx, lambda: of_pooling(score_padded(ctx, batch, side="right"), pooling))), alone)
        if ctx.share_prefixes and prefix_sharing_support(ctx.model)[0]:
            axes["prefix_sharing"] = (_attempt(lambda: score_texts(
                ctx.model, ctx.tokenizer, batch, batch_size=len(batch), pooling=pooling, max_length=ctx.max_length,
                share_prefixes=True).rewards), alone)

    @staticmethod
    def _bf16_rewards(ctx, texts: list[str], pooling: str) -> np.ndarray:
        """Rewards under bfloat16 autocast over ``ctx.model``'s (float32) weights, batches of 8."""
        return score_texts(ctx.model, ctx.tokenizer, texts, batch_size=8, dtype=_bfloat16(), pooling=pooling,
                           max_length=ctx.max_length).rewards

    @staticmethod
    def _other_attention(ctx, score: Callable[[], np.ndarray]) -> np.ndarray | NotApplicable:
        """Rewards under the other of eager/sdpa; the model's own implementation is restored.
        Where transformers offers the architecture no sdpa (Gemma 2: only eager caps its
        logits), no consumer can read it that way, and the axis does not apply."""
        model = ctx.model
        current = attention_implementation(model)
        other = "eager" if current != "eager" else "sdpa"
        try:
            model.set_attn_implementation(other)
        except (ValueError, ImportError) as exc:
            return NotApplicable(f"transformers runs {type(model).__name__} with no {other} attention, only "
                                 f"{current}: {exception_line(exc)}")
        try:
            return score()
        finally:
            model.set_attn_implementation(current)

    @staticmethod
    def _summary(m: dict[str, Any]) -> str:
        parts = [f"{axis} {m[f'{axis}:max_delta_std']:.2g}" if f"{axis}:max_delta_std" in m else f"{axis} n/a"
                 for axis in (*COMPUTATION_AXES, "dtype", *INPUT_AXES)
                 if f"{axis}:max_delta_std" in m or f"{axis}:not_applicable" in m]
        return "max reward change in reward-stds: " + ", ".join(parts)

    @staticmethod
    def _chart(m: dict[str, Any], tol32: float, tol16: float) -> dict[str, Any]:
        axes = [a for a in (*COMPUTATION_AXES, "dtype", *INPUT_AXES) if f"{a}:max_delta_std" in m]
        return {"kind": "bar", "title": "Reward change per axis, in reward-stds (log scale would hide zeros)",
                "x_label": "axis", "y_label": "|reward change| / reward std", "categories": axes,
                "series": [{"name": "max", "values": [m[f"{a}:max_delta_std"] for a in axes]},
                           {"name": "median", "values": [m[f"{a}:median_delta_std"] for a in axes]}],
                "hlines": [{"y": tol32, "label": "float32 tolerance"}, {"y": tol16, "label": "bfloat16 tolerance"}]}


class NotApplicable(str):
    """Why an axis has nothing to compare on this model (reported as a skipped finding)."""


def _attempt(compute: Callable[[], np.ndarray | str]) -> np.ndarray | str:
    try:
        return compute()
    except Exception as exc:  # noqa: BLE001 - a variant the model cannot run is reported, not raised
        return exception_line(exc)


def _float32() -> Any:
    import torch

    return torch.float32


def _bfloat16() -> Any:
    import torch

    return torch.bfloat16


def _adds_bos(tokenizer: Any) -> bool:
    """Does the tokenizer add a BOS of its own when asked for special tokens?"""
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if bos_id is None:
        return False
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos_id and tokenizer("x", add_special_tokens=False)["input_ids"][:1] != [bos_id]


def _toggle_bos(tokenizer: Any, text: str) -> str:
    bos = getattr(tokenizer, "bos_token", None)
    if not bos:
        raise ValueError("the tokenizer has no BOS token")
    return text[len(bos):] if text.startswith(bos) else bos + text


def _toggle_end_of_turn(tokenizer: Any, text: str) -> str:
    """The text without what follows its final eos (a trailing newline); a text that ends at
    its eos loses the eos; one without an eos at the end gets one."""
    eos = tokenizer.eos_token
    if not eos:
        raise ValueError("the tokenizer has no eos token")
    stripped = text.rstrip()
    if stripped.endswith(eos) and stripped != text:
        return stripped
    without, with_eos = end_of_turn_variants(text, eos)
    return without if text == with_eos else with_eos
