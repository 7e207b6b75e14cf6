"""The audit runner: probe selection, thresholds, skips and crashes, manifest defaults, and the
shared score cache (each distinct text goes through the model once per audit)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from helpers_audit import CANONICAL_FILE, TOPICS, save_rm, topic_pairs, write_pairs_jsonl
from rmaudit.audit import AuditOptions, build_context, run_audit, run_probes, sample_pairs
from rmaudit.probes.registry import get_probe, probe_names, select_probes, unregister_probe
from rmaudit.data import load_pairs, split_by_prompt
from rmaudit.data.store import PairStore
from rmaudit.errors import RmauditInputError
from rmaudit.probes import Probe, register_probe
from rmaudit.results import Status
from tiny_models import require_smollm2, tiny_rm


def test_select_probes_all_names_and_unknown():
    assert select_probes("all") == probe_names()
    names = probe_names()
    assert names[:2] == ["length_bias", "padding"] and names.index("accuracy") < names.index("consumer_readout")
    assert names[-7:-3] == ["head_integrity", "reward_scale", "consumer_readout", "inference_invariance"]  # handoff
    assert names[-3:] == ["policy_rollouts", "policy_shift", "overoptimization"]  # the on-policy preflight comes last
    assert select_probes("accuracy, canonical_pairs,accuracy") == ["accuracy", "canonical_pairs"]
    assert select_probes(["accuracy"]) == ["accuracy"]
    with pytest.raises(RmauditInputError) as err:
        select_probes("accuracy,lenght_bias")
    message = str(err.value)
    assert "'lenght_bias'" in message and "canonical_pairs" in message and "accuracy" in message


def test_limit_and_setting_overrides_merge_and_typos_are_rejected():
    accuracy = get_probe("accuracy")
    probe = accuracy({"ece_warn": 0.3}, {"category_min_pairs": 4})
    assert probe.limit("ece").warn == 0.3 and probe.setting("category_min_pairs") == 4
    assert probe.limit("accuracy").fail == accuracy().limit("accuracy").fail == 0.55
    with pytest.raises(RmauditInputError, match="ece_warn_at"):
        accuracy({"ece_warn_at": 0.3})
    with pytest.raises(RmauditInputError, match="settings for 'accuracy'"):
        accuracy(None, {"ece_warn": 0.3})  # a limit given as a setting is not silently accepted
    with pytest.raises(RmauditInputError, match="unknown probe"):
        run_audit("missing", AuditOptions(probes="accuracy", limits={"nope": {"x_fail": 1}}))


def test_sample_pairs_is_deterministic_and_keeps_file_order():
    pairs = topic_pairs()
    first, again = sample_pairs(pairs, 10, seed=3), sample_pairs(pairs, 10, seed=3)
    assert first == again and len(first) == 10
    rows = [pairs.index(p) for p in first]
    assert rows == sorted(rows)
    assert sample_pairs(pairs, 10, seed=4) != first
    assert sample_pairs(pairs, 100, seed=0) == pairs


def test_unloadable_checkpoints_are_input_errors(tmp_path):
    with pytest.raises(RmauditInputError, match="no such local folder"):
        run_audit(tmp_path / "missing", AuditOptions(probes="accuracy"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RmauditInputError, match="no config.json"):
        run_audit(tmp_path / "empty", AuditOptions(probes="accuracy"))
    with pytest.raises(RmauditInputError, match="unknown probe"):
        run_audit(tmp_path / "missing", AuditOptions(probes="nope"))  # before any loading


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    require_smollm2()
    model, tokenizer = tiny_rm(seed=1)
    return save_rm(model, tokenizer, tmp_path_factory.mktemp("audit") / "rm")


def test_missing_data_file_is_a_one_line_input_error(tiny_checkpoint, tmp_path):
    with pytest.raises(RmauditInputError) as err:
        run_audit(tiny_checkpoint, AuditOptions(data=tmp_path / "nope.jsonl"))
    assert "nope.jsonl" in str(err.value) and "--data" in str(err.value) and "\n" not in str(err.value)


def test_a_crashing_probe_is_an_error_and_the_others_still_run(tiny_checkpoint):
    @register_probe
    class Divides(Probe):
        name = "test_divides_by_zero"
        description = "a probe with a real bug"
        why = "test"

        def run(self, ctx):
            return len(ctx.canonical_pairs) / 0

    try:
        result = run_audit(tiny_checkpoint, AuditOptions(probes="test_divides_by_zero,canonical_pairs,accuracy"))
    finally:
        unregister_probe("test_divides_by_zero")
    crashed, canonical, accuracy = result.probes
    assert crashed.status is Status.ERROR and "ZeroDivisionError: division by zero" in crashed.summary
    assert "run" in crashed.evidence[0]["traceback"]
    assert canonical.status in (Status.PASS, Status.WARN, Status.FAIL) and canonical.metrics["n_pairs"] == 52
    assert accuracy.status is Status.SKIP and "--data" in accuracy.summary
    assert result.gate == "fail"  # an error always fails the gate
    assert all(p.seconds > 0 for p in result.probes)
    assert result.context["pooling"] == "mask" and result.context["manifest_present"] is True
    from rmaudit.devices import resolve_dtype

    assert result.context["dtype"] == resolve_dtype("auto", "cpu")[0]  # --dtype auto: by the CPU's capability
    assert result.context["n_canonical_pairs"] == 52


def test_each_distinct_text_is_scored_once_per_audit(tiny_checkpoint, tmp_path):
    """canonical_pairs and accuracy both score the battery (the eval file repeats half of it,
    and both read the reward std of the reference set): every text must reach the model once."""
    battery = load_pairs(CANONICAL_FILE)
    eval_file = write_pairs_jsonl(battery[:26] + topic_pairs(TOPICS[:10]), tmp_path / "eval.jsonl")
    # Whole texts reach the body only without prefix sharing (tests/test_prefix_sharing.py shows
    # the shared rewards equal these); the subject here is the cache.
    options = AuditOptions(probes="canonical_pairs,accuracy", data=eval_file, batch_size=8, share_prefixes=False)
    ctx = build_context(tiny_checkpoint, options)
    seen: list[tuple[int, ...]] = []

    def record(module, args, kwargs):
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        seen.extend(tuple(row[m.bool()].tolist()) for row, m in zip(ids, mask))

    handle = ctx.model.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        result = run_probes(ctx, options)
        first_pass = len(seen)
        run_probes(ctx, options)  # a second run on the same context hits the cache only
    finally:
        handle.remove()
    assert [p.status for p in result.probes if p.status in (Status.ERROR, Status.SKIP)] == []
    texts = {ctx.render(m) for p in battery + topic_pairs(TOPICS[:10]) for m in (p.chosen_messages(), p.rejected_messages())}
    assert first_pass == len(seen) == len(set(seen)) == len(texts)


def test_held_out_pairs_come_from_a_store_and_are_rewarded_by_content_once(tiny_checkpoint, tmp_path):
    """--data streams into a PairStore (a new object per read): the pair memo must find a pair
    again by its content, in any order, and an edited pair must be scored afresh."""
    ctx = build_context(tiny_checkpoint, AuditOptions(data=write_pairs_jsonl(topic_pairs(TOPICS[:10]),
                                                                            tmp_path / "eval.jsonl")))
    assert isinstance(ctx.eval_pairs, PairStore) and len(ctx.eval_pairs) == 10
    chosen, rejected = ctx.pair_rewards(ctx.eval_pairs)
    scored = ctx.n_scored
    again_chosen, again_rejected = ctx.pair_rewards(list(ctx.eval_pairs)[::-1])
    assert ctx.n_scored == scored
    np.testing.assert_array_equal(again_chosen[::-1], chosen)
    np.testing.assert_array_equal(again_rejected[::-1], rejected)
    edited = dataclasses.replace(ctx.eval_pairs[3], chosen=ctx.eval_pairs[3].chosen + " Edited.")
    edited_chosen, edited_rejected = ctx.pair_rewards([edited])
    assert ctx.n_scored == scored + 1 and edited_rejected[0] == rejected[3]
    assert edited_chosen[0] == ctx.score([edited.chosen_messages()])[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real `rmaudit train` run (2 steps on a tiny base): its manifest and split.json are the defaults."""
    require_smollm2()
    from rmaudit.train.config import build_config
    from rmaudit.train.recipe import train
    from tiny_models import make_tiny_rm

    root = tmp_path_factory.mktemp("trained")
    base = make_tiny_rm(root / "base", seed=4)
    data = write_pairs_jsonl(topic_pairs(), root / "all.jsonl")
    config = build_config(overrides=dict(base=str(base), data=str(data), out=str(root / "rm"), dtype="float32",
                                         progress=False, batch_size=4, max_steps=2, eval_fraction=0.3, max_length=200))
    return {"checkpoint": train(config).out_dir, "data": data, "root": root}


