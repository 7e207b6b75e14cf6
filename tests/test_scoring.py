"""The scorer and pooling: rewards must not depend on padding, batching or BOS handling."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from rmaudit.modeling.pooling import last_token_index, position_ids_from_mask
from rmaudit.scoring import pad_batch, render, score, score_texts, tokenize_rendered
from tiny_models import REPO_ROOT, llama3_tokenizer_dir, tiny_rm, tiny_tokenizer


def conversation(prompt: str, response: str) -> list[dict]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


CONVERSATIONS = [
    conversation("What is 2 + 2?", "4."),
    conversation("Name a colour.", "Blue is a colour that many people like a great deal."),
    conversation("Say hi.", "Hi! " * 12),
    conversation("Summarise the plot of a long novel in one line, please.", "A family feuds, reconciles, and moves to the coast."),
]


def test_last_token_index_right_and_left_padding():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert last_token_index(right).tolist() == [2, 4, 0]
    assert last_token_index(left).tolist() == [4, 4, 4]
    # The classic bug reads index -1; with right padding that is a pad position.
    assert last_token_index(right).tolist() != [4, 4, 4]


def test_position_ids_start_at_first_real_token_under_left_padding():
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert position_ids_from_mask(left).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


def test_pad_batch_places_tokens_on_the_requested_side():
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


@pytest.mark.parametrize("pooling", ["mask", "native"])
def test_reward_is_batch_and_padding_side_invariant(pooling):
    model, tokenizer = tiny_rm()
    texts = [render(tokenizer, c) for c in CONVERSATIONS]
    alone = np.array([score_texts(model, tokenizer, [t], pooling=pooling).rewards[0] for t in texts])
    right = score_texts(model, tokenizer, texts, pooling=pooling, padding_side="right", batch_size=8).rewards
    left = score_texts(model, tokenizer, texts, pooling=pooling, padding_side="left", batch_size=8).rewards
    assert np.ptp(alone) > 1e-3, "rewards of different texts should differ for a random model"
    np.testing.assert_allclose(right, alone, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(left, alone, rtol=1e-4, atol=1e-6)


def test_scores_come_back_in_input_order_despite_length_sorting():
    model, tokenizer = tiny_rm()
    forward = score(model, tokenizer, CONVERSATIONS).rewards
    backward = score(model, tokenizer, CONVERSATIONS[::-1]).rewards
    np.testing.assert_allclose(forward, backward[::-1], rtol=1e-5, atol=1e-7)


def test_pad_equal_to_eos_still_reads_the_end_of_turn_token():
    """SmolLM2: pad == eos == <|im_end|>. A text ending in <|im_end|> must be pooled AT that
    token; a pad-id-based rule would skip it and read the token before."""
    model, tokenizer = tiny_rm()
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    text = render(tokenizer, CONVERSATIONS[0]).rstrip("\n")
    assert text.endswith(tokenizer.eos_token)
    ids, _ = tokenize_rendered(tokenizer, [text])
    assert ids[0][-1] == tokenizer.pad_token_id
    alone = score_texts(model, tokenizer, [text], pooling="mask").rewards[0]
    longer = render(tokenizer, CONVERSATIONS[2])
    padded = score_texts(model, tokenizer, [text, longer], pooling="mask", batch_size=2).rewards[0]
    without_eos = score_texts(model, tokenizer, [text[: -len(tokenizer.eos_token)]], pooling="mask").rewards[0]
    assert padded == pytest.approx(alone, rel=1e-4)
    assert abs(alone - without_eos) > 1e-4, "the end-of-turn token must change the reward"


def test_max_length_truncates_from_the_left_keeping_the_end():
    tokenizer = tiny_tokenizer()
    text = render(tokenizer, CONVERSATIONS[2])
    full, _ = tokenize_rendered(tokenizer, [text])
    cut, n = tokenize_rendered(tokenizer, [text], max_length=10)
    assert n == 1 and cut[0] == full[0][-10:]


def test_no_double_bos_when_the_template_already_emits_it():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(llama3_tokenizer_dir())
    template = (REPO_ROOT / "probes" / "templates" / "llama3.jinja")
    if not template.is_file():
        pytest.skip("probes/templates/llama3.jinja not written yet")
    text = render(tokenizer, CONVERSATIONS[0], chat_template=template.read_text())
    assert text.startswith(tokenizer.bos_token)
    ids, _ = tokenize_rendered(tokenizer, [text])
    assert ids[0].count(tokenizer.bos_token_id) == 1
    # A text without a template-emitted BOS gets exactly one from the tokenizer.
    plain, _ = tokenize_rendered(tokenizer, ["User: hi"])
    assert plain[0][0] == tokenizer.bos_token_id and plain[0].count(tokenizer.bos_token_id) == 1


def test_bfloat16_scores_track_float32(caplog):
    model, tokenizer = tiny_rm()
    texts = [render(tokenizer, c) for c in CONVERSATIONS]
    fp32 = score_texts(model, tokenizer, texts).rewards
    bf16 = score_texts(model, tokenizer, texts, dtype=torch.bfloat16).rewards
    assert np.abs(bf16 - fp32).max() < 0.05 * max(np.abs(fp32).max(), 1e-3) + 0.02
    assert np.corrcoef(bf16, fp32)[0, 1] > 0.95


@pytest.mark.parametrize("cast", ["autocast", "bf16 weights"])
def test_the_head_is_computed_in_float32_under_bfloat16(cast):
    """A bf16 reward has 8 significant bits (rewards near 100 on a grid of 0.5): close pairs
    would tie. The body may run in bf16; the head's product must not."""
    from rmaudit.modeling.pooling import pooled_hidden, pooled_rewards

    model, tokenizer = tiny_rm()
    with torch.no_grad():
        model.score.weight.mul_(1000.0)
    if cast == "bf16 weights":
        model = model.to(torch.bfloat16)
    input_ids, mask = pad_batch(tokenize_rendered(tokenizer, [render(tokenizer, c) for c in CONVERSATIONS])[0],
                                tokenizer.pad_token_id)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        rewards = pooled_rewards(model, input_ids, mask)
        hidden = pooled_hidden(model, input_ids, mask)
    assert rewards.dtype == torch.float32
    expected = hidden.double() @ model.score.weight.double()[0]
    assert torch.allclose(rewards.double(), expected, rtol=1e-5, atol=1e-4)
    assert (rewards.to(torch.bfloat16).float() != rewards).any(), "rewards rounded to bfloat16"


