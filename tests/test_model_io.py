"""Model I/O: loading, head init, checkpoints that plain transformers reloads identically."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rmaudit.errors import RmauditInputError
from rmaudit.modeling.checkpoint import save_checkpoint
from rmaudit.modeling.head import init_head
from rmaudit.modeling.loading import load_reward_model
from rmaudit.modeling.manifest import read_manifest
from rmaudit.scoring import render, score
from tiny_models import make_tiny_rm, tiny_rm

CONVERSATIONS = [
    [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": "answer " * (i + 1)}]
    for i in range(6)
]


def test_fresh_head_is_bias_free_and_scaled_one_over_d():
    model, _ = tiny_rm(hidden=256)
    stats = init_head(model, init="normal", seed=3)
    assert model.score.bias is None and stats["bias"] is None
    assert stats["weight_std"] == pytest.approx(1 / math.sqrt(256), rel=0.15)
    init_head(model, init="zeros")
    assert torch.count_nonzero(model.score.weight) == 0


def test_checkpoint_reloads_in_plain_transformers_with_identical_rewards(tmp_path):
    model, tokenizer = tiny_rm(seed=7)
    model.rmaudit_pooling = "mask"
    out = save_checkpoint(model, tokenizer, tmp_path / "ckpt", {"producer": "test"})
    ours = score(model, tokenizer, CONVERSATIONS, pooling="mask").rewards

    plain = AutoModelForSequenceClassification.from_pretrained(out).eval()
    plain_tok = AutoTokenizer.from_pretrained(out)
    assert plain.config.num_labels == 1 and plain.config.pad_token_id == plain_tok.pad_token_id
    assert plain_tok.chat_template == tokenizer.chat_template
    texts = [plain_tok.apply_chat_template(c, tokenize=False) for c in CONVERSATIONS]
    enc = plain_tok(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        theirs = plain(**enc).logits[:, 0].double().numpy()
    np.testing.assert_allclose(theirs, ours, rtol=1e-4)
    assert (out / "rmaudit.json").is_file() and read_manifest(out).extra["producer"] == "test"
    with safe_open(out / "model.safetensors", "pt") as weights:
        assert "score.weight" in weights.keys()


def test_save_replaces_an_existing_checkpoint_atomically(tmp_path):
    model, tokenizer = tiny_rm()
    out = tmp_path / "ckpt"
    save_checkpoint(model, tokenizer, out, {"producer": "first"})
    save_checkpoint(model, tokenizer, out, {"producer": "second"})
    assert read_manifest(out).extra["producer"] == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"], "no temp or backup folders left behind"


def test_foreign_checkpoint_uses_native_pooling_and_keeps_its_config(tmp_path):
    ckpt = make_tiny_rm(tmp_path / "foreign", pad_token_id=5)
    loaded = load_reward_model(ckpt)
    assert loaded.manifest is None and loaded.pooling == "native"
    assert loaded.model.config.pad_token_id == 5, "a foreign config must not be 'fixed' on load"
    result = score(loaded.model, loaded.tokenizer, CONVERSATIONS[:2])
    assert result.pooling == "native"


def test_rmaudit_checkpoint_uses_mask_pooling(tmp_path):
    ckpt = make_tiny_rm(tmp_path / "ours", manifest=True)
    loaded = load_reward_model(ckpt, dtype="bfloat16")
    assert loaded.pooling == "mask" and loaded.manifest is not None
    assert next(loaded.model.parameters()).dtype == torch.bfloat16


def test_tokenizer_without_pad_token_uses_eos_explicitly(tmp_path, caplog):
    model, tokenizer = tiny_rm()
    ckpt = make_tiny_rm(tmp_path / "nopad", model=model, tokenizer=tokenizer)
    config = json.loads((ckpt / "tokenizer_config.json").read_text())
    config.pop("pad_token", None)
    (ckpt / "tokenizer_config.json").write_text(json.dumps(config))
    reloaded = AutoTokenizer.from_pretrained(ckpt)
    if reloaded.pad_token is not None:
        pytest.skip("this tokenizer format keeps a pad token elsewhere")
    with caplog.at_level("WARNING"):
        loaded = load_reward_model(ckpt)
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token
    assert any("no pad token" in note for note in loaded.notes)
    assert "no pad token" in caplog.text


def test_missing_local_folder_is_an_input_error_not_a_hub_download(tmp_path):
    with pytest.raises(RmauditInputError, match="--allow-hub"):
        load_reward_model(tmp_path / "does-not-exist")


def test_render_has_no_generation_prompt():
    _, tokenizer = tiny_rm()
    text = render(tokenizer, CONVERSATIONS[0])
    assert text.rstrip().endswith("<|im_end|>") and not text.rstrip().endswith("assistant")