def test_manifest_split_is_the_default_and_flags_override(trained):
    train_side, held_out = split_by_prompt(load_pairs(trained["data"]), 0.3)
    ctx = build_context(trained["checkpoint"], AuditOptions())
    assert held_out and [p.prompt for p in ctx.eval_pairs] == [p.prompt for p in held_out]
    assert [p.prompt for p in ctx.train_pairs] == [p.prompt for p in train_side]
    assert ctx.max_length == 200 and ctx.manifest.trainer == "rmaudit train (Bradley-Terry)"
    assert str(trained["data"]) in ctx.notes["eval_source"] and "eval_data_changed" not in ctx.notes

    other = write_pairs_jsonl(topic_pairs(TOPICS[:5]), trained["root"] / "other.jsonl")
    ctx = build_context(trained["checkpoint"], AuditOptions(data=other, max_length=64))
    assert len(ctx.eval_pairs) == 5 and ctx.max_length == 64 and ctx.notes["eval_source"] == str(other)
    assert len(ctx.train_pairs) == len(train_side)


def test_a_split_file_written_before_0_5_3_still_recovers_its_held_out_pairs(trained, tmp_path):
    """split.json of older checkpoints holds the legacy prompt hash (no NFKC after case
    folding); a held-out prompt whose two hashes differ is still found."""
    import shutil

    from rmaudit.data.pairs import PreferencePair
    from rmaudit.data.split import legacy_prompt_hash, prompt_hash

    checkpoint = shutil.copytree(trained["checkpoint"], tmp_path / "rm")
    greek = PreferencePair([{"role": "user", "content": "Spell \u1fd2 for me"}], "It is \u1fd2.", "No.")
    assert prompt_hash(greek.prompt) != legacy_prompt_hash(greek.prompt)
    data = write_pairs_jsonl([*load_pairs(trained["data"]), greek], tmp_path / "all.jsonl")
    manifest = json.loads((checkpoint / "rmaudit.json").read_text())
    manifest["data"]["train"]["path"] = str(data)
    (checkpoint / "rmaudit.json").write_text(json.dumps(manifest))
    split = json.loads((checkpoint / "split.json").read_text())
    split["eval"].append(legacy_prompt_hash(greek.prompt))
    (checkpoint / "split.json").write_text(json.dumps(split))
    ctx = build_context(checkpoint, AuditOptions())
    assert greek.prompt in [p.prompt for p in ctx.eval_pairs]
    assert greek.prompt not in [p.prompt for p in ctx.train_pairs]


