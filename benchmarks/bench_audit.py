"""Benchmark of the whole audit against its floor: one plain transformers forward pass.

The floor is what any audit must at least do: read every distinct held-out text once. It
runs in its own process as a plain transformers job would: load the checkpoint with
``AutoModelForSequenceClassification`` in the machine's fast dtype (what ``--dtype auto``
picks), render the chosen and rejected conversations of the SAME held-out sample the audit
scores (``rmaudit.inputs.eval_sample``) with the tokenizer's chat template, truncate from the
left to the same max length, sort by length and run batches of 16 under ``inference_mode``.

The audit is ``rmaudit check CKPT --probes all --max-pairs N`` in its own process with the
same dtype (policy probes skip: no --policy is given, as the issue excludes them). Floor and
audit alternate for --repeats rounds; each process's wall time (imports, loading and work:
both pay the same start-up) and peak RSS (``wait4``) are recorded, with the floor's forward
time on its own and the audit's seconds per probe from its report.json.

    python benchmarks/bench_audit.py runs/hh --pairs 256 --repeats 5      # writes results/audit.md
    python benchmarks/bench_audit.py runs/hh --pairs 32 --repeats 1 --no-write
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from machine import publish, timed

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "audit.md"
FLOOR_BATCH = 16


def floor_child(checkpoint: Path, pairs: int, dtype_name: str) -> dict:
    """One plain forward pass over the audit's distinct held-out texts, in this process."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rmaudit.inputs import eval_sample, read_checkpoint_manifest
    from rmaudit.options import AuditOptions

    start = time.perf_counter()
    manifest = read_checkpoint_manifest(checkpoint)
    _, sample = eval_sample(checkpoint, AuditOptions(max_pairs=pairs).validated(), manifest, {})
    if not sample:
        print(f"{checkpoint}: no held-out pairs in its manifest's split (run from the folder its data paths "
              "are relative to)", file=sys.stderr)
        raise SystemExit(2)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, dtype=getattr(torch, dtype_name)).eval()
    loaded = time.perf_counter()
    conversations = [p.chosen_messages() for p in sample] + [p.rejected_messages() for p in sample]
    texts = sorted({tokenizer.apply_chat_template(c, tokenize=False) for c in conversations})
    tokenizer.truncation_side = "left"
    ids = tokenizer(texts, truncation=True, max_length=manifest.max_length if manifest else 4096)["input_ids"]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    n_tokens = sum(len(r) for r in ids)
    with torch.inference_mode():
        for b in range(0, len(order), FLOOR_BATCH):
            batch = tokenizer.pad({"input_ids": [ids[i] for i in order[b:b + FLOOR_BATCH]]}, return_tensors="pt")
            model(**batch)
    done = time.perf_counter()
    return {"texts": len(texts), "tokens": n_tokens, "load_s": loaded - start, "forward_s": done - loaded}


def run_floor(args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, str(args.checkpoint), "--pairs", str(args.pairs), "--dtype", args.dtype, "--floor-child"]
    wall, peak, out = timed(cmd, REPO)
    return {"wall_s": wall, "peak_mb": peak, **json.loads(out.strip().splitlines()[-1])}


def run_audit(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "rmaudit", "check", str(args.checkpoint), "--probes", "all", "--max-pairs",
               str(args.pairs), "--dtype", args.dtype, "--out", tmp, "--no-progress"]
        wall, peak, _ = timed(cmd, REPO, ok=(0, 1))  # 1 = the gate failed, still a complete audit
        report = json.loads((Path(tmp) / "report.json").read_text())
    return {"wall_s": wall, "peak_mb": peak, "status": report["gate"],
            "plan": report["context"].get("scoring_plan"),
            "probes": {p["name"]: (p["seconds"], p["status"]) for p in report["probes"]}}


def summary(floors: list[dict], audits: list[dict], args: argparse.Namespace) -> str:
    from machine import machine_line

    med = statistics.median
    f_wall, a_wall = [f["wall_s"] for f in floors], [a["wall_s"] for a in audits]
    f_fwd = [f["forward_s"] for f in floors]
    ratios = [a / f for a, f in zip(a_wall, f_wall)]
    lines = [
        f"## {args.label or 'run'}", "",
        f"Machine: {machine_line()}. Run: `python benchmarks/bench_audit.py {args.checkpoint} --pairs {args.pairs} "
        f"--repeats {args.repeats}` on {date.today().isoformat()}, dtype {args.dtype}, alone on the machine. "
        f"{floors[0]['texts']} distinct held-out texts, {floors[0]['tokens']:,} tokens.", "",
        "| | median | min | max |", "|---|---:|---:|---:|",
        f"| floor: process wall (s) | {med(f_wall):.1f} | {min(f_wall):.1f} | {max(f_wall):.1f} |",
        f"| floor: forward pass only (s) | {med(f_fwd):.1f} | {min(f_fwd):.1f} | {max(f_fwd):.1f} |",
        f"| audit `--probes all`: process wall (s) | {med(a_wall):.1f} | {min(a_wall):.1f} | {max(a_wall):.1f} |",
        f"| **audit / floor (wall, same round)** | **{med(ratios):.2f}x** | {min(ratios):.2f}x | {max(ratios):.2f}x |",
        f"| audit / floor forward only | {med(a_wall) / med(f_fwd):.2f}x | | |",
        f"| floor peak RSS (MiB) | {med(f['peak_mb'] for f in floors):.0f} | | |",
        f"| audit peak RSS (MiB) | {med(a['peak_mb'] for a in audits):.0f} | | |",
    ]
    if audits[0]["plan"]:
        plan = audits[0]["plan"]
        lines.append(f"| audit: the scoring plan, before any probe (s) | {med(a['plan']['seconds'] for a in audits):.1f} "
                     f"| | {plan['distinct_texts_scored']:,} distinct texts |")
    lines += [
        "", f"Audit gate status: {audits[0]['status']}. Seconds per probe (median over rounds):", "",
        "| probe | status | seconds |", "|---|---|---:|",
    ]
    for name, (_, status) in sorted(audits[0]["probes"].items(), key=lambda kv: -kv[1][0]):
        lines.append(f"| {name} | {status} | {med(a['probes'][name][0] for a in audits):.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="an rmaudit checkpoint (its manifest names the held-out split)")
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default=None, help="default: what --dtype auto picks on this machine")
    parser.add_argument("--label", default="")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--floor-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    if args.dtype is None:
        from rmaudit.devices import resolve_dtype

        args.dtype = resolve_dtype("auto", "cpu")[0]
    if args.floor_child:
        print(json.dumps(floor_child(args.checkpoint, args.pairs, args.dtype)))
        return
    floors, audits = [], []
    for round_ in range(args.repeats):
        floors.append(run_floor(args))
        audits.append(run_audit(args))
        print(f"round {round_ + 1}: floor {floors[-1]['wall_s']:.1f} s (forward {floors[-1]['forward_s']:.1f} s), "
              f"audit {audits[-1]['wall_s']:.1f} s", file=sys.stderr, flush=True)
    report = summary(floors, audits, args)
    publish(report, RESULTS, "Whole-audit benchmark: `--probes all` against one plain forward pass", write=not args.no_write)


if __name__ == "__main__":
    main()
