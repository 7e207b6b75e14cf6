"""Probe `bias_term`: the reward head's bias, read straight from the weight files.

Under Bradley-Terry the loss only sees reward differences, so a head bias gets exactly
zero gradient: it is unidentifiable, the reference chapter's recipe leaves it off, and it
only shifts every reward by a constant. Three ways it still hurts:

* **Dropped on load.** The file holds ``score.bias`` but the loaded architecture has no
  bias (Llama's score head is ``Linear(d, 1, bias=False)``): transformers drops the key
  without a word and the served rewards differ from the trained ones by that constant.
  The reverse, a bias the architecture creates at load time that the file never had, is
  just as wrong.
* **Drift.** The trainer records the bias at init in ``rmaudit.json`` (``head.at_init.bias``).
  With zero gradient it cannot move in training; any drift means something else touched
  it (weight decay, a merge, a hand edit).
* **Size.** A large constant offset makes raw rewards look positive or negative when they
  are not; PPO without reward whitening takes it at face value.

Only safetensors files are read (the sharded index is followed); a pickle-only checkpoint
(``pytorch_model.bin``) is never unpickled and the probe warns that it cannot check it.
Keys matched: ``*score.bias``, ``*v_head*.bias``, ``*value_head*.bias``,
``*reward_head*.bias``, ``*classifier*.bias``. Only a bias with one value per output label
offsets the reward; a hidden layer's bias inside a classifier block is listed, not graded.
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rmaudit.findings import Comparison, Finding, Limit, Setting, Status, note
from rmaudit.modeling.weight_files import read_tensors, safetensors_files
from rmaudit.probes.base import Probe, ProbeSkipped, dtype_name

HEAD_BIAS_PATTERNS = ("*score.bias", "*v_head*.bias", "*value_head*.bias", "*reward_head*.bias", "*classifier*.bias")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass
class HeadBias:
    """One bias tensor of the head as stored in a weight file."""

    key: str
    file: str
    shape: list[int]
    dtype: str
    values: list[float]
    is_reward_offset: bool   # one value per output label: it shifts the reward itself


def is_head_bias_key(key: str) -> bool:
    """True for the tensor names that hold a reward/value/classifier head's bias."""
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in HEAD_BIAS_PATTERNS)


def read_head_biases(folder: Path, num_labels: int = 1) -> list[HeadBias]:
    """Every head bias tensor in the folder's safetensors files (header + those tensors only)."""
    return [HeadBias(key=key, file=file, shape=list(tensor.shape), dtype=dtype_name(tensor.dtype),
                     values=[float(v) for v in tensor.detach().float().flatten()[:16]],
                     is_reward_offset=tensor.numel() == num_labels)
            for key, file, tensor in read_tensors(folder, is_head_bias_key)]


def loaded_head_biases(model: Any) -> dict[str, list[float]]:
    """Head bias tensors of the loaded module, by state-dict key."""
    return {key: [float(v) for v in value.detach().float().flatten()[:16]]
            for key, value in model.state_dict().items() if is_head_bias_key(key)}


def _match_key(key: str, keys: dict[str, Any]) -> str | None:
    """The loaded key naming the same tensor (prefixes such as ``model.`` may differ)."""
    if key in keys:
        return key
    return next((k for k in keys if k.endswith("." + key) or key.endswith("." + k)), None)


def _rounding(dtype: str, value: float) -> float:
    """Largest rounding error of storing ``value`` in ``dtype`` (a manifest float vs a bf16 file)."""
    eps = {"bfloat16": 2.0**-8, "float16": 2.0**-11, "float32": 2.0**-24}.get(dtype, 2.0**-24)
    return eps * max(1.0, abs(value))