def test_manifest_split_without_split_file_is_recomputed_and_edited_data_is_noted(trained, tmp_path):
    import shutil

    checkpoint = shutil.copytree(trained["checkpoint"], tmp_path / "rm")
    (checkpoint / "split.json").unlink()
    data = tmp_path / "all.jsonl"
    shutil.copy(trained["data"], data)
    manifest = json.loads((checkpoint / "rmaudit.json").read_text())
    manifest["data"]["train"]["path"] = str(data)
    (checkpoint / "rmaudit.json").write_text(json.dumps(manifest))
    _, held_out = split_by_prompt(load_pairs(data), 0.3)
    ctx = build_context(checkpoint, AuditOptions())
    assert [p.prompt for p in ctx.eval_pairs] == [p.prompt for p in held_out]

    with open(data, "a", encoding="utf-8") as handle:  # the data changed after training
        handle.write(json.dumps({"prompt": "new?", "chosen": "a", "rejected": "b"}) + "\n")
    ctx = build_context(checkpoint, AuditOptions())
    assert "differs from the file the model was trained with" in ctx.notes["eval_data_changed"]


def test_checkpoint_without_manifest_has_no_data_defaults_and_native_pooling(tmp_path):
    require_smollm2()
    from tiny_models import make_tiny_rm

    checkpoint = make_tiny_rm(tmp_path / "foreign", seed=3)
    ctx = build_context(checkpoint, AuditOptions(dtype="bfloat16"))
    assert ctx.manifest is None and ctx.eval_pairs is None and ctx.train_pairs is None
    assert ctx.notes["pooling"] == "native" and ctx.dtype == torch.bfloat16
    assert next(ctx.model.parameters()).dtype == torch.bfloat16  # weights in the scoring dtype
    with pytest.raises(RmauditInputError, match="--policy"):
        build_context(checkpoint, AuditOptions(policy=tmp_path / "no-policy"))


