"""inference_invariance: a checkpoint whose forward reads a pad position fails the batch and
attention axes (its twin passes all of them, attention implementation restored); precision
is graded against the bf16 bound; end-of-turn edits report their accuracy effect."""

from __future__ import annotations

import numpy as np
import pytest

from helpers_probe import record_progress_bars, run_configured
from helpers_probe_heads import synthetic_pairs
from rmaudit.modeling.loading import load_reward_model
from rmaudit.probes.context import AuditContext
from rmaudit.probes.inference_invariance import InferenceInvariance, _toggle_end_of_turn
from rmaudit.results import Status
from rmaudit.scoring import render
from tiny_models import make_tiny_rm, require_smollm2, tiny_tokenizer

PAIRS = synthetic_pairs(seed=1000, n=12, rule="content")


def _audit(folder, **settings):
    loaded = load_reward_model(folder)
    ctx = AuditContext(checkpoint=folder, model=loaded.model, tokenizer=loaded.tokenizer, manifest=loaded.manifest,
                       eval_pairs=PAIRS)
    return run_configured(InferenceInvariance, ctx, **settings), loaded.model


def test_forward_reading_a_pad_position_fails_batch_and_attention_axes(tmp_path):
    require_smollm2()
    result, _ = _audit(make_tiny_rm(tmp_path / "rm", pad_token_id=0))
    failed = {f.metric for f in result.reasons}
    assert result.status is Status.FAIL and {"batch:max_delta_std", "attention:max_delta_std"} <= failed
    batch = next(f for f in result.findings if f.metric == "batch:max_delta_std")
    assert batch.value > 1.0 and batch.limit == result.metrics["tolerance_float32_std"]


def test_healthy_checkpoint_passes_every_axis_and_keeps_its_attention_implementation(tmp_path):
    require_smollm2()
    result, model = _audit(make_tiny_rm(tmp_path / "rm"))
    assert result.status is Status.PASS, result.summary
    for axis in ("batch", "padding_side", "attention", "prefix_sharing", "dtype", "end_of_turn"):
        assert f"{axis}:max_delta_std" in result.metrics and f"{axis}:median_delta_std" in result.metrics
    assert result.metrics["dtype:max_delta_std"] > result.metrics["batch:max_delta_std"]  # bf16 rounds, fp32 batching does not
    assert result.metrics["tolerance_bfloat16_std"] > result.metrics["tolerance_float32_std"]
    assert model.config._attn_implementation == load_reward_model(tmp_path / "rm").model.config._attn_implementation


def test_end_of_turn_edit_strips_the_trailing_newline_or_the_final_eos():
    require_smollm2()
    tokenizer = tiny_tokenizer()
    assert _toggle_end_of_turn(tokenizer, "a<|im_end|>\n") == "a<|im_end|>"
    assert _toggle_end_of_turn(tokenizer, "a<|im_end|>") == "a"
    assert _toggle_end_of_turn(tokenizer, "a") == "a<|im_end|>"


def test_input_axes_are_graded_on_the_accuracy_they_cost_with_a_configurable_limit(tmp_path):
    """The end-of-turn edit moves a tiny model's rewards a lot; whether that warns is decided by
    the accuracy it costs against the configured limit (here set so low that any change warns)."""
    require_smollm2()
    loaded = load_reward_model(make_tiny_rm(tmp_path / "rm"))
    ctx = AuditContext(checkpoint=tmp_path / "rm", model=loaded.model, tokenizer=loaded.tokenizer, eval_pairs=PAIRS)
    strict = run_configured(InferenceInvariance, ctx, input_accuracy_drop_warn=-1.0)
    finding = next(f for f in strict.findings if f.metric == "end_of_turn:accuracy_drop")
    assert finding.status is Status.WARN and finding.limit == -1.0 and "reads a worse reward" in finding.message
    assert finding.value == pytest.approx(strict.metrics["accuracy_reference"] - strict.metrics["end_of_turn:accuracy"])
    assert strict.metrics["end_of_turn:median_delta_std"] > 0


