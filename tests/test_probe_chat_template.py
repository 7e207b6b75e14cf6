"""chat_template: a Llama-3 policy against a ChatML RM fails; the same template passes;
whitespace-only differences warn unless they move the rewards."""

from __future__ import annotations

import copy
import json

import pytest
from transformers import AutoTokenizer

from helpers_probe_heads import fitted_rm, synthetic_pairs
from helpers_probe import run_configured
from rmaudit.modeling.manifest import tokenizer_facts
from rmaudit.modeling.manifest import Manifest
from rmaudit.probes.chat_template import (
    SAVED_SOURCE, SAVED_TEMPLATE, STRUCTURE_PROBES, ChatTemplateProbe, compare, double_bos, known_templates, template_family,
)
from rmaudit.report.charts import validate_chart
from rmaudit.results import Status
from rmaudit.probes.context import AuditContext
from rmaudit.scoring import render
from tiny_models import llama3_tokenizer_dir, tiny_tokenizer

EVAL_PAIRS = synthetic_pairs(seed=2000, n=24, rule="content")


@pytest.fixture(scope="module")
def rm():
    """A ChatML reward model (SmolLM2's tokenizer) whose head learned content, so its
    reward spread is that of a trained RM rather than of a random head."""
    return fitted_rm("content")


def llama3_policy(with_template: bool = True):
    tokenizer = AutoTokenizer.from_pretrained(llama3_tokenizer_dir())
    assert tokenizer.chat_template is None  # the real Llama-3.2 tokenizer ships none
    if with_template:
        tokenizer.chat_template = known_templates()["llama3"]
    return tokenizer


def chatml_policy(edit=lambda template: template):
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = edit(tokenizer.chat_template)
    return tokenizer


def run(rm, policy=None, manifest=None, notes=None, **thresholds):
    model, tokenizer = rm
    ctx = AuditContext(checkpoint=None, model=model, tokenizer=tokenizer, eval_pairs=EVAL_PAIRS,
                       policy_tokenizer=policy, manifest=Manifest.from_dict(manifest) if manifest else None, pooling="mask", notes=dict(notes or {}))
    return run_configured(ChatTemplateProbe, ctx, **thresholds)


def test_llama3_policy_against_chatml_rm_fails(rm):
    result = run(rm, llama3_policy())
    assert result.status is Status.FAIL, result.summary
    m = result.metrics
    assert m["policy_template_family"] == "llama3" and m["rm_template_family"] == "chatml-like"
    assert m["conversations_different"] == m["conversations_identical"] + m["conversations_different"] > 0
    assert m["mean_abs_shift_std"] >= 0.5
    # Llama-3's template writes <|begin_of_text|> and its tokenizer adds another one.
    assert m["double_bos_policy"] and not m["double_bos_rm"]
    assert validate_chart(result.chart) == []
    json.dumps(result.to_dict())
    diff = result.chart["charts"][0]
    assert diff["kind"] == "diff" and "<|start_header_id|>" in diff["right"] and "<|im_start|>" in diff["left"]
    assert any("<|start_header_id|>" in row["diff"] for row in result.evidence)


def test_policy_with_the_same_template_passes(rm):
    result = run(rm, chatml_policy())
    assert result.status is Status.PASS, result.summary
    m = result.metrics
    assert m["templates_identical"] and m["conversations_different"] == m["conversations_whitespace"] == 0
    assert m["mean_abs_shift_std"] == 0.0 and m["accuracy_change"] == 0.0


def test_whitespace_only_difference_warns(rm):
    # One extra space after each role header: same format, slightly different text.
    policy = chatml_policy(lambda t: t.replace("message['role'] + '\n'", "message['role'] + '\n '"))
    result = run(rm, policy)
    assert result.metrics["conversations_whitespace"] > 0 and result.metrics["conversations_different"] == 0
    assert result.status is Status.WARN, result.summary
    assert result.metrics["mean_abs_shift_std"] < 0.5


def test_trailing_newline_is_whitespace_only_but_fails_when_it_moves_rewards(rm):
    # An extra trailing newline moves the token the reward is read at: the renderings
    # differ only in whitespace, yet the rewards shift by whole reward-stds.
    policy = chatml_policy(lambda t: t + "{{ '\n' }}")
    result = run(rm, policy)
    assert result.metrics["conversations_whitespace"] > 0 and result.metrics["conversations_different"] == 0
    assert any(row["kind"] == "whitespace" and "\\n\\n" in row["where"] for row in result.evidence)
    assert result.metrics["mean_abs_shift_std"] >= 0.5
    assert result.status is Status.FAIL and "whitespace" in result.summary
    # With the shift threshold out of reach, a whitespace-only difference is a warning.
    assert run(rm, policy, mean_abs_shift_std_fail=1e9).status is Status.WARN


