"""Benchmark of the on-policy preflight as ``rmaudit check`` runs it: this tree against an
earlier rmaudit (``--baseline``, a checkout of another commit), on the same checkpoint.

Each round runs, for both trees, alternating which goes first,

    rmaudit check CKPT --probes policy_rollouts,policy_shift --max-pairs 200 --policy builtin

in a child process (wall time and its own peak RSS) and reads the report's per-probe seconds
and the scoring plan's. The policy is the builtin SmolLM2-135M-Instruct; ``CKPT`` must be an
rmaudit checkpoint whose manifest names its training data (``policy_shift`` then reads the
training responses), e.g. the README's ``runs/hh``.

    git worktree add /tmp/rmaudit-0.5.12 458fe00
    python benchmarks/bench_policy_probes.py runs/hh --baseline /tmp/rmaudit-0.5.12
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "policy_probes.md"
PROBES = ("policy_rollouts", "policy_shift")


def run_check(tree: Path, checkpoint: str, max_pairs: int) -> dict:
    """Wall seconds, peak RSS MiB, per-probe and scoring-plan seconds of one audit by ``tree``'s rmaudit."""
    from machine import timed

    with tempfile.TemporaryDirectory(prefix="bench-policy-") as out:
        # run in the tree with it first on the path: the child imports its rmaudit, not the installed one
        os.environ["PYTHONPATH"] = str(tree)
        wall, rss, _ = timed([sys.executable, "-m", "rmaudit", "check", checkpoint, "--probes", ",".join(PROBES),
                              "--max-pairs", str(max_pairs), "--policy", "builtin", "--out", out, "--no-progress"],
                             tree, ok=(0, 1))
        report = json.loads((Path(out) / "report.json").read_text())
    seconds = {p["name"]: p["seconds"] for p in report["probes"]}
    return {"version": report["rmaudit_version"], "wall": wall, "rss": rss,
            "plan": report["context"].get("scoring_plan", {}).get("seconds", 0.0),
            "statuses": {p["name"]: p["status"] for p in report["probes"]}, **seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="an rmaudit checkpoint folder (e.g. runs/hh)")
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout of the rmaudit to compare with")
    parser.add_argument("--max-pairs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from machine import machine_line, publish

    checkpoint = str(Path(args.checkpoint).resolve())
    trees = {"this tree": REPO, "baseline": args.baseline.resolve()}
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for round_ in range(args.repeats):
        for name in (list(trees) if round_ % 2 == 0 else list(trees)[::-1]):  # alternate the order
            runs[name].append(run_check(trees[name], checkpoint, args.max_pairs))
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]['wall']:.0f} s" for k, v in runs.items()),
              file=sys.stderr)
    columns = ("wall", "plan", *PROBES, "rss")
    med = {k: {c: statistics.median(r[c] for r in v) for c in columns} for k, v in runs.items()}
    lines = [
        "## On-policy preflight: this tree vs an earlier rmaudit", "",
        f"Machine: {machine_line()}. Run: `python benchmarks/bench_policy_probes.py {args.checkpoint} --baseline "
        f"{args.baseline} --max-pairs {args.max_pairs} --repeats {args.repeats}` on {date.today().isoformat()}, alone "
        f"on the machine; `rmaudit check --probes {','.join(PROBES)} --policy builtin`, medians of "
        f"{args.repeats} alternating rounds (min-max in brackets).", "",
        "| rmaudit | audit s | scoring plan s | policy_rollouts s | policy_shift s | peak RSS MiB | verdicts |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, values in runs.items():
        cells = [f"{med[name][c]:.1f} [{min(r[c] for r in values):.1f}-{max(r[c] for r in values):.1f}]"
                 for c in columns[:-1]]
        verdicts = ", ".join(f"{p} {values[0]['statuses'][p]}" for p in PROBES)
        lines.append(f"| {name} ({values[0]['version']}) | {' | '.join(cells)} | {med[name]['rss']:.0f} | {verdicts} |")
    lines += ["", f"this tree / baseline: **{med['baseline']['wall'] / med['this tree']['wall']:.2f}x** faster by "
              f"the median audit times; peak RSS {med['this tree']['rss'] - med['baseline']['rss']:+.0f} MiB.", ""]
    publish("\n".join(lines), RESULTS, "On-policy preflight benchmark", write=not args.no_write)


if __name__ == "__main__":
    main()