@pytest.mark.parametrize("native", [True, False])
def test_the_bf16_axis_rewards_a_small_sample_only_where_bf16_is_emulated(tmp_path, monkeypatch, native):
    """On a CPU without native bf16 (AVX2: 50-80x slower) the dtype axis rewards the first
    ``emulated_bf16_pairs`` pairs and its finding says so; with native bf16 it rewards all."""
    import rmaudit.devices

    require_smollm2()
    reason = "native bfloat16" if native else "CPU capability AVX2 without AMX or AVX512-BF16: bfloat16 is emulated (slow)"
    monkeypatch.setattr(rmaudit.devices, "bf16_support", lambda device="cpu": (native, reason))
    result, _ = _audit(make_tiny_rm(tmp_path / "rm"), emulated_bf16_pairs=3)  # a float32 audit: autocast axis
    m = result.metrics
    assert m["n_texts"] == 2 * len(PAIRS) and m["batch:n_texts"] == 8  # computation_pairs: 4
    assert m["dtype:n_texts"] == (m["n_texts"] if native else 6)
    dtype_finding = next(f for f in result.findings if f.metric == "dtype:max_delta_std")
    assert (f"on 6 of {m['n_texts']} texts" in dtype_finding.message) is not native
    assert (m["bf16_sample_reason"] == reason) is not native


def test_an_attention_kernel_the_architecture_lacks_is_not_applicable_not_a_warning(tmp_path):
    """Gemma 2 caps its attention logits, which only eager attention does, so transformers
    offers it no sdpa: no consumer reads it that way, and the attention axis says so as a
    skipped finding instead of warning that it could not score the variant. The other axes,
    prefix sharing through its sliding window and capped logits included, are still graded."""
    require_smollm2()
    from test_prefix_sharing import capped_gemma2

    tokenizer = tiny_tokenizer()
    model = capped_gemma2(tokenizer, cap=50.0, window=16)  # Gemma 2's own cap; windows on every other layer
    result, loaded = _audit(make_tiny_rm(tmp_path / "rm", model=model, tokenizer=tokenizer))
    assert loaded.config._attn_implementation == "eager"
    attention = next(f for f in result.findings if f.message.startswith("attention:"))
    assert attention.status is Status.SKIP and "no sdpa attention, only eager" in attention.message
    assert "attention:max_delta_std" not in result.metrics and "attention:not_applicable" in result.metrics
    assert "attention n/a" in result.summary  # the table's one line says it, not only the report
    assert result.status is Status.PASS, result.summary
    assert result.metrics["prefix_sharing:max_delta_std"] <= result.metrics["tolerance_float32_std"]


