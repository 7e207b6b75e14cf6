"""Resumable training state: optimizer, scheduler, RNG streams and data position.

Tensors go to safetensors and everything else to JSON, so resuming never unpickles.
Model weights live next to this state in the checkpoint folder (written by save_checkpoint).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rmaudit.errors import input_error

STATE_DIR = "trainer_state"


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise input_error(path, None, None, f"unreadable training state: {exc}") from exc


def save_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    state = optimizer.state_dict()
    tensors = {f"{pid}.{key}": value.detach().cpu().contiguous()
               for pid, entry in state["state"].items() for key, value in entry.items()}
    save_file(tensors, str(folder / "optimizer.safetensors"))
    _write_json(folder / "optimizer.json", state["param_groups"])


def load_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in load_file(str(folder / "optimizer.safetensors")).items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = tensor
    groups = _read_json(folder / "optimizer.json")
    for group in groups:
        group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_rng(folder: Path, rank: int) -> None:
    """This process's torch / numpy / python RNG streams."""
    np_state = np.random.get_state()
    tensors = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np_state[1].astype(np.int64))}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    save_file(tensors, str(folder / f"rng-rank{rank}.safetensors"))
    py_version, py_state, py_gauss = random.getstate()
    _write_json(folder / f"rng-rank{rank}.json", {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
    })


def load_rng(folder: Path, rank: int) -> None:
    tensors = load_file(str(folder / f"rng-rank{rank}.safetensors"))
    extra = _read_json(folder / f"rng-rank{rank}.json")
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))])
    kind, pos, has_gauss, cached = extra["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, state, gauss = extra["python"]
    random.setstate((version, tuple(state), gauss))


def save_training_state(folder: Path, optimizer, scheduler, progress: dict, *, rank: int, main: bool) -> None:
    """Write this process's part of the state under ``folder/trainer_state`` (main writes the shared part)."""
    folder = Path(folder) / STATE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    save_rng(folder, rank)
    if main:
        save_optimizer(optimizer, folder)
        _write_json(folder / "scheduler.json", scheduler.state_dict())
        _write_json(folder / "progress.json", progress)


def load_training_state(folder: Path, optimizer, scheduler, *, rank: int) -> dict:
    """Restore optimizer, scheduler and RNG; return the progress record (step, epoch, batch position)."""
    folder = Path(folder) / STATE_DIR
    if not (folder / "progress.json").is_file():
        raise input_error(folder.parent, None, None, "not a resumable checkpoint (no trainer_state/progress.json)")
    load_optimizer(optimizer, folder)
    scheduler.load_state_dict(_read_json(folder / "scheduler.json"))
    rng_rank = rank if (folder / f"rng-rank{rank}.safetensors").is_file() else 0
    load_rng(folder, rng_rank)
    return _read_json(folder / "progress.json")


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder itself, or the latest ``checkpoints/step-N`` of a run folder."""
    path = Path(path)
    if (path / STATE_DIR).is_dir():
        return path
    steps = sorted((p for p in (path / "checkpoints").glob("step-*") if (p / STATE_DIR / "progress.json").is_file()),
                   key=lambda p: int(p.name.split("-")[1]))
    if not steps:
        raise input_error(path, None, None, "no resumable checkpoint here (expected checkpoints/step-N/trainer_state)")
    return steps[-1]
