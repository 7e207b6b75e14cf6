"""Benchmark of the scorer's memory: peak RSS while scoring 1k to 100k eval pairs.

Each size runs in its own process (``ru_maxrss`` is a per-process peak). The pairs are the
real hh-rlhf harmless pairs from ../shared/data, repeated with a numbered suffix on both
responses so every text is distinct (the audit scores each distinct text once; repeats
would measure the cache, not the scorer). The model is a tiny random Llama reward model
with SmolLM2's real tokenizer, so the run measures the scorer's own buffers (token ids,
batches, the score cache) and not a big model's weights; texts are truncated to
``--max-length`` tokens as an audit does.

Reported per size: RSS once the model and the pairs exist (the inputs), the peak while
the audit context scores every chosen and rejected response (``AuditContext.pair_rewards``,
the path every probe takes), the growth between the two (the scorer's cost), the RSS
still held afterwards (the score cache), wall seconds and texts per second.

    python benchmarks/bench_memory.py                    # 1k, 10k, 30k, 100k; writes benchmarks/results/memory.md
    python benchmarks/bench_memory.py --sizes 1000 10000 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "memory.md"


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}: this benchmark needs Linux")


def rss_mb() -> float:
    """Resident memory now, in MiB."""
    return _status_mb("VmRSS")


def peak_mb() -> float:
    """Peak resident memory since the last :func:`reset_peak`, in MiB."""
    return _status_mb("VmHWM")


def reset_peak() -> None:
    """Restart the peak at the current RSS (Linux: writing 5 to clear_refs resets VmHWM), so the
    peak measured is the scorer's and not that of parsing the GGUF tokenizer at start-up."""
    Path("/proc/self/clear_refs").write_text("5")


def distinct_pairs(n: int) -> list:
    """``n`` real hh pairs, cycled, each response suffixed with its copy number."""
    from dataclasses import replace

    from tiny_models import HH_FILE

    from rmaudit.data import load_pairs

    base = load_pairs(HH_FILE)
    out = []
    for i in range(n):
        pair = base[i % len(base)]
        copy = i // len(base)
        out.append(pair if copy == 0 else replace(pair, chosen=f"{pair.chosen} ({copy})", rejected=f"{pair.rejected} ({copy})"))
    return out


def child(n: int, args: argparse.Namespace) -> dict:
    """One measurement, in this (fresh) process."""
    import torch
    from transformers import AutoTokenizer

    from tiny_models import tiny_rm

    from rmaudit.probes.context import AuditContext

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    # From a saved folder: parsing the GGUF here would leave ~300 MiB of freed heap that later
    # allocations reuse without growing the RSS, hiding the scorer's cost.
    model, tokenizer = tiny_rm(AutoTokenizer.from_pretrained(args.tokenizer), hidden=32, layers=1)
    max_length, batch_size = args.max_length, args.batch_size
    pairs = distinct_pairs(n)
    ctx = AuditContext(checkpoint=Path("bench"), model=model, tokenizer=tokenizer, max_length=max_length,
                       batch_size=batch_size, pooling="mask")
    ctx.pair_rewards(pairs[:8])  # warm-up: first-call allocations are not the scorer's per-pair cost
    reset_peak()
    inputs = rss_mb()
    start = time.perf_counter()
    chosen, rejected = ctx.pair_rewards(pairs)
    seconds = time.perf_counter() - start
    assert len(chosen) == len(rejected) == n
    return {"pairs": n, "texts": 2 * n, "inputs_mb": inputs, "peak_mb": peak_mb(), "after_mb": rss_mb(),
            "seconds": seconds}


def run_size(n: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", str(n), "--max-length", str(args.max_length),
           "--batch-size", str(args.batch_size), "--tokenizer", args.tokenizer]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = ["| eval pairs | texts | RSS with inputs (MiB) | peak while scoring (MiB) | scorer growth (MiB) "
             "| RSS after (MiB) | seconds | texts/s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['pairs']:,} | {r['texts']:,} | {r['inputs_mb']:.0f} | {r['peak_mb']:.0f} "
                     f"| {r['peak_mb'] - r['inputs_mb']:.0f} | {r['after_mb']:.0f} | {r['seconds']:.1f} "
                     f"| {r['texts'] / r['seconds']:,.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 30_000, 100_000])
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--label", default="", help="a heading for this run (e.g. the commit)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "tests"))
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    from machine import machine_line, publish
    from tiny_models import _tokenizer_folder

    args.tokenizer = str(_tokenizer_folder())
    rows = [run_size(n, args) for n in args.sizes]
    report = (f"## {args.label or 'run'}\n\nMachine: {machine_line()}. "
              f"Run: `python benchmarks/bench_memory.py` on {date.today().isoformat()}, max length "
              f"{args.max_length}, batch size {args.batch_size}, tiny random Llama RM (1 layer, hidden 32) with "
              f"SmolLM2's tokenizer.\n\n{table(rows)}\n")
    publish(report, RESULTS, "Scoring memory benchmark", write=not args.no_write)


if __name__ == "__main__":
    main()