def test_native_pooling_without_config_pad_id_falls_back_to_mask(caplog):
    model, tokenizer = tiny_rm()
    model.config.pad_token_id = None
    with caplog.at_level(logging.WARNING):
        result = score(model, tokenizer, CONVERSATIONS, pooling="native")
    assert result.pooling == "mask"
    assert "pad_token_id" in caplog.text


def test_streamed_scoring_matches_scoring_each_text_alone(monkeypatch):
    """Chunks smaller than the input (the 100k-pair path) give the same rewards, in input
    order, with lengths and truncation counts summed over the chunks."""
    import rmaudit.scoring as scoring

    model, tokenizer = tiny_rm()
    texts = [render(tokenizer, c) for c in CONVERSATIONS] * 3
    texts = [t + " x" * i for i, t in enumerate(texts)]  # all distinct, lengths interleaved
    alone = [score_texts(model, tokenizer, [t], max_length=40) for t in texts]
    monkeypatch.setattr(scoring, "CHUNK_TEXTS", 5)
    ticks: list[int] = []
    streamed = score_texts(model, tokenizer, texts, batch_size=3, max_length=40, progress=ticks.append)
    np.testing.assert_allclose(streamed.rewards, [r.rewards[0] for r in alone], atol=1e-5)
    assert streamed.n_tokens.tolist() == [int(r.n_tokens[0]) for r in alone]
    assert streamed.n_truncated == sum(r.n_truncated for r in alone) > 0
    assert sum(ticks) == len(texts)


def test_batches_respect_the_row_cap_and_the_padded_token_budget():
    from rmaudit.scoring import length_sorted_batches

    lengths = [5, 300, 40, 40, 1000, 7, 7, 7, 120, 2000]
    batches = list(length_sorted_batches(lengths, batch_size=4, batch_tokens=400))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        width = max(lengths[i] for i in batch)
        assert len(batch) <= 4
        assert len(batch) == 1 or len(batch) * width <= 400   # an over-budget text runs alone
    assert [lengths[b[0]] for b in batches] == sorted((lengths[b[0]] for b in batches), reverse=True)


