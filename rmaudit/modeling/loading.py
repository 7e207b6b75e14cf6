"""Load a reward model (or a base model to become one) from a folder, a GGUF file or the hub.

Three cases, one function:

* an existing reward checkpoint (``*ForSequenceClassification`` with ``num_labels=1``,
  rmaudit's, TRL's or anyone's): loaded as it is, config untouched, so probes see the
  checkpoint exactly as PPO will;
* a base/SFT causal LM (folder or ``--gguf-file``): wrapped as a sequence classifier with
  a fresh ``Linear(d, 1, bias=False)`` head (see :mod:`rmaudit.modeling.head`);
* a hub id: only when ``allow_hub`` is set; otherwise a clear error, because audits must
  not silently download.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as hf_logging

from rmaudit.errors import RmauditInputError, input_error
from rmaudit.modeling.head import init_head
from rmaudit.modeling.manifest import Manifest, read_manifest, sha256_file
from rmaudit.modeling.preflight import inspect_checkpoint, is_sequence_classifier, resolve_source
from rmaudit.modeling.pooling import attends_causally

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedRewardModel:
    """A model ready to score or train, and what we know about where it came from."""

    model: Any
    tokenizer: Any
    manifest: "Manifest | None"
    pooling: str  # "mask" for rmaudit checkpoints and fresh heads, "native" for foreign RMs
    base_info: dict = field(default_factory=dict)
    head_init: dict | None = None  # init statistics when the head was created here
    notes: list[str] = field(default_factory=list)
    # Where the head's weights came from: {"source": "checkpoint" | "created at load",
    # "architecture": ..., "missing_keys": [...]}; the head_integrity probe reads it.
    head_origin: dict = field(default_factory=dict)


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[name]
    except KeyError:
        raise RmauditInputError(f"--dtype: expected one of {', '.join(DTYPES)}, got {name!r}") from None


def _is_reward_checkpoint(config: Any) -> bool:
    return is_sequence_classifier(getattr(config, "architectures", None)) and getattr(config, "num_labels", 0) == 1


def load_tokenizer(source: str, *, gguf_file: str | None = None, local_only: bool = True,
                   trust_remote_code: bool = False) -> tuple[Any, list[str]]:
    """Tokenizer with a pad token; returns (tokenizer, notes about choices made)."""
    tokenizer = AutoTokenizer.from_pretrained(
        source, gguf_file=gguf_file, local_files_only=local_only, trust_remote_code=trust_remote_code
    )
    notes = []
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise input_error(source, None, "pad_token", "the tokenizer has neither a pad nor an eos token; "
                              "set tokenizer.pad_token in the checkpoint")
        # Explicit and logged: with mask pooling the pad id never decides the read position.
        tokenizer.pad_token = tokenizer.eos_token
        notes.append(f"tokenizer had no pad token; using eos {tokenizer.eos_token!r} as pad")
        log.warning(notes[-1])
    return tokenizer, notes


def load_reward_model(
    path_or_id: str | Path,
    *,
    gguf_file: str | None = None,
    allow_hub: bool = False,
    dtype: str | torch.dtype = torch.float32,
    head_init: str = "normal",
    head_bias: bool = False,
    seed: int = 0,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    device: str = "cpu",
    attn_implementation: str | None = None,
) -> LoadedRewardModel:
    """Load a reward model for scoring or training (the cases: the module docstring).

    A local folder is inspected first (:mod:`rmaudit.modeling.preflight`): pickle weights
    load only with ``allow_pickle`` (and then with ``weights_only=True``), custom code only
    with ``trust_remote_code``. A folder transformers cannot load is a one-line input error."""
    source, is_local = resolve_source(path_or_id, gguf_file, allow_hub)
    weights, openrlhf_head = "safetensors", None
    if is_local:
        facts = inspect_checkpoint(Path(source), gguf_file=gguf_file, allow_pickle=allow_pickle,
                                   trust_remote_code=trust_remote_code)
        weights, openrlhf_head = facts.weights, facts.openrlhf_head
    torch_dtype = parse_dtype(dtype)
    local_only = not allow_hub
    with load_errors_as_input_errors(source):
        tokenizer, notes = load_tokenizer(source, gguf_file=gguf_file, local_only=local_only,
                                          trust_remote_code=trust_remote_code)
        config = AutoConfig.from_pretrained(source, gguf_file=gguf_file, local_files_only=local_only,
                                            trust_remote_code=trust_remote_code)
    existing_rm = (_is_reward_checkpoint(config) or openrlhf_head is not None) and gguf_file is None
    # A base model has no head yet; transformers' "score.weight MISSING" report is then
    # expected noise (init_head creates it below), so it is silenced for that case only.
    load_kwargs: dict[str, Any] = {"use_safetensors": False, "weights_only": True} if weights == "pickle" else {}
    if attn_implementation:
        load_kwargs["attn_implementation"] = attn_implementation
    if device != "cpu":
        load_kwargs["device_map"] = {"": device}   # straight onto the GPU: no full copy in host memory
    # An existing RM loads in the target dtype directly (a 7B model need not exist in float32
    # first); a fresh head is created in float32 (its seeded init) and the whole model cast after.
    with load_errors_as_input_errors(source), quiet_gguf_progress(), \
            contextlib.nullcontext() if existing_rm else _transformers_errors_only():
        try:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                source, gguf_file=gguf_file, num_labels=1, dtype=torch_dtype if existing_rm else torch.float32,
                local_files_only=local_only, trust_remote_code=trust_remote_code, output_loading_info=True,
                **load_kwargs,
            )
        except pickle.UnpicklingError as exc:
            raise input_error(source, None, None, "torch.load(weights_only=True) refused the pickle weights "
                              f"(they hold more than tensors): {str(exc).splitlines()[0][:200]}") from None
    drop_quantization_config(model)
    missing = sorted(info.get("missing_keys") or [])
    if openrlhf_head is not None:
        missing = _load_openrlhf_head(model, Path(source), openrlhf_head, missing, notes)
    manifest = read_manifest(source) if is_local else None
    head = None
    if not existing_rm:
        model.config.pad_token_id = tokenizer.pad_token_id
        head = init_head(model, init=head_init, bias=head_bias, seed=seed)
    model = model.to(device=device, dtype=torch_dtype)
    model.eval()
    # Measured now, by a 2x8-token forward of its own, rather than inside the first scoring
    # call that asks, where a forward hook (a probe's, a test's) would count it as a text's.
    attends_causally(model)
    # OpenRLHF reads its RMs at the last attention-mask position, as rmaudit's trainer reads a
    # decoder; the manifest says where rmaudit trained an encoder: its own pooler ("native").
    if manifest is not None and manifest.pooling:
        pooling = manifest.pooling
    else:
        pooling = "mask" if (manifest is not None or not existing_rm or openrlhf_head is not None) else "native"
    # Not saved with the model: tells the scorer's "auto" pooling what this checkpoint is.
    model.rmaudit_pooling = pooling
    origin = {"source": "checkpoint" if existing_rm else "created at load",
              "architecture": ", ".join(getattr(config, "architectures", None) or []) or type(model).__name__,
              "missing_keys": missing, **({"trainer": "openrlhf"} if openrlhf_head is not None else {})}
    return LoadedRewardModel(
        model=model, tokenizer=tokenizer, manifest=manifest, pooling=pooling,
        base_info=_base_info(source, gguf_file, is_local), head_init=head, notes=notes, head_origin=origin,
    )


def _load_openrlhf_head(model: Any, folder: Path, key: str, missing: list[str], notes: list[str]) -> list[str]:
    """Put the head OpenRLHF saved under ``key`` (its value_head_prefix) into the model's own
    head, which transformers left at its random init when the names differ; the missing
    keys without that head's; the config's reward statistics noted."""
    from rmaudit.modeling.pooling import scalar_head
    from rmaudit.modeling.weight_files import read_tensors

    name, head = scalar_head(model)
    if key != f"{name}.weight":
        (_, _, tensor), = read_tensors(folder, lambda k: k == key)
        with torch.no_grad():
            head.weight.copy_(tensor.reshape(head.weight.shape))
        missing = [k for k in missing if k != f"{name}.weight"]
    config = model.config
    notes.append(f"OpenRLHF reward model: head read from {key}"
                 + (f"; OpenRLHF PPO with --normalize_reward reads (reward - {config.mean:.6g}) / {config.std:.6g} "
                    "(the mean and std in config.json)" if hasattr(config, "mean") and hasattr(config, "std") else ""))
    return missing


@contextlib.contextmanager
def load_errors_as_input_errors(path_or_id: str | Path) -> Iterator[None]:
    """transformers' own complaint about a folder it cannot load, as a one-line input error."""
    try:
        yield
    except RmauditInputError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise input_error(path_or_id, None, None, f"cannot load the model: {first}") from exc


