"""Ablation: what forwarding the system prompt once (``prefix_sharing.SharedRoots``) saves.

The audit's scorer (``bench_scoring.rmaudit_scorer``, prefix sharing on) with and without the
second level of sharing, alternating in one process for --repeats rounds on the same held-out
hh texts. The bench_scoring ratios move by 10-20% between runs on a shared 2-core machine;
rounds paired in one process resolve a gain of a few percent. Printed, not written: the
reading goes into results/scoring.md by hand.

    python benchmarks/ablate_shared_roots.py runs/hh --pairs 32 --repeats 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from bench_scoring import load, rmaudit_scorer
    from machine import machine_line

    from rmaudit import prefix_sharing
    from rmaudit.devices import configure_cpu_threads, resolve_dtype

    configure_cpu_threads(None)
    dtype_name = resolve_dtype("auto", "cpu")[0]
    _, fast, texts, ids = load(args.checkpoint, args.pairs, dtype_name)
    max_length = max(len(r) for r in ids)
    with_roots = prefix_sharing.shared_roots

    def without_roots(*args, **kwargs):
        return prefix_sharing.SharedRoots.none()

    variants = {"shared roots": with_roots, "no shared roots": without_roots}
    rmaudit_scorer(fast.model, fast.tokenizer, texts, max_length, share=True)  # warm-up, untimed
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(args.repeats):
        for name in (list(variants) if round_ % 2 == 0 else list(variants)[::-1]):
            prefix_sharing.shared_roots = variants[name]
            start = time.perf_counter()
            rmaudit_scorer(fast.model, fast.tokenizer, texts, max_length, share=True)
            seconds[name].append(time.perf_counter() - start)
    prefix_sharing.shared_roots = with_roots
    ratios = [b / a for a, b in zip(seconds["shared roots"], seconds["no shared roots"])]
    print(f"Machine: {machine_line()}; {len(texts)} texts, dtype {dtype_name}, {args.repeats} rounds")
    for name, values in seconds.items():
        print(f"{name}: median {statistics.median(values):.2f} s, per round {', '.join(f'{v:.1f}' for v in values)}")
    print(f"speed-up per round: median {statistics.median(ratios):.3f}x ({min(ratios):.3f}-{max(ratios):.3f}), "
          f"faster in {sum(r > 1 for r in ratios)} of {len(ratios)} rounds")


if __name__ == "__main__":
    main()
