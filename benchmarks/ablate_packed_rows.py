"""Ablation: how many tokens one packed row of the prefix tree should hold on this machine.

The audit's scorer (``bench_scoring.rmaudit_scorer``, prefix sharing on) with
``prefix_sharing.PACKED_TOKENS`` set to each --budgets value in turn, alternating in one
process for --repeats rounds on the same held-out hh texts. A small row leaves the matmuls
short and forwards the shared system prompt once per row; a big one spills the MLP's
activations out of the caches. The bench_scoring ratios move by 10-20% between runs on a
shared 2-core machine; rounds paired in one process resolve a few percent. Printed, not
written: the reading goes into results/scoring.md by hand.

    python benchmarks/ablate_packed_rows.py runs/hh --pairs 32 --repeats 6 --budgets 1024 2048 4096 8192
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--budgets", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from bench_scoring import load, rmaudit_scorer
    from machine import alternating_rounds, machine_line, paired_speed_lines

    from rmaudit import prefix_sharing
    from rmaudit.devices import configure_cpu_threads, resolve_dtype

    configure_cpu_threads(None)
    dtype_name = resolve_dtype("auto", "cpu")[0]
    _, fast, texts, ids = load(args.checkpoint, args.pairs, dtype_name)
    max_length = max(len(r) for r in ids)
    default = prefix_sharing.PACKED_TOKENS["cpu"]
    rmaudit_scorer(fast.model, fast.tokenizer, texts, max_length, share=True)  # warm-up, untimed
    def score_with_rows_of(budget) -> None:
        prefix_sharing.PACKED_TOKENS["cpu"] = budget
        rmaudit_scorer(fast.model, fast.tokenizer, texts, max_length, share=True)

    seconds = alternating_rounds(args.budgets, args.repeats, score_with_rows_of)
    prefix_sharing.PACKED_TOKENS["cpu"] = default
    print(f"Machine: {machine_line()}; {len(texts)} texts, dtype {dtype_name}, {args.repeats} rounds; "
          f"the default row is {default} tokens")
    base = default if default in seconds else args.budgets[0]
    print("\n".join(paired_speed_lines(seconds, base, "the default", label=lambda budget: f"{budget} tokens a row")))


if __name__ == "__main__":
    main()
