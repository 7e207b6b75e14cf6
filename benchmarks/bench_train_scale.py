"""Benchmark of how `rmaudit train`'s setup grows with the training file: 1k, 10k and 100k pairs.

``rmaudit train --data train.jsonl --max-steps 4`` in its own process per size (wall time and
peak RSS from ``wait4``). Four steps of a tiny model cost about a second, so the figures are
the run's own costs that grow with the file: reading and splitting the pairs, the prompt
hashes of the split, rendering and tokenizing every pair, the token ids held for the epoch,
the length-grouped sampler. The pairs are the real hh-rlhf harmless pairs cycled with a
numbered suffix on both responses (as ``bench_scale.py``); the model is a tiny random Llama
causal LM (2 layers, hidden 64) with SmolLM2's real tokenizer.

    python benchmarks/bench_train_scale.py                 # 1k, 10k, 100k; writes results/train_scale.md
    python benchmarks/bench_train_scale.py --sizes 1000 --no-write
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import date
from pathlib import Path

from bench_scale import write_eval
from machine import machine_line, publish, timed

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # helpers_train: the tests' tiny base model
RESULTS = REPO / "benchmarks" / "results" / "train_scale.md"


def train(base: Path, data: Path, n: int, max_length: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "rmaudit", "train", "--base", str(base), "--data", str(data),
               "--max-steps", "4", "--batch-size", "8", "--eval-fraction", "0.02", "--max-length", str(max_length),
               "--truncation", "truncate", "--dtype", "float32", "--out", str(Path(out) / "run"), "--no-progress"]
        wall, peak, _ = timed(cmd, REPO)
        manifest = json.loads((Path(out) / "run" / "rmaudit.json").read_text())
    split = manifest.get("split") or {}
    return {"pairs": n, "wall_s": wall, "peak_mb": peak, "train_pairs": split.get("train_pairs", 0),
            "eval_pairs": split.get("eval_pairs", 0)}


def table(rows: list[dict]) -> str:
    lines = ["| pairs in the file | train / held-out pairs | wall (s) | peak RSS (MiB) | growth from the smallest (KiB per pair) |",
             "|---:|---:|---:|---:|---:|"]
    first = rows[0]
    for r in rows:
        extra = r["pairs"] - first["pairs"]
        growth = f"{(r['peak_mb'] - first['peak_mb']) * 1024 / extra:.2f}" if extra else "-"
        lines.append(f"| {r['pairs']:,} | {r['train_pairs']:,} / {r['eval_pairs']:,} | {r['wall_s']:.1f} | "
                     f"{r['peak_mb']:.0f} | {growth} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--label", default="", help="a heading for this run (e.g. the commit)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    from helpers_train import tiny_base_dir

    base = tiny_base_dir(hidden=64, layers=2)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-train-scale-") as tmp:
        for n in args.sizes:
            write_eval(Path(tmp) / "train.jsonl", n)
            rows.append(train(base, Path(tmp) / "train.jsonl", n, args.max_length))
            print(f"{n:,} pairs: {rows[-1]['wall_s']:.1f} s, peak {rows[-1]['peak_mb']:.0f} MiB", file=sys.stderr)
    report = (f"## {args.label or date.today().isoformat()}\n\nMachine: {machine_line()}. Run: `python "
              f"benchmarks/bench_train_scale.py --sizes {' '.join(map(str, args.sizes))} --max-length "
              f"{args.max_length}`, alone on the machine; tiny random Llama base (2 layers, hidden 64), SmolLM2's "
              f"tokenizer, float32, 4 steps of 8 pairs.\n\n{table(rows)}\n")
    publish(report, RESULTS, "Training scale benchmark: `rmaudit train`'s setup at 1k to 100k pairs",
            write=not args.no_write)


if __name__ == "__main__":
    main()
