"""Score an audit on several processes: ``accelerate launch -m rmaudit check ...`` (or torchrun).

Every process builds the same context and the same scoring plan; process ``r`` of ``n`` scores
the plan's texts ``r, r + n, r + 2n, ...`` on its own device (``cuda:LOCAL_RANK``, or the CPU
with gloo), and the rewards are gathered so that every process holds the whole cache. The
probes then run on every process from that cache (their few uncached variants are repeated,
which costs no wall time) and process 0 alone writes the reports (issue 13).
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import numpy as np


def world() -> tuple[int, int]:
    """(this process' rank, number of processes) from the launcher's environment; (0, 1) alone."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return world()[0] == 0


def local_device(device: str) -> str:
    """Under a launcher, a bare "cuda" means this process' own GPU (``LOCAL_RANK``)."""
    if device == "cuda" and world()[1] > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


@contextlib.contextmanager
def process_group(device: str) -> Iterator[None]:
    """The process group for gathering rewards, when launched on several processes (nccl on
    CUDA, gloo on the CPU); nothing when alone or when the launcher's code already made one."""
    import torch.distributed as dist

    if world()[1] == 1 or dist.is_initialized():
        yield
        return
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def gather_scores(keys: np.ndarray, rewards: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every process' newly scored (text keys, rewards), concatenated, on every process."""
    import torch.distributed as dist

    if world()[1] == 1 or not dist.is_initialized():
        return keys, rewards
    parts: list[tuple[np.ndarray, np.ndarray] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (keys, rewards))
    got = [part for part in parts if part is not None]
    return np.concatenate([k for k, _ in got]), np.concatenate([r for _, r in got])
