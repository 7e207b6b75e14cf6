"""Two CPU processes under `accelerate launch` (gloo) train like one process with the same global batch."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from helpers_train import read_metrics, small_pairs, tiny_base_dir, write_pairs

ENTRY = Path(__file__).resolve().parent / "helpers_train.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_args(out: Path, data: Path, batch_size: int) -> list[str]:
    return ["train", "--base", str(tiny_base_dir()), "--data", str(data), "--out", str(out), "--max-steps", "4",
            "--batch-size", str(batch_size), "--lr", "1e-3", "--warmup-ratio", "0", "--dtype", "float32",
            "--log-every", "1", "--eval-fraction", "0.25", "--no-progress"]


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    if accelerate is None:
        pytest.skip("the accelerate launcher is not installed")
    data = write_pairs(tmp_path / "pairs.jsonl", small_pairs(16))
    # TMPDIR: torchrun leaves a torchelastic_* folder in the temp dir; here it goes with tmp_path.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ENTRY.parents[1]), "TMPDIR": str(tmp_path)}
    # `accelerate launch --cpu` runs ONE process unless MPI is installed; torchrun (accelerate's multi-process
    # launcher) plus ACCELERATE_USE_CPU gives N CPU processes on gloo.
    env_cpu = {**env, "ACCELERATE_USE_CPU": "1"}
    single = subprocess.run([sys.executable, str(ENTRY), *_train_args(tmp_path / "one", data, 4)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    launch = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
              str(ENTRY), *_train_args(tmp_path / "two", data, 2)]
    double = subprocess.run(launch, env=env_cpu, capture_output=True, text=True, timeout=300)
    assert double.returncode == 0, double.stderr[-2000:]
    assert "on 2 process(es)" in double.stderr
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert [r["step"] for r in one] == [r["step"] for r in two] == [1, 2, 3, 4]
    for a, b in zip(one, two):
        # gloo all-reduces float32 gradients: the same numbers summed in a different order.
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["accuracy"] == b["accuracy"] and a["tokens_seen"] == b["tokens_seen"]
    assert one[-1]["loss"] != one[0]["loss"]  # training moved
    eval_one, eval_two = read_metrics(tmp_path / "one", "eval"), read_metrics(tmp_path / "two", "eval")
    assert eval_one[-1]["pairs"] == eval_two[-1]["pairs"]
    assert eval_one[-1]["loss"] == pytest.approx(eval_two[-1]["loss"], abs=1e-5)