def test_policy_without_template_is_matched_to_its_family(rm):
    result = run(rm, llama3_policy(with_template=False))
    assert "inferred llama3" in result.metrics["policy_template_source"]
    assert result.status is Status.FAIL


def test_manifest_template_is_the_reference_without_policy(rm):
    model, tokenizer = rm
    recorded = {"tokenizer": tokenizer_facts(tokenizer)}
    assert run(rm, manifest=recorded).status is Status.PASS
    recorded["tokenizer"]["chat_template"]["text"] = known_templates()["chatml"]  # trained without the default system prompt
    changed = run(rm, manifest=recorded)
    assert changed.status is Status.FAIL and changed.metrics["conversations_different"] > 0


def test_template_restored_from_manifest_warns(rm):
    # The audit restored the manifest's template into a tokenizer saved without one: the
    # format matches, but the checkpoint alone does not carry it.
    _, tokenizer = rm
    recorded = {"chat_template": {"text": tokenizer.chat_template}}
    result = run(rm, manifest=recorded, notes={"chat_template_source": "manifest"})
    assert result.status is Status.WARN and "no chat template" in result.summary


def test_a_trained_template_the_saved_tokenizer_lacks_warns_only_when_they_differ(rm):
    # --chat-template named the training format; a consumer with the saved tokenizer renders its own.
    notes = {"chat_template_source": "--chat-template", "checkpoint_template_differs": True}
    result = run(rm, chatml_policy(), notes=notes)
    assert result.status is Status.WARN and "saved tokenizer" in result.summary
    assert run(rm, chatml_policy(), notes={**notes, "checkpoint_template_differs": False}).status is Status.PASS


def test_without_a_policy_the_trained_template_is_compared_with_the_checkpoints_own(rm):
    # --chat-template named plain text; the saved tokenizer renders ChatML, as TRL GRPO will.
    model, tokenizer = rm
    trained = copy.copy(tokenizer)
    setattr(trained, SAVED_TEMPLATE, tokenizer.chat_template)
    trained.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}{{ eos_token }}"
    notes = {"chat_template_source": "--chat-template", "checkpoint_template_differs": True}
    ctx = AuditContext(checkpoint=None, model=model, tokenizer=trained, eval_pairs=EVAL_PAIRS, pooling="mask",
                       notes=notes)
    result = run_configured(ChatTemplateProbe, ctx)
    assert result.status is Status.FAIL and result.metrics["policy_template_source"] == SAVED_SOURCE
    assert result.metrics["conversations_different"] > 0 and "saved tokenizer" not in result.summary


def test_skips_without_policy_or_manifest_template(rm):
    result = run(rm)
    assert result.status is Status.SKIP and "--policy" in result.summary


def test_known_templates_render_and_are_recognised():
    tokenizer = llama3_policy(with_template=False)
    templates = known_templates()
    assert set(templates) >= {"chatml", "llama3", "llama2", "zephyr", "gemma", "mistral"}
    for family, text in templates.items():
        for probe in STRUCTURE_PROBES:
            rendered = render(tokenizer, probe, text)
            assert all(m["content"].strip() in rendered for m in probe)
        assert template_family(text, tokenizer) == family


def test_double_bos_needs_both_a_leading_bos_and_a_tokenizer_that_adds_one():
    llama = llama3_policy(with_template=False)
    assert double_bos(llama, "<|begin_of_text|>hello")
    assert not double_bos(llama, "hello")
    smol = tiny_tokenizer()  # ChatML text starts with its bos <|im_start|>, but it adds none
    assert not double_bos(smol, render(smol, STRUCTURE_PROBES[0]))


def test_unrenderable_conversation_is_reported_not_raised():
    tokenizer = tiny_tokenizer()
    from rmaudit.probes.chat_template import PolicyTemplate

    strict = "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}{{ m['content'] }}{% endfor %}"
    result = compare(0, "probe", STRUCTURE_PROBES[0], (tokenizer, tokenizer.chat_template), PolicyTemplate(strict, tokenizer, "test"))
    assert result.kind == "error" and "no system role" in result.detail
