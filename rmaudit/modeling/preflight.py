"""Checks on a checkpoint folder before anything in it is loaded, unpickled or executed.

A CI gate runs on other people's checkpoints, so three things are refused up front, each
with a one-line error (exit 2) that names the file, the field and the flag that allows it:

* pickle weights (``pytorch_model.bin``, ``*.pt``...): unpickling runs arbitrary code. Only
  safetensors load, unless ``--allow-pickle``; even then ``torch.load(weights_only=True)``
  (transformers' loader) refuses anything but tensors;
* custom code (``auto_map`` in ``config.json``): only with ``--trust-remote-code``;
* for ``rmaudit check``: a folder that is not a reward model (no ``*ForSequenceClassification``
  with ``num_labels=1``, nor an OpenRLHF ``RewardModel`` with its head), because auditing it
  would audit a random head, unless ``--allow-fresh-head`` says that is what the user wants.

Safetensors headers are read (not the tensors) so a truncated file is named here, not in a
traceback from deep inside transformers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rmaudit.errors import RmauditInputError, input_error

PICKLE_PATTERNS = ("pytorch_model*.bin", "pytorch_model.bin.index.json", "*.pt", "*.pth", "*.ckpt", "*.pkl")


@dataclass
class CheckpointFacts:
    """What the folder holds, read without loading a tensor."""

    config: dict
    weights: str  # "safetensors", "pickle" or "gguf"
    files: list[Path] = field(default_factory=list)
    tensor_names: frozenset[str] = frozenset()  # from the safetensors headers (empty for other formats)

    @property
    def is_sequence_classifier(self) -> bool:
        return is_sequence_classifier(self.config.get("architectures"))

    @property
    def is_reward_model(self) -> bool:
        return (self.is_sequence_classifier and num_labels(self.config) == 1) or self.openrlhf_head is not None

    @property
    def openrlhf_head(self) -> str | None:
        """The weight key of the reward head when OpenRLHF's RM trainer saved the folder, else None."""
        return openrlhf_head_key(self.config, self.tensor_names)


# OpenRLHF's reward model (openrlhf/models/model.py, _get_reward_model) is a *PreTrainedModel
# subclass named RewardModel: the base model under base_model_prefix and a bias-free
# Linear(hidden, 1) under value_head_prefix. save_pretrained records the class name as the
# architecture, and openrlhf/cli/train_rm.py writes value_head_prefix into the config (before
# it did, the default was "value_head"; it is "score" now).
OPENRLHF_ARCHITECTURE = "RewardModel"
OPENRLHF_HEAD_PREFIXES = ("score", "value_head")


def openrlhf_head_key(config: dict, tensor_names: frozenset[str]) -> str | None:
    """``{prefix}.weight`` of an OpenRLHF RewardModel checkpoint whose weights hold it, else None."""
    if OPENRLHF_ARCHITECTURE not in (config.get("architectures") or []):
        return None
    named = config.get("value_head_prefix")
    prefixes = (named,) if isinstance(named, str) else OPENRLHF_HEAD_PREFIXES
    return next((f"{p}.weight" for p in prefixes if f"{p}.weight" in tensor_names), None)


def is_sequence_classifier(architectures: list | None) -> bool:
    """The config names a ``*ForSequenceClassification`` class; with ``num_labels=1`` it is a reward model."""
    return any(str(a).endswith("ForSequenceClassification") for a in architectures or [])


def resolve_source(path_or_id: str | Path, gguf_file: str | None, allow_hub: bool) -> tuple[str, bool]:
    """(source, is_local). Local folders always win over hub ids of the same name."""
    path = Path(path_or_id)
    if path.is_dir():
        if gguf_file and not (path / gguf_file).is_file():
            raise input_error(path / gguf_file, None, None, "GGUF file not found in the model folder")
        return str(path), True
    if path.exists():
        raise input_error(path, None, None, "expected a model folder (config + weights), got a file")
    if not allow_hub:
        raise input_error(path, None, None, "no such local folder; pass --allow-hub to download it from the hub")
    return str(path_or_id), False


def num_labels(config: dict) -> int:
    """transformers' rule: ``num_labels`` when set, else the size of ``id2label``, else 2."""
    if isinstance(config.get("num_labels"), int):
        return int(config["num_labels"])
    return len(config["id2label"]) if isinstance(config.get("id2label"), dict) else 2