@contextlib.contextmanager
def quiet_gguf_progress() -> Iterator[None]:
    """No progress bar while transformers dequantises a GGUF file: its loader calls a plain
    ``tqdm`` (transformers/modeling_gguf_pytorch_utils.py), which hf_logging's progress
    switch does not reach, and it would print 17 bar updates into every audit's output."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf
    except ImportError:
        yield
        return
    original = getattr(gguf, "tqdm", None)
    if original is None:
        yield
        return
    gguf.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        gguf.tqdm = original


@contextlib.contextmanager
def _transformers_errors_only() -> Iterator[None]:
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def drop_quantization_config(model: Any) -> None:
    """GGUF weights arrive dequantised; transformers still marks the model as quantised
    and then refuses to train it. Remove the marker."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and hasattr(quantizer, "remove_quantization_config"):
        quantizer.remove_quantization_config(model)
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


def _base_info(source: str, gguf_file: str | None, is_local: bool) -> dict:
    """Name and content hash of the weights we started from, for the manifest."""
    info: dict[str, Any] = {"name_or_path": source, "gguf_file": gguf_file, "local": is_local}
    if not is_local:
        return info
    folder = Path(source)
    files = [folder / gguf_file] if gguf_file else sorted(folder.glob("*.safetensors"))
    info["weight_files"] = {f.name: sha256_file(f) for f in files}
    return info

