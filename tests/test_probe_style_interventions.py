"""style_interventions: a head that pays for a content-free edit fails on that edit, first in
the profitable list; the counterfactually trained twin passes every edit."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers_style import HELD_OUT, style_rm
from rmaudit.errors import RmauditInputError
from rmaudit.findings import Status
from rmaudit.interventions import BUILTIN_EDITS, StyleEdit, available_edits, select_edits, sentences
from rmaudit.probes.context import AuditContext
from rmaudit.probes.style_interventions import StyleInterventions
from rmaudit.report.charts import validate_chart
from tiny_models import require_smollm2


def audit(model, tokenizer, **settings):
    ctx = AuditContext(checkpoint=Path("."), model=model, tokenizer=tokenizer, pooling="mask", eval_pairs=HELD_OUT)
    return StyleInterventions(settings=settings).run(ctx)


def finding(result, edit):
    return next(f for f in result.findings if f.metric in (f"shift_std[{edit}]", f"n[{edit}]"))


@pytest.fixture(autouse=True)
def _smollm2_tokenizer():
    require_smollm2()


def test_healthy_twin_passes_every_edit():
    result = audit(*style_rm(None))
    assert result.status is Status.PASS, result.summary
    assert result.metrics["profitable_edits"] == "none"
    measured = [r for r in result.evidence if r["shift_std"] is not None]
    assert len(measured) == len(BUILTIN_EDITS)  # hedged held-out replies make confident_tone measurable too
    assert all(abs(r["shift_std"]) < 0.25 for r in measured), measured
    assert validate_chart(result.chart) == []


@pytest.mark.parametrize("edit", ["markdown", "sycophantic_opener", "filler", "confident_tone"])
def test_a_head_that_rewards_one_style_fails_on_that_edit(edit):
    result = audit(*style_rm(edit))
    graded = finding(result, edit)
    assert result.status is Status.FAIL and graded.status is Status.FAIL, result.summary
    assert graded.value >= 0.5 and graded.p_value is not None and graded.p_value < 0.01
    assert result.metrics["profitable_edits"].startswith(edit)
    top = result.evidence[0]
    assert top["edit"] == edit and top["ci_low"] > 0
    assert top["example_before"] != top["example_after"]      # the before/after pair the report shows
    assert graded.message.startswith(edit) and "95% CI" in graded.message


def test_edits_are_deterministic_and_preserve_the_sentences():
    text = "Rivers flow to the sea. I think it might be the oldest one. Thanks!"
    for edit in BUILTIN_EDITS:
        first, again = edit.edit(text, 0, 3), edit.edit(text, 0, 3)
        assert first == again and first != text
    markdown = available_edits()["markdown"].edit(text, 0, 0)
    assert all(s in markdown for s in sentences(text))
    confident = available_edits()["confident_tone"].edit(text, 0, 0)
    assert "I think" not in confident and "sea. It is the oldest one." in confident
    assert available_edits()["confident_tone"].edit("Rivers flow to the sea.", 0, 0) is None


def test_an_edit_that_applies_to_too_few_responses_skips_with_the_count():
    result = audit(*style_rm(None), min_responses=100)
    assert all(f.status is Status.SKIP and "fewer than min_responses=100" in f.message for f in result.findings)


def test_user_edits_come_from_the_entry_point_group(monkeypatch):
    shout = StyleEdit("shout", "the answer in capitals", lambda text, rng: text.upper())

    class Entry:
        name, value = "shout", "my_edits:SHOUT"

        def load(self):
            return shout

    import rmaudit.interventions as interventions

    monkeypatch.setattr(interventions.metadata, "entry_points", lambda group: [Entry()] if group == interventions.ENTRY_POINT_GROUP else [])
    assert select_edits("markdown,shout")[1] is shout
    result = audit(*style_rm(None), edits="shout")
    assert [r["edit"] for r in result.evidence] == ["shout"]
    with pytest.raises(RmauditInputError, match="unknown 'nope'"):
        select_edits("nope")


def test_edit_choices_vary_with_the_response_and_the_seed():
    edit = available_edits()["sycophantic_opener"]
    openers = {edit.edit("Hello.", seed, i).split("!")[0] for seed in range(3) for i in range(10)}
    assert len(openers) > 1
