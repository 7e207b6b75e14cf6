"""Save reward-model checkpoints that plain transformers and TRL load.

The folder holds safetensors weights, a config with ``num_labels=1`` and ``pad_token_id``,
the tokenizer with its chat template, and ``rmaudit.json``. It is written to a temporary
sibling folder and renamed into place, so an interrupted save never destroys the previous
checkpoint at that path.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from rmaudit.atomic import replace_dir
from rmaudit.modeling.manifest import Manifest, write_manifest


def prepare_config_for_saving(model: nn.Module, tokenizer: Any) -> None:
    """Make the config self-describing for ``AutoModelForSequenceClassification``."""
    config = model.config
    config.num_labels = 1
    config.problem_type = "regression"
    config.pad_token_id = tokenizer.pad_token_id
    if getattr(config, "quantization_config", None) is not None:
        # Dequantised GGUF weights are plain floats now; a stale quantization config
        # would make transformers refuse to train or re-quantise on load.
        del config.quantization_config


def save_checkpoint(model: nn.Module, tokenizer: Any, out_dir: str | Path, manifest: Manifest | dict[str, Any]) -> Path:
    """Atomically write model, tokenizer and manifest to ``out_dir``; return the folder."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    prepare_config_for_saving(model, tokenizer)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_manifest(tmp, manifest)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir

