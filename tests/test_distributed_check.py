"""`rmaudit check` on two CPU processes under `accelerate launch` (gloo): each scores half the
scoring plan, the rewards are gathered, and process 0 writes one report equal to one process'."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from helpers_audit import TOPICS, fitted_tiny_rm, save_rm, topic_pairs, write_pairs_jsonl
from tiny_models import require_smollm2

PROBES = "accuracy,length_bias,canonical_pairs"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_score_half_the_plan_each_and_write_one_identical_report(tmp_path):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    if accelerate is None:
        pytest.skip("the accelerate launcher is not installed")
    require_smollm2()
    pairs = topic_pairs(TOPICS)
    model, tokenizer = fitted_tiny_rm(pairs)
    checkpoint = save_rm(model, tokenizer, tmp_path / "rm")
    data = write_pairs_jsonl(pairs, tmp_path / "eval.jsonl")
    check = ["check", str(checkpoint), "--probes", PROBES, "--data", str(data), "--dtype", "float32", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}  # torchrun's torchelastic_* folder
    single = subprocess.run([sys.executable, "-m", "rmaudit", *check, "--out", str(tmp_path / "one")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode in (0, 1), single.stderr[-2000:]
    # As in test_train_distributed: torchrun (accelerate's multi-process launcher) + ACCELERATE_USE_CPU = N CPU processes.
    launch = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
              "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()), "-m", "rmaudit", *check,
              "--out", str(tmp_path / "two")]
    double = subprocess.run(launch, env={**env, "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True, timeout=300)
    assert double.returncode == single.returncode, double.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "report.json").read_text())
    two = json.loads((tmp_path / "two" / "report.json").read_text())
    plan_one, plan_two = one["context"]["scoring_plan"], two["context"]["scoring_plan"]
    assert plan_two["processes"] == 2 and plan_one["distinct_texts_scored"] == plan_two["distinct_texts_scored"]
    assert 0 < plan_two["scored_by_process_0"] <= plan_two["distinct_texts_scored"] // 2 + 1
    cores = one["context"]["cpu_cores_usable"]  # two processes share the cores, not oversubscribe them
    assert (one["context"]["cpu_threads"], two["context"]["cpu_threads"]) == (cores, max(1, cores // 2))
    assert [p["status"] for p in one["probes"]] == [p["status"] for p in two["probes"]]
    for a, b in zip(one["probes"], two["probes"]):
        for key, value in a["metrics"].items():
            if isinstance(value, float):   # the same texts in other batches: float32 rounding only
                assert b["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-5), (a["name"], key)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