def test_a_padding_cap_splits_a_batch_only_where_the_pads_cost_more_than_another_call():
    from rmaudit.scoring import CALL_COST_TOKENS, length_sorted_batches

    few_pads = [100, 100 - CALL_COST_TOKENS]  # 48 pads: over 10% of the batch, under a call's cost
    assert list(length_sorted_batches(few_pads, batch_size=8, max_padding=0.1)) == [[0, 1]]
    many_pads = [1000, 100 + CALL_COST_TOKENS, 100, 1000]  # the long pair pads by nothing, the short one by 48
    assert list(length_sorted_batches(many_pads, batch_size=8, max_padding=0.1)) == [[0, 3], [1, 2]]
    assert len(list(length_sorted_batches(many_pads, batch_size=8))) == 1  # no cap (a GPU): one batch


def test_context_cache_scores_each_text_once_across_chunks(monkeypatch):
    import rmaudit.scoring as scoring
    from rmaudit.data.pairs import PreferencePair
    from rmaudit.probes.context import AuditContext

    model, tokenizer = tiny_rm()
    calls: list[int] = []
    real = scoring.score_texts
    monkeypatch.setattr(scoring, "score_texts", lambda m, t, texts, **k: calls.append(len(texts)) or real(m, t, texts, **k))
    monkeypatch.setattr(scoring, "CHUNK_TEXTS", 4)
    pairs = [PreferencePair([{"role": "user", "content": f"q{i % 3}"}], f"yes {i}", f"no {i % 2}") for i in range(9)]
    ctx = AuditContext(checkpoint=REPO_ROOT, model=model, tokenizer=tokenizer, pooling="mask")
    chosen, rejected = ctx.pair_rewards(pairs)
    distinct = {tuple(map(str, p.chosen_messages())) for p in pairs} | {tuple(map(str, p.rejected_messages())) for p in pairs}
    assert sum(calls) == len(distinct)
    again, _ = ctx.pair_rewards(pairs[::-1])
    assert sum(calls) == len(distinct)                      # all cached
    np.testing.assert_allclose(again, chosen[::-1])
    np.testing.assert_allclose(ctx.score([p.rejected_messages() for p in pairs]), rejected)


def test_pair_rewards_reuse_a_pair_seen_before_and_rescore_a_pair_edited_in_place(monkeypatch):
    from rmaudit.data.pairs import PreferencePair
    from rmaudit.probes.context import AuditContext

    model, tokenizer = tiny_rm()
    pairs = [PreferencePair([{"role": "user", "content": f"q{i}"}], f"yes {i}", f"no {i}") for i in range(6)]
    ctx = AuditContext(checkpoint=REPO_ROOT, model=model, tokenizer=tokenizer, pooling="mask")
    chosen, rejected = ctx.pair_rewards(pairs)
    renders: list[int] = []
    real_render = AuditContext.render
    monkeypatch.setattr(AuditContext, "render", lambda self, *a, **k: renders.append(1) or real_render(self, *a, **k))
    again = ctx.pair_rewards(pairs[::-1])
    assert not renders                                      # no conversation rendered again
    np.testing.assert_array_equal(again[0], chosen[::-1])
    pairs[2].chosen = "a different answer"                  # edited in place: the memo must not answer
    edited, _ = ctx.pair_rewards(pairs)
    assert len(renders) == 2                                # that pair's two texts, no other
    fresh = AuditContext(checkpoint=REPO_ROOT, model=model, tokenizer=tokenizer, pooling="mask")
    np.testing.assert_allclose(edited, fresh.pair_rewards(pairs)[0], atol=1e-6)  # batch makeup: float32 noise
    assert edited[2] != chosen[2]


def test_usable_cores_honours_a_cgroup_cpu_quota(tmp_path, monkeypatch):
    import os

    import rmaudit.devices as devices

    quota = tmp_path / "cpu.max"
    monkeypatch.setattr(devices, "CGROUP_CPU_MAX", quota)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    quota.write_text("max 100000\n")
    assert devices.usable_cores() == 64
    quota.write_text("200000 100000\n")
    assert devices.usable_cores() == 2
    quota.write_text("50000 100000\n")
    assert devices.usable_cores() == 1
