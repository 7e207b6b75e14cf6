"""--chat-template: the format the RM was trained on replaces the tokenizer's for every reading
(a TRL RM trained on plain text reads prompt + response + eos, not the tokenizer's chat format)."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from helpers_audit import save_rm, topic_pairs, write_pairs_jsonl
from rmaudit.audit import AuditOptions
from rmaudit.errors import RmauditInputError
from rmaudit.inputs import build_context
from rmaudit.probes.chat_template import SAVED_TEMPLATE
from tiny_models import require_smollm2, tiny_rm

# TRL's RewardTrainer on non-conversational rows: prompt + chosen, eos appended (trl/trainer/reward_trainer.py).
PLAIN = "{% for m in messages %}{{ m['content'] }}{% endfor %}{{ eos_token }}"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    require_smollm2()
    model, tokenizer = tiny_rm(seed=3)
    return save_rm(model, tokenizer, tmp_path_factory.mktemp("override") / "rm")


def _last_token_reward(ctx, text: str) -> float:
    """The reward at the text's final token, read straight off the body and head."""
    ids = ctx.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = ctx.model.model(input_ids=ids).last_hidden_state[0, -1]
        return float(ctx.model.score(hidden.float())[0])


def test_every_reading_renders_the_trained_format(checkpoint, tmp_path):
    template = tmp_path / "plain.jinja"
    template.write_text(PLAIN, encoding="utf-8")
    data = write_pairs_jsonl(topic_pairs()[:6], tmp_path / "eval.jsonl")
    ctx = build_context(checkpoint, AuditOptions(data=data, chat_template=template, dtype="float32"))
    chosen, _ = ctx.pair_rewards(ctx.eval_pairs)
    expected = [_last_token_reward(ctx, "".join(m["content"] for m in p.chosen_messages()) + ctx.tokenizer.eos_token)
                for p in ctx.eval_pairs]
    np.testing.assert_allclose(chosen, expected, atol=1e-4)
    assert ctx.notes["chat_template_source"] == "--chat-template" and ctx.notes["checkpoint_template_differs"]
    assert "chat_template" in ctx.record["data"]  # `rmaudit verify --data` re-hashes the template file too

    default = build_context(checkpoint, AuditOptions(data=data, dtype="float32"))
    assert not np.allclose(default.pair_rewards(default.eval_pairs)[0], chosen, atol=1e-3)
    assert "chat_template_source" not in default.notes
    # chat_template's reference without a --policy: the template the saved tokenizer carries
    assert getattr(ctx.tokenizer, SAVED_TEMPLATE) == default.tokenizer.chat_template != PLAIN


@pytest.mark.parametrize("content, message", [("", "the file is empty"), (b"\xff\xfe", "UTF-8"),
                                              ("{{ eos_token }}\n{% for m in messages %}", "jinja syntax error at line 2")])
def test_an_unreadable_template_file_is_named_before_the_model_loads(checkpoint, tmp_path, monkeypatch,
                                                                     content, message):
    import rmaudit.inputs as inputs

    monkeypatch.setattr(inputs, "_load_checkpoint", lambda *a: pytest.fail("loaded a model before refusing"))
    path = tmp_path / "t.jinja"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(RmauditInputError, match=message) as err:
        build_context(checkpoint, AuditOptions(chat_template=path))
    assert str(path) in str(err.value) and "--chat-template" in str(err.value)


def test_a_missing_template_file_is_refused(checkpoint, tmp_path):
    with pytest.raises(RmauditInputError, match="--chat-template file not found"):
        build_context(checkpoint, AuditOptions(chat_template=tmp_path / "nope.jinja"))


def test_the_training_callback_reads_the_trained_format_and_leaves_the_trainers_tokenizer(checkpoint, tmp_path):
    from rmaudit.integrations import RmauditCallback
    from rmaudit.modeling.loading import load_reward_model

    template = tmp_path / "plain.jinja"
    template.write_text(PLAIN, encoding="utf-8")
    loaded = load_reward_model(checkpoint, dtype=torch.float32)
    tokenizer, own = loaded.tokenizer, loaded.tokenizer.chat_template
    pairs = topic_pairs()[:6]
    callback = RmauditCallback(eval_pairs=pairs, probes=["accuracy"], max_pairs=6, chat_template=template)
    result = callback.audit(loaded.model, tokenizer)
    assert tokenizer.chat_template == own  # the trainer's tokenizer keeps its template

    def native(text: str) -> float:  # the callback reads through the model's own forward, as TRL trains
        with torch.no_grad():
            return float(loaded.model(**tokenizer(text, add_special_tokens=False, return_tensors="pt")).logits[0, 0])

    plain = ["".join(m["content"] for m in messages) + tokenizer.eos_token
             for p in pairs for messages in (p.chosen_messages(), p.rejected_messages())]
    rewards = np.array([native(t) for t in plain])
    expected = float(np.mean(rewards[0::2] - rewards[1::2]))
    assert result.probe("accuracy").metrics["mean_margin"] == pytest.approx(expected, abs=1e-3)
    default = RmauditCallback(eval_pairs=pairs, probes=["accuracy"], max_pairs=6).audit(loaded.model, tokenizer)
    assert default.probe("accuracy").metrics["mean_margin"] != pytest.approx(expected, abs=1e-3)
