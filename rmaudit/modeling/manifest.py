"""The ``rmaudit.json`` manifest written next to every checkpoint rmaudit saves.

It lets an audit reproduce the run: base model and its hash, data files with sha256, the
split, chat template text and hash, tokenizer facts, hyperparameters, seed, versions,
final metrics. The trainer fills it; probes read it for defaults.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

from rmaudit.atomic import atomic_write_text

MANIFEST_NAME = "rmaudit.json"
MANIFEST_VERSION = 1

_TRACKED_PACKAGES = ("rmaudit", "torch", "transformers", "accelerate", "safetensors", "tokenizers", "gguf", "trl")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed (model files are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def package_versions() -> dict[str, str | None]:
    """Versions of the packages that decide numerics, for reproducing a run."""
    versions: dict[str, str | None] = {}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def tokenizer_facts(tokenizer: Any) -> dict[str, Any]:
    """Everything about the tokenizer that changes which position the reward is read at."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates: keep the default one
        template = template.get("default")
    return {
        "class": type(tokenizer).__name__,
        "padding_side": tokenizer.padding_side,
        "truncation_side": getattr(tokenizer, "truncation_side", None),
        "pad_token": tokenizer.pad_token,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token": tokenizer.eos_token,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token": tokenizer.bos_token,
        "bos_token_id": tokenizer.bos_token_id,
        "vocab_size": len(tokenizer),
        "chat_template": {"text": template, "sha256": sha256_text(template) if template else None},
    }


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON next to its destination, then rename: a crash never leaves half a file."""
    atomic_write_text(Path(path), json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_manifest(checkpoint_dir: Path, manifest: dict[str, Any]) -> Path:
    path = Path(checkpoint_dir) / MANIFEST_NAME
    write_json_atomic(path, {"manifest_version": MANIFEST_VERSION, **manifest})
    return path


def read_manifest(checkpoint_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The checkpoint's manifest, or None for checkpoints rmaudit did not write."""
    path = Path(checkpoint_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    from rmaudit.errors import input_error

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise input_error(path, None, None, f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