def test_the_audits_own_prefix_sharing_is_checked_on_the_audited_model(tmp_path, monkeypatch):
    """A guard that wrongly let a model share prefixes (planted: LongRoPE, whose rotary factors
    follow the longest position of a forward: a short text read alone gets the short ones,
    packed in a row with longer texts the long ones) is caught: the prefix_sharing axis fails."""
    require_smollm2()
    import rmaudit.probes.inference_invariance as invariance
    import rmaudit.scoring as scoring
    from test_prefix_sharing import length_scaled_rope_rm

    tokenizer = tiny_tokenizer()
    lengths = sorted(len(tokenizer(render(tokenizer, c))["input_ids"]) for p in PAIRS
                     for c in (p.chosen_messages(), p.rejected_messages()))
    # the sample spreads over the shorter half of the pairs: a quarter of all texts lie below it
    model = length_scaled_rope_rm(tokenizer, original_max=lengths[len(lengths) // 4])
    folder = make_tiny_rm(tmp_path / "rm", model=model, tokenizer=tokenizer)
    for module in (invariance, scoring):
        monkeypatch.setattr(module, "prefix_sharing_support", lambda model: (True, "forced by the test"))
    result, _ = _audit(folder)
    finding = next(f for f in result.findings if f.metric == "prefix_sharing:max_delta_std")
    assert finding.status is Status.FAIL and finding.value > finding.limit
    # LongRoPE moves the plain padded batch too (its longest row sets the factors): the batch axis says so
    assert result.metrics["batch:max_delta_std"] > result.metrics["tolerance_float32_std"]


def _rows_forwarded(model) -> tuple[list[int], object]:
    """Rows of every body forward of ``model`` (mask pooling runs the body, native the model)."""
    from rmaudit.modeling.pooling import reward_body

    rows: list[int] = []
    hook = reward_body(model).register_forward_pre_hook(
        lambda module, args, kwargs: rows.append(kwargs.get("input_ids", args[0] if args else None).shape[0]),
        with_kwargs=True)
    return rows, hook


def test_padding_and_invariance_read_their_shared_padded_float32_batches_once(tmp_path):
    """The batch and padding-side axes are padding's own right- and left-padded batches (its
    sample of 4 pairs and the filler), one forward per side for both poolings: padding
    forwards two, after which invariance forwards only the attention axis' batch of 9 rows;
    alone, it forwards all three."""
    from rmaudit.probes.padding import PaddingProbe

    require_smollm2()
    folder = make_tiny_rm(tmp_path / "rm")

    def nine_row_forwards(*probes):
        loaded = load_reward_model(folder)
        ctx = AuditContext(checkpoint=folder, model=loaded.model, tokenizer=loaded.tokenizer, eval_pairs=PAIRS)
        rows, hook = _rows_forwarded(ctx.float32_model())
        counts = []
        for probe in probes:
            before = rows.count(9)
            result = run_configured(probe, ctx)
            assert result.status is Status.PASS, result.summary
            counts.append(rows.count(9) - before)
        hook.remove()
        return counts

    assert nine_row_forwards(InferenceInvariance) == [3]
    padding, invariance = nine_row_forwards(PaddingProbe, InferenceInvariance)
    assert padding == 2 and invariance == 1


def test_a_batched_float32_reading_reuses_the_batch_of_one_readings(tmp_path, monkeypatch):
    import rmaudit.scoring

    require_smollm2()
    loaded = load_reward_model(make_tiny_rm(tmp_path / "rm"))
    ctx = AuditContext(checkpoint=tmp_path / "rm", model=loaded.model, tokenizer=loaded.tokenizer, eval_pairs=PAIRS)
    texts = ctx.pair_texts(PAIRS)
    alone = ctx.float32_rewards(texts[:6], alone=True)
    scored: list[str] = []
    score_texts = rmaudit.scoring.score_texts
    monkeypatch.setattr(rmaudit.scoring, "score_texts", lambda model, tokenizer, items, **kw: (
        scored.extend(items), score_texts(model, tokenizer, items, **kw))[1])
    assert (ctx.float32_rewards(texts[:6]) == alone).all() and scored == []  # nothing read again
    batched = ctx.float32_rewards(texts)
    assert (batched[:6] == alone).all() and sorted(scored) == sorted(set(texts[6:]))


def test_a_float32_reading_of_lazily_rendered_pairs_in_chunks_equals_one_read_at_once(tmp_path, monkeypatch):
    """accuracy's float32 regrade reads every held-out pair: it passes the pairs rendered on
    access and the keys are taken a chunk at a time, so 100k pairs are never all in memory
    as texts or token ids. Chunked, lazy and at once must give the same rewards."""
    import rmaudit.scoring
    from rmaudit.probes.context import RenderedPairs

    require_smollm2()
    loaded = load_reward_model(make_tiny_rm(tmp_path / "rm"))

    def fresh():
        return AuditContext(checkpoint=tmp_path / "rm", model=loaded.model, tokenizer=loaded.tokenizer,
                            eval_pairs=PAIRS)

    at_once = fresh().float32_rewards(fresh().pair_texts(PAIRS))
    monkeypatch.setattr(rmaudit.scoring, "CHUNK_TEXTS", 3)
    ctx = fresh()
    lazy = ctx.float32_rewards(RenderedPairs(ctx, PAIRS))
    np.testing.assert_allclose(lazy, at_once, rtol=0, atol=1e-5)
    assert len(lazy) == 2 * len(PAIRS) > 3


def test_a_float32_reading_shows_its_own_bar_counting_the_texts_it_reads(tmp_path, monkeypatch):
    """canonical_pairs' close calls took 10 s of float32 on SmolLM2 under a bare 'running'
    line; the reading has a bar of its own, advanced text by text to its total."""
    require_smollm2()
    loaded = load_reward_model(make_tiny_rm(tmp_path / "rm"))
    ctx = AuditContext(checkpoint=tmp_path / "rm", model=loaded.model, tokenizer=loaded.tokenizer, eval_pairs=PAIRS,
                       progress=True)
    bars = record_progress_bars(monkeypatch)
    texts = ctx.pair_texts(PAIRS)
    ctx.float32_rewards(texts[:3], alone=True)
    ctx.float32_rewards(texts)  # the three read alone are reused, not counted again
    assert bars == [["float32 reference", 3, 3], ["float32 reference", len(set(texts)) - 3, len(set(texts)) - 3]]


def test_computation_axes_that_cannot_be_checked_are_said_not_passed(tmp_path):
    """Every sample pair longer than the max length: no padded batch can be built, and the
    four computation axes warn that they were not checked instead of passing."""
    require_smollm2()
    loaded = load_reward_model(make_tiny_rm(tmp_path / "rm"))
    ctx = AuditContext(checkpoint=tmp_path / "rm", model=loaded.model, tokenizer=loaded.tokenizer, eval_pairs=PAIRS,
                       max_length=12)
    result = run_configured(InferenceInvariance, ctx)
    for axis in ("batch", "padding_side", "attention", "prefix_sharing"):
        finding = next(f for f in result.findings if f"{axis}:" in f.message)
        assert finding.status is Status.WARN and "no sample pair fits the max length (12 tokens)" in finding.message
    assert result.status is not Status.PASS
