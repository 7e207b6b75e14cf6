"""Tensors read straight from a checkpoint's safetensors files, in the dtype they were saved in.

Probes that judge the weights themselves (the head's bias, whether the head moved since its
init) read the file, not the loaded module: the module may have been cast to bfloat16 on
load, and bf16 rounding alone moves a head's summary statistics by ~1e-3, ten times what
one training step does. Only the header and the requested tensors are read; nothing is
unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

SAFETENSORS_INDEX = "model.safetensors.index.json"


def safetensors_files(folder: Path) -> list[Path]:
    """The checkpoint's safetensors weight files: those named by the sharded index when
    there is one, else ``model.safetensors``, else every ``*.safetensors`` in the folder."""
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        return [folder / name for name in sorted(set(weight_map.values()))]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    return sorted(folder.glob("*.safetensors"))


def read_tensors(folder: Path, wanted: Callable[[str], bool]) -> list[tuple[str, str, torch.Tensor]]:
    """(key, file name, tensor) for every tensor whose key ``wanted`` accepts, in file order."""
    from safetensors import safe_open

    found = []
    for path in safetensors_files(folder):
        with safe_open(str(path), framework="pt") as handle:
            found += [(key, path.name, handle.get_tensor(key)) for key in handle.keys() if wanted(key)]
    return found
