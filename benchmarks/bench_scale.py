"""Benchmark of how the whole audit's cost grows with the eval set: 1k, 10k and 100k pairs.

``rmaudit check CKPT --data eval.jsonl --probes all --max-pairs N`` in its own process per
size (wall time and peak RSS from ``wait4``, seconds per probe from its report.json). The
pairs are the real hh-rlhf harmless pairs, cycled with a numbered suffix on both responses
so every text is distinct (as ``bench_memory.py``); the model is a tiny random Llama reward
model (2 layers, hidden 64) with SmolLM2's real tokenizer, so the figures show the audit's
own costs - the probes' statistics, the scoring plan's bookkeeping, the loaded pairs - and
how they grow, not a big model's forward pass (that is ``bench_audit.py``'s job).
The policy probes skip (no policy is given). ``prompt_leakage`` skips unless
``--train-data``: then a training file of as many pairs, each with a prompt of its own (the
hh prompt with a numbered suffix, none of them an eval prompt), so its index of distinct
training prompts grows with the size (``bench_leakage.py`` times that index at 1M x 100k).
``--annotators K`` names one of K annotators on each eval row and audits with
``--annotator-field``, so the ``annotator`` probe runs.

    python benchmarks/bench_scale.py                        # 1k, 10k, 100k; writes results/scale.md
    python benchmarks/bench_scale.py --sizes 1000 --no-write
    python benchmarks/bench_scale.py --train-data --annotators 20   # every data-reading probe
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import date
from pathlib import Path

from machine import machine_line, publish, timed

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # tiny_models: the tests' tiny reward models
RESULTS = REPO / "benchmarks" / "results" / "scale.md"
TOP_PROBES = 6


def tiny_checkpoint(folder: Path) -> Path:
    from tiny_models import tiny_rm

    model, tokenizer = tiny_rm(hidden=64, layers=2)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_eval(path: Path, n: int, annotators: int = 0, own_prompts: bool = False) -> None:
    """``n`` distinct hh pairs as JSON lines; ``annotators``: an ``annotator`` field naming one
    of that many; ``own_prompts``: every prompt made distinct (and unlike any eval prompt)."""
    from bench_memory import distinct_pairs

    with path.open("w", encoding="utf-8") as fh:
        for i, pair in enumerate(distinct_pairs(n)):
            prompt = pair.prompt
            if own_prompts:
                prompt = [*prompt[:-1], {**prompt[-1], "content": f"{prompt[-1]['content']} [train {i}]"}]
            row = {"prompt": prompt, "chosen": pair.chosen, "rejected": pair.rejected}
            if annotators:
                row["annotator"] = f"annotator-{i % annotators}"
            fh.write(json.dumps(row) + "\n")


def audit(checkpoint: Path, data: Path, n: int, max_length: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "rmaudit", "check", str(checkpoint), "--data", str(data), "--probes", "all",
               "--max-pairs", str(n), "--max-length", str(max_length), "--dtype", "float32", "--out", out,
               "--no-progress", *extra]
        wall, peak, _ = timed(cmd, REPO, ok=(0, 1))  # 1 = the gate failed, still a complete audit
        report = json.loads((Path(out) / "report.json").read_text())
    return {"pairs": n, "wall_s": wall, "peak_mb": peak, "plan": report["context"].get("scoring_plan") or {},
            "probes": {p["name"]: p["seconds"] for p in report["probes"]}}


def table(rows: list[dict]) -> str:
    slowest = sorted(rows[-1]["probes"], key=lambda name: -rows[-1]["probes"][name])[:TOP_PROBES]
    lines = ["| eval pairs | wall (s) | peak RSS (MiB) | scoring plan (s) | texts scored | "
             + " | ".join(f"{name} (s)" for name in slowest) + " |",
             "|---:|---:|---:|---:|---:|" + "---:|" * len(slowest)]
    for r in rows:
        lines.append(f"| {r['pairs']:,} | {r['wall_s']:.1f} | {r['peak_mb']:.0f} | {r['plan'].get('seconds', 0):.1f} | "
                     f"{r['plan'].get('distinct_texts_scored', 0):,} | "
                     + " | ".join(f"{r['probes'].get(name, 0):.1f}" for name in slowest) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--train-data", action="store_true", help="also a training file of as many pairs, each "
                        "prompt its own, so prompt_leakage runs")
    parser.add_argument("--annotators", type=int, default=0, help="name one of K annotators per eval row, so the "
                        "annotator probe runs")
    parser.add_argument("--label", default="", help="a heading for this run (e.g. the commit)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        checkpoint = tiny_checkpoint(Path(tmp) / "rm")
        for n in args.sizes:
            write_eval(Path(tmp) / "eval.jsonl", n, annotators=args.annotators)
            extra = ["--annotator-field", "annotator"] if args.annotators else []
            if args.train_data:
                write_eval(Path(tmp) / "train.jsonl", n, own_prompts=True)
                extra += ["--train-data", str(Path(tmp) / "train.jsonl")]
            rows.append(audit(checkpoint, Path(tmp) / "eval.jsonl", n, args.max_length, extra))
            print(f"{n:,} pairs: {rows[-1]['wall_s']:.1f} s, peak {rows[-1]['peak_mb']:.0f} MiB", file=sys.stderr)
    flags = (" --train-data" if args.train_data else "") + (f" --annotators {args.annotators}" if args.annotators else "")
    report = (f"## {args.label or date.today().isoformat()}\n\nMachine: {machine_line()}. Run: `python benchmarks/bench_scale.py "
              f"--sizes {' '.join(map(str, args.sizes))} --max-length {args.max_length}{flags}`, alone on the machine; tiny "
              f"random Llama RM (2 layers, hidden 64), SmolLM2's tokenizer, float32. The {TOP_PROBES} slowest probes "
              f"at the largest size:\n\n{table(rows)}\n")
    publish(report, RESULTS, "Scale benchmark: the whole audit at 1k to 100k eval pairs", write=not args.no_write)


if __name__ == "__main__":
    main()
