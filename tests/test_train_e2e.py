"""End to end: `rmaudit train` on the real SmolLM2-135M GGUF and real hh-rlhf rows; plain transformers reloads it."""

from __future__ import annotations

import json

import pytest
import torch

from rmaudit.cli import main
from rmaudit.modeling.builtin_models import SMOLLM2_GGUF
from rmaudit.modeling.pooling import pooled_rewards
from tiny_models import require_shared_hh, require_smollm2


@pytest.mark.slow
def test_train_smollm2_on_real_hh_rows_and_reload_with_plain_transformers(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base, hh = require_smollm2(), require_shared_hh()
    out = tmp_path / "hh"
    code = main(["train", "--base", str(base), "--gguf-file", SMOLLM2_GGUF, "--data", str(hh), "--limit", "12",
                 "--eval-fraction", "0.25", "--out", str(out), "--max-steps", "2", "--batch-size", "2",
                 "--max-length", "160", "--truncation", "truncate", "--dtype", "bfloat16", "--lr", "2e-5",
                 "--log-every", "1", "--no-progress"])
    assert code == 0
    manifest = json.loads((out / "rmaudit.json").read_text())
    assert manifest["base_model"]["gguf_file"] == SMOLLM2_GGUF and manifest["base_model"]["weight_files"]
    assert manifest["run"]["steps"] == 2 and manifest["metrics"]["eval"]["pairs"] > 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.num_labels == 1 and model.config.pad_token_id == tokenizer.pad_token_id
    text = tokenizer.apply_chat_template([{"role": "user", "content": "How do I bake bread?"},
                                          {"role": "assistant", "content": "Mix flour, water, yeast; bake."}],
                                         tokenize=False)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        native = model(**ids).logits.squeeze()
        mask = pooled_rewards(model, ids["input_ids"], ids["attention_mask"]).squeeze()
    assert torch.isfinite(native) and native.item() == pytest.approx(mask.item(), abs=1e-4)