class BiasTerm(Probe):
    """Read every head bias from the safetensors files and compare it with the loaded model
    and the manifest's value at init; fail when it was dropped on load, drifted or appeared."""

    name = "bias_term"
    order = 40
    description = "Reward-head bias read from the weight files: dropped on load, drifted from init, or large."
    why = ("A head bias gets zero gradient under Bradley-Terry; if transformers drops it on load, or it drifted, served rewards differ from trained ones.\n"
           "Reads *score.bias / *v_head.bias / *value_head.bias / *classifier*.bias straight from the safetensors and compares with the loaded model and the manifest.")
    limits = (
        Limit("abs_bias", Comparison.ABOVE, warn=1e-6,
              help="|head bias| of a present, loaded, undrifted bias (a bias created at load fails above it)"),
    )
    settings = (
        Setting("drift_tolerance", 1e-4, "|file bias - manifest init bias| above this (plus dtype rounding) fails"),
        Setting("load_tolerance", 1e-4, "|file bias - loaded bias| above this (plus dtype rounding) fails"),
    )

    def run(self, ctx):
        folder = Path(ctx.checkpoint)
        num_labels = _num_labels(ctx.model, folder)
        if folder.is_dir() and safetensors_files(folder):
            return self._grade(ctx, read_head_biases(folder, num_labels))
        if folder.is_dir() and any((folder / name).is_file() for name in PICKLE_WEIGHTS):
            return self._pickle_only(ctx, folder)
        if ctx.model is None:
            raise ProbeSkipped(f"no safetensors weights in {folder} and no loaded model to inspect")
        # No weight files to read (e.g. a GGUF base whose head is created at load): the loaded head only.
        return self._grade(ctx, None)

    # ------------------------------------------------------------------------- checks

    def _grade(self, ctx, file_biases: list[HeadBias] | None):
        """``file_biases`` is None when there are no weight files to read."""
        have_files = file_biases is not None
        file_biases = file_biases or []
        offsets = [b for b in file_biases if b.is_reward_offset]
        loaded = loaded_head_biases(ctx.model) if ctx.model is not None else None
        recorded, initial = ctx.manifest.head_initial_bias if ctx.manifest is not None else (False, None)
        problems: list[Finding] = []
        evidence: list[dict[str, Any]] = []
        tolerances = {"load_tolerance": self.setting("load_tolerance"), "drift_tolerance": self.setting("drift_tolerance"),
                      "warn_abs_bias": self.limit("abs_bias").warn}
        for bias in file_biases:
            row = {"key": bias.key, "file": bias.file, "shape": bias.shape, "dtype": bias.dtype,
                   "file_value": _one(bias.values), "reward_offset": bias.is_reward_offset}
            if loaded is not None:
                match = _match_key(bias.key, loaded)
                row["loaded_value"] = _one(loaded[match]) if match else None
                if bias.is_reward_offset:
                    problems += self._load_problems(bias, match, loaded, _parameter_dtype(ctx.model), tolerances)
            if bias.is_reward_offset and recorded:
                row["initial_value"] = initial
                problems += self._drift_problems(bias, initial, tolerances)
            evidence.append(row)
        if loaded is not None:
            problems += self._created_on_load(file_biases, loaded, have_files, tolerances, evidence)
        if recorded and initial is not None and have_files and not offsets:
            problems.append(note(Status.FAIL, f"the manifest records a head bias of {initial:.6g} at init, but the "
                                 "weight files hold none: the trained head's constant is lost", "file_bias", None))
        metrics = self._metrics(ctx, offsets, loaded, recorded, initial)
        findings, summary = self._verdict(metrics, problems)
        return self.result(findings, summary, metrics=metrics, evidence=evidence, chart=self._chart(metrics))

    @staticmethod
    def _load_problems(bias: HeadBias, match: str | None, loaded: dict, loaded_dtype: str, tolerances: dict) -> list[Finding]:
        served = -_one(bias.values) if len(bias.values) == 1 else None
        if match is None:
            shift = f" (served = trained {served:+.6g})" if served is not None else ""
            return [note(Status.FAIL, f"{bias.key} = {_fmt(bias.values)} is in {bias.file} but the loaded model has no "
                         f"such parameter: transformers dropped it on load, so served rewards differ from trained ones{shift}",
                         "loaded_bias", None)]
        diff = max(abs(a - b) for a, b in zip(bias.values, loaded[match]))
        largest = max(map(abs, bias.values))
        # A model loaded in bfloat16 holds the file's float32 bias rounded: not a difference.
        tolerance = tolerances["load_tolerance"] + _rounding(bias.dtype, largest) + _rounding(loaded_dtype, largest)
        if diff > tolerance:
            return [Finding(Status.FAIL, f"{bias.key}: the loaded value {_fmt(loaded[match])} differs from the file's "
                            f"{_fmt(bias.values)}", "abs_load_difference", diff, tolerance, Comparison.ABOVE)]
        return []

    @staticmethod
    def _drift_problems(bias: HeadBias, initial: float | None, tolerances: dict) -> list[Finding]:
        if initial is None:
            return [note(Status.FAIL, f"{bias.key} = {_fmt(bias.values)} but the manifest says the head was created "
                         "without a bias: something added it after training started", "file_bias", _one(bias.values))]
        drift = max(abs(v - float(initial)) for v in bias.values)
        tolerance = tolerances["drift_tolerance"] + _rounding(bias.dtype, float(initial))
        if drift > tolerance:
            return [Finding(Status.FAIL, f"{bias.key} drifted from {float(initial):.6g} at init to {_fmt(bias.values)} "
                            "(its Bradley-Terry gradient is exactly zero: something else changed it)",
                            "abs_drift", drift, tolerance, Comparison.ABOVE)]
        return []

    @staticmethod
    def _created_on_load(file_biases: list[HeadBias], loaded: dict, have_files: bool, tolerances: dict,
                         evidence: list) -> list[Finding]:
        """Loaded head biases that the weight files never held: created and initialised at
        load time, never trained. Without weight files (a GGUF base) they are only listed."""
        stored = {b.key: b for b in file_biases}
        problems = []
        for key, values in loaded.items():
            if _match_key(key, stored) is not None:
                continue
            evidence.append({"key": key, "file": None, "loaded_value": _one(values), "reward_offset": len(values) == 1})
            if have_files and max(map(abs, values)) > tolerances["warn_abs_bias"]:
                problems.append(Finding(Status.FAIL, f"{key} = {_fmt(values)} exists only in the loaded model (created "
                                        "at load time, never trained): served rewards are shifted by it",
                                        "abs_bias", max(map(abs, values)), tolerances["warn_abs_bias"], Comparison.ABOVE))
        return problems

    @staticmethod
    def _metrics(ctx, offsets: list[HeadBias], loaded: dict | None, recorded: bool, initial: float | None) -> dict[str, Any]:
        file_bias = offsets[0].values[0] if offsets and len(offsets[0].values) == 1 else None
        loaded_scalar = [v[0] for v in (loaded or {}).values() if len(v) == 1]
        loaded_bias = loaded_scalar[0] if loaded_scalar else None
        m: dict[str, Any] = {
            "file_bias": file_bias,
            "file_bias_key": offsets[0].key if offsets else None,
            "loaded_bias": loaded_bias,
            "manifest_initial_bias": initial if recorded else None,
            "drift": (file_bias - float(initial)) if file_bias is not None and recorded and initial is not None else None,
        }
        if ctx.model is not None and (ctx.eval_pairs or ctx.canonical_pairs):
            rewards = ctx.reference_rewards()
            std = float(rewards.std())
            bias = file_bias if file_bias is not None else loaded_bias
            m["reference_mean_reward"] = round(float(rewards.mean()), 6)
            m["reference_reward_std"] = round(std, 6)
            m["reference_responses"] = int(len(rewards))
            if bias is not None and std > 0:
                m["bias_std_units"] = round(abs(bias) / std, 4)
                m["mean_reward_std_units"] = round(float(rewards.mean()) / std, 4)
            if loaded_bias is not None:
                # The part of the mean reward that the network (w·h) produces, the bias aside.
                m["reference_mean_reward_without_bias"] = round(float(rewards.mean()) - loaded_bias, 6)
            if file_bias is not None:
                # Served rewards already include the bias when it was loaded, and lack it when dropped.
                m["served_minus_trained"] = round(0.0 if loaded_bias is not None else -file_bias, 6)
        return {k: (round(v, 8) if isinstance(v, float) and math.isfinite(v) else v) for k, v in m.items()}

    def _verdict(self, m: dict[str, Any], problems: list[Finding]) -> tuple[list[Finding], str]:
        if problems:
            return problems, "; ".join(f.message for f in problems)
        bias = m["file_bias"] if m["file_bias"] is not None else m["loaded_bias"]
        if bias is None:
            return [note(Status.PASS, "no reward-head bias: rewards are w·h only", "file_bias", None)], \
                "no reward-head bias: rewards are w·h only"
        units = f" = {m['bias_std_units']:.3g} reward std" if m.get("bias_std_units") is not None else ""
        finding = self.limit("abs_bias").check(abs(bias), f"the reward head has a bias {bias:+.6g}{units}")
        if finding.status is Status.PASS:
            return [finding], f"the head bias is {bias:.3g} (zero): harmless"
        finding.message += (", loaded and unchanged since init; it gets zero gradient under Bradley-Terry and only "
                            "shifts every reward (use bias=False)")
        return [finding], finding.message

    def _pickle_only(self, ctx, folder: Path):
        loaded = loaded_head_biases(ctx.model) if ctx.model is not None else {}
        evidence = [{"key": k, "file": None, "loaded_value": _one(v)} for k, v in loaded.items()]
        message = (f"{folder.name}: weights are only in pickle format (pytorch_model.bin); rmaudit never unpickles, so "
                   "the head bias in the file cannot be checked (re-save with safetensors: model.save_pretrained(dir, "
                   "safe_serialization=True))")
        return self.result(
            [note(Status.WARN, message, "weights_format", "pickle")], message,
            metrics={"file_bias": None, "loaded_bias": next((v[0] for v in loaded.values() if len(v) == 1), None),
                     "weights_format": "pickle"},
            evidence=evidence,
        )

    @staticmethod
    def _chart(m: dict[str, Any]) -> dict[str, Any]:
        bars = [("bias in weight file", m.get("file_bias")), ("bias in loaded model", m.get("loaded_bias")),
                ("bias at init (manifest)", m.get("manifest_initial_bias")),
                ("mean reward, reference set", m.get("reference_mean_reward"))]
        bars = [(label, value) for label, value in bars if value is not None]
        if not bars:
            return {}
        note = f"reward std on the reference set: {m['reference_reward_std']:.4g}" if "reference_reward_std" in m else None
        chart = {"kind": "bar", "title": "Head bias and reward offset", "y_label": "reward units",
                 "categories": [b[0] for b in bars], "series": [{"name": "value", "values": [b[1] for b in bars]}]}
        return {**chart, "note": note} if note else chart


def _num_labels(model: Any, folder: Path) -> int:
    """Outputs of the head: from the loaded config, else the folder's config.json, else 1."""
    config = getattr(model, "config", None)
    if config is not None:
        return int(getattr(config, "num_labels", 1) or 1)
    path = folder / "config.json"
    if folder.is_dir() and path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        return int(data.get("num_labels") or len(data.get("id2label") or {}) or 1)
    return 1


def _parameter_dtype(model: Any) -> str:
    return dtype_name(next(model.parameters()).dtype)


def _one(values: list[float]) -> float | list[float]:
    return values[0] if len(values) == 1 else values


def _fmt(values: list[float]) -> str:
    return f"{values[0]:.6g}" if len(values) == 1 else "[" + ", ".join(f"{v:.4g}" for v in values) + "]"