def test_the_scoring_plan_scores_every_planned_text_once_before_any_probe_runs(tiny_checkpoint, tmp_path, monkeypatch):
    """length_bias, accuracy and style_interventions (its 7 edits of each response) read every
    reward from the plan: no forward pass happens once the first probe runs, no text reaches
    the model twice, and the plan's batches are full (one length-sorted stream, not one ragged
    call per probe)."""
    import rmaudit.runner as runner

    eval_file = write_pairs_jsonl(topic_pairs(TOPICS), tmp_path / "eval.jsonl")
    options = AuditOptions(probes="length_bias,accuracy,style_interventions", data=eval_file, batch_size=8,
                           settings={"style_interventions": {"min_responses": 2}}, share_prefixes=False)
    ctx = build_context(tiny_checkpoint, options)
    rows: list[tuple[int, ...]] = []
    batches: list[int] = []

    def record(module, args, kwargs):
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        rows.extend(tuple(row[m.bool()].tolist()) for row, m in zip(ids, mask))
        batches.append(len(ids))

    planned: dict[str, int] = {}
    real_plan = runner.score_plan

    def plan_then_count(ctx, probes):
        real_plan(ctx, probes)
        planned.update(rows=len(rows), batches=len(batches))

    monkeypatch.setattr(runner, "score_plan", plan_then_count)
    handle = ctx.model.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        result = run_probes(ctx, options)
    finally:
        handle.remove()
    assert [p.status for p in result.probes if p.status in (Status.ERROR, Status.SKIP)] == []
    assert planned["rows"] == len(rows) > 4 * len(TOPICS)   # pairs, responses and their edits; nothing after
    assert len(rows) == len(set(rows)) == result.context["scoring_plan"]["distinct_texts_scored"]
    assert sum(b < 8 for b in batches) <= 1   # one stream of sorted batches: a single short tail
    style = next(p for p in result.probes if p.name == "style_interventions")
    assert sum(1 for k in style.metrics if k.startswith("shift_std[") and style.metrics[k] is not None) >= 3


def test_prefix_sharing_is_reported_and_can_be_turned_off_without_changing_a_verdict(tiny_checkpoint, tmp_path):
    eval_file = write_pairs_jsonl(topic_pairs(TOPICS), tmp_path / "eval.jsonl")
    runs = {share: run_audit(tiny_checkpoint, AuditOptions(probes="accuracy,length_bias", data=eval_file,
                                                           dtype="float32", share_prefixes=share))
            for share in (True, False)}
    shared, plain = runs[True].context["prefix_sharing"], runs[False].context["prefix_sharing"]
    assert shared["enabled"] and shared["in_shared_groups"] > 0 and shared["share_of_tokens_forwarded"] < 0.9
    assert plain == {"enabled": False, "why": "--no-share-prefixes"}
    for on, off in zip(runs[True].probes, runs[False].probes):
        assert on.status is off.status
        assert on.metrics["n_pairs"] == off.metrics["n_pairs"]
    accuracy = [r.probes[0].metrics for r in runs.values()]
    assert accuracy[0]["mean_margin"] == pytest.approx(accuracy[1]["mean_margin"], abs=1e-4)
