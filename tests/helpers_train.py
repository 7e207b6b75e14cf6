"""Shared pieces of the `rmaudit train` tests: a tiny real base model folder, small real data, runners.

Run as a script it is the CLI (``python tests/helpers_train.py train ...``), which is what
``accelerate launch`` starts in the two-process test.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scratch import scratch_dir  # noqa: E402
from tiny_models import tiny_config, tiny_tokenizer  # noqa: E402


@functools.cache
def tiny_base_dir(hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A random tiny Llama *causal LM* saved with SmolLM2's real tokenizer: what `--base` points at."""
    from transformers import LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    config = tiny_config(tokenizer, hidden=hidden, layers=layers)
    config.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out = scratch_dir("tiny-base-")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@functools.cache
def tiny_encoder_base_dir(family: str = "bert", positions: int = 128) -> Path:
    """A random tiny BERT or RoBERTa *masked LM* (no reward head) with SmolLM2's tokenizer, as
    a `--base` folder; ``positions`` learned positions it can read. Initialised at std 0.3,
    not BERT's 0.02: at 0.02 a tiny random encoder's first position barely depends on the
    text (reward std 2e-4 after the head), so a few steps would train nothing."""
    from transformers import BertConfig, BertForMaskedLM, RobertaConfig, RobertaForMaskedLM

    tokenizer = tiny_tokenizer()
    if family == "roberta":  # RoBERTa's own forward takes every pad id for a pad: one not in the texts
        tokenizer.pad_token = "<|endoftext|>"
    config_class, model_class = {"bert": (BertConfig, BertForMaskedLM), "roberta": (RobertaConfig, RobertaForMaskedLM)}[family]
    offset = tokenizer.pad_token_id + 1 if family == "roberta" else 0  # RoBERTa numbers positions after its pad id
    config = config_class(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=64, max_position_embeddings=positions + offset,
                          pad_token_id=tokenizer.pad_token_id, initializer_range=0.3)
    torch.manual_seed(0)
    out = scratch_dir(f"tiny-{family}-base-")
    model_class(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def write_pairs(path: Path, pairs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    return path


def small_pairs(n: int = 16) -> list[dict]:
    """Distinct short explicit-shape pairs (arithmetic right vs wrong) with varied lengths."""
    rows = []
    for i in range(n):
        a, b = 3 + i, 7 + 2 * i
        pad = " Let me think." * (i % 4)
        rows.append({"prompt": f"What is {a} + {b}?{pad}", "chosen": f"{a} + {b} = {a + b}.",
                     "rejected": f"{a} + {b} = {a + b + 1 + i % 3}, I believe, more or less."})
    return rows


def read_metrics(run_dir: Path, kind: str = "train") -> list[dict]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def load_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / "model.safetensors"))


if __name__ == "__main__":
    from rmaudit.cli import main

    sys.exit(main(sys.argv[1:]))