def inspect_checkpoint(folder: Path, *, gguf_file: str | None = None, allow_pickle: bool = False,
                       trust_remote_code: bool = False) -> CheckpointFacts:
    """Read the config and the weights' headers; raise a one-line input error on anything unsafe or broken."""
    folder = Path(folder)
    config = read_config(folder / "config.json") if (folder / "config.json").exists() or not gguf_file else {}
    if config.get("auto_map") and not trust_remote_code:
        raise input_error(folder / "config.json", None, "auto_map",
                          f"the checkpoint asks to run its own Python code ({', '.join(map(str, config['auto_map']))}); "
                          "rmaudit never runs it unless you pass --trust-remote-code")
    if gguf_file:
        return CheckpointFacts(config, "gguf", [folder / gguf_file])
    safetensors = safetensor_files(folder)
    if safetensors:
        names = frozenset(name for path in safetensors for name in safetensors_header_names(path))
        return CheckpointFacts(config, "safetensors", safetensors, names)
    pickles = sorted({p for pattern in PICKLE_PATTERNS for p in folder.glob(pattern)})
    if not pickles:
        raise input_error(folder, None, None, "no weight files (expected model.safetensors or a sharded index)")
    if not allow_pickle:
        raise input_error(pickles[0], None, None,
                          "weights are only in pickle format, which can run code when loaded; rmaudit loads "
                          "safetensors only. Convert them, or pass --allow-pickle to load them with "
                          "torch.load(weights_only=True)")
    return CheckpointFacts(config, "pickle", pickles)


def newest_trainer_checkpoint(folder: Path, holding: str) -> Path | None:
    """The ``checkpoint-<step>`` folder with the highest step that holds ``holding``, as a
    transformers Trainer (and TRL's) writes them under its output_dir; None without one."""
    def step(candidate: Path) -> int:
        tail = candidate.name.rpartition("-")[2]
        return int(tail) if tail.isdigit() else -1
    found = sorted((f.parent for f in folder.glob(f"checkpoint-*/{holding}")), key=step)
    return found[-1] if found else None


def read_config(path: Path) -> dict:
    if not path.is_file():
        if (path.parent / "adapter_config.json").is_file():
            # TRL's RewardTrainer with a peft_config saves only the adapter (and the score head
            # in its modules_to_save); the audit reads a whole model, as PPO will.
            raise input_error(path.parent, None, None, "a PEFT adapter, not a whole model (adapter_config.json, no "
                              "config.json): merge it into its base (peft's merge_and_unload, then save_pretrained) "
                              "and audit the merged folder")
        newest = newest_trainer_checkpoint(path.parent, "config.json")
        if newest is not None:  # a transformers/TRL Trainer output_dir: it saves checkpoint-<step>/ folders
            raise input_error(path.parent, None, None, f"no config.json: a trainer's output folder? Its newest "
                              f"checkpoint is {newest.name}/: audit that folder ({newest})")
        raise input_error(path.parent, None, None, "no config.json: not a transformers checkpoint folder")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise input_error(path, None, None, f"not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise input_error(path, None, None, f"expected a JSON object, got {type(config).__name__}")
    if not isinstance(config.get("model_type"), str):
        raise input_error(path, None, "model_type", "missing: not a transformers model config")
    return config


def safetensor_files(folder: Path) -> list[Path]:
    """The single file, or every shard the index names (each must exist)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise input_error(index, None, "weight_map", "expected a safetensors index with a weight_map") from None
        for shard in shards:
            if not (folder / shard).is_file():
                raise input_error(index, None, "weight_map", f"names shard {shard!r}, which is missing")
        return [folder / s for s in shards]
    return sorted(folder.glob("*.safetensors"))


def safetensors_header_names(path: Path) -> list[str]:
    """The tensor names a safetensors file's header lists (a header that cannot be read is an
    input error)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except (SafetensorError, OSError) as exc:
        raise input_error(path, None, None, f"unreadable safetensors file (truncated or corrupt?): {exc}") from None


def require_reward_model(facts: CheckpointFacts, folder: Path, allow_fresh_head: bool) -> None:
    """Refuse to audit a random head unless asked to: it would be graded as if it were trained."""
    if facts.is_reward_model or allow_fresh_head:
        return
    config_path = Path(folder) / "config.json"
    if facts.weights == "gguf":
        raise RmauditInputError(f"{folder}: a GGUF file holds a base model, not a reward model; auditing it "
                                "audits a random head (pass --allow-fresh-head to do that on purpose)")
    archs = ", ".join(map(str, facts.config.get("architectures") or [])) or facts.config.get("model_type")
    if facts.is_sequence_classifier:
        raise input_error(config_path, None, "num_labels",
                          f"{num_labels(facts.config)}: a reward model has num_labels=1 (one score per text)")
    raise input_error(config_path, None, "architectures",
                      f"{archs} is not a reward model (no trained score head; rmaudit would audit a random "
                      "one). Train one with `rmaudit train --base`, or pass --allow-fresh-head to audit a fresh head")
