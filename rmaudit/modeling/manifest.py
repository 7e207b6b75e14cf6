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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rmaudit.atomic import atomic_write_text

MANIFEST_NAME = "rmaudit.json"
MANIFEST_VERSION = 2  # 2: typed; each fact once (chat template only under tokenizer, seed under hyperparameters)

# Beside rmaudit itself, whose version is the code's own (an editable install's metadata keeps
# the version it was installed at).
_TRACKED_PACKAGES = ("torch", "transformers", "accelerate", "safetensors", "tokenizers", "gguf", "trl")


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
    from rmaudit._version import __version__

    versions: dict[str, str | None] = {"rmaudit": __version__}
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


@dataclass
class DataFile:
    """One data file a run read: where it was and what it held (sha256)."""

    path: str
    sha256: str | None = None
    builtin: bool = False


@dataclass
class Manifest:
    """``rmaudit.json``: what an audit needs to reproduce a run, read and validated here only.

    The trainer writes each fact once; the properties below are the only derived views.
    Keys this version does not know (a newer rmaudit, a test's marker) are kept in ``extra``
    and written back unchanged.
    """

    manifest_version: int = MANIFEST_VERSION
    trainer: str | None = None
    pooling: str | None = None  # "mask": read at the last mask position; "native": the model's own forward (encoders)
    base_model: dict[str, Any] = field(default_factory=dict)
    data: dict[str, DataFile] = field(default_factory=dict)   # "train", and "eval" for a separate file
    split: dict[str, Any] = field(default_factory=dict)       # method, eval_fraction, counts, prompt_hashes_file
    tokenizer: dict[str, Any] = field(default_factory=dict)   # tokenizer_facts(), chat template included
    max_length: int | None = None
    truncation: dict[str, Any] = field(default_factory=dict)
    head: dict[str, Any] = field(default_factory=dict)        # init, bias, at_init (with its bias), now
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # the TrainConfig, seed and adapter included
    run: dict[str, Any] = field(default_factory=dict)         # world size, steps, tokens, complete, dtype
    packages: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def chat_template(self) -> str | None:
        recorded = self.tokenizer.get("chat_template")
        text = recorded.get("text") if isinstance(recorded, dict) else recorded
        return text if isinstance(text, str) and text else None

    @property
    def head_initial_bias(self) -> tuple[bool, float | None]:
        """(recorded, bias at init); recorded is False when the manifest says nothing about the head.
        The trainer records it once, in ``head.at_init.bias``; ``head.initial_bias`` is read too."""
        at_init = self.head.get("at_init")
        if isinstance(at_init, dict) and "bias" in at_init:
            return True, at_init["bias"]
        if "initial_bias" in self.head:
            return True, self.head["initial_bias"]
        return False, None

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out["data"] = {side: asdict(record) for side, record in self.data.items()}
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, raw: Any, source: str | os.PathLike = MANIFEST_NAME) -> "Manifest":
        """Validate ``raw``; a wrong type is a one-line input error naming the file and the field."""
        from rmaudit.errors import input_error

        if not isinstance(raw, dict):
            raise input_error(source, None, None, "expected a JSON object")
        known = {f.name: f for f in fields(cls) if f.name != "extra"}
        values: dict[str, Any] = {"extra": {k: v for k, v in raw.items() if k not in known}}
        for name, spec in _FIELD_TYPES.items():
            if name in raw and raw[name] is not None and not isinstance(raw[name], spec):
                raise input_error(source, None, name, f"expected {_type_name(spec)}, got {type(raw[name]).__name__}")
        for name in known:
            if name in raw and raw[name] is not None:
                values[name] = raw[name]
        if "max_length" in values and (isinstance(values["max_length"], bool) or values["max_length"] < 1):
            raise input_error(source, None, "max_length", f"expected a positive integer, got {values['max_length']!r}")
        _upgrade_v1(raw, values)
        values["data"] = {side: _data_file(record, source, side) for side, record in (values.get("data") or {}).items()}
        return cls(**values)


def _upgrade_v1(raw: dict[str, Any], values: dict[str, Any]) -> None:
    """Version-1 manifests stated the chat template at top level and the initial bias under ``at_init``."""
    if raw.get("manifest_version", 1) >= 2:
        return
    tokenizer = values.setdefault("tokenizer", {})
    if "chat_template" in raw and not tokenizer.get("chat_template"):
        tokenizer["chat_template"] = raw["chat_template"]


_FIELD_TYPES: dict[str, Any] = {
    "manifest_version": int, "trainer": str, "pooling": str, "base_model": dict, "data": dict, "split": dict,
    "tokenizer": dict, "max_length": int, "truncation": dict, "head": dict, "hyperparameters": dict, "run": dict,
    "packages": dict, "metrics": dict,
}


def _type_name(spec: Any) -> str:
    return {int: "an integer", str: "a string", dict: "an object"}.get(spec, str(spec))


def _data_file(record: Any, source: str | os.PathLike, side: str) -> DataFile:
    from rmaudit.errors import input_error

    if not isinstance(record, dict) or not isinstance(record.get("path"), str):
        raise input_error(source, None, f"data.{side}", "expected an object with a 'path' string")
    return DataFile(record["path"], record.get("sha256"), bool(record.get("builtin", False)))


def write_manifest(checkpoint_dir: Path, manifest: Manifest | dict[str, Any]) -> Path:
    path = Path(checkpoint_dir) / MANIFEST_NAME
    data = manifest.to_dict() if isinstance(manifest, Manifest) else {"manifest_version": MANIFEST_VERSION, **manifest}
    write_json_atomic(path, data)
    return path


def read_manifest(checkpoint_dir: str | os.PathLike) -> Manifest | None:
    """The checkpoint's manifest, or None for checkpoints rmaudit did not write."""
    path = Path(checkpoint_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    from rmaudit.errors import input_error

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise input_error(path, None, None, f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise input_error(path, None, None, "not UTF-8 text") from None
    return Manifest.from_dict(raw, path)
