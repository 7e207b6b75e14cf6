"""Benchmark of the policy samples (`policy_rollouts`, `policy_shift`): rmaudit's sampler
(rmaudit/policy_sampler.py) vs transformers' ``generate`` the way rmaudit 0.5.11 called it
(batches of 16 rows in prompt order, left-padded, ``do_sample`` with top-k 0 and top-p 1).

Both draw ``--n`` samples of up to ``--max-new-tokens`` tokens for each of the first
``--prompts`` distinct held-out hh prompts from the builtin SmolLM2-135M-Instruct policy, in
the dtype ``--dtype auto`` picks. Each run is a child process (its peak RSS is its own), the
two alternate, ``--repeats`` rounds; the table reports the sampling time measured inside the
child (model loading excluded), new tokens per second and peak RSS.

The two draw different samples (different random streams), so their new-token counts differ
a little; both are reported.

    python benchmarks/bench_sampling.py                 # 16 prompts x 4, 5 rounds, writes results/sampling.md
    python benchmarks/bench_sampling.py --prompts 4 --repeats 1 --no-write   # quick look
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "sampling.md"
HH = REPO.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
GENERATE_BATCH = 16  # rows per generate call in rmaudit 0.5.11 (max(--batch-size 16, --rollouts 4))


def hh_prompts(count: int) -> list:
    from rmaudit.data import read_pairs
    from rmaudit.rollouts import distinct_prompts

    return distinct_prompts(read_pairs(HH, limit=50 * count).pairs, count)


def with_generate(model, tokenizer, prompts, n: int, max_new_tokens: int) -> list[int]:
    """New tokens of each sample, drawn by ``generate`` as rmaudit 0.5.11 did."""
    import torch

    from rmaudit.rollouts import _stop_ids

    stop, lengths = _stop_ids(model, tokenizer), []
    rows = [p for p in prompts for _ in range(n)]
    torch.manual_seed(0)
    for start in range(0, len(rows), GENERATE_BATCH):
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                 for p in rows[start:start + GENERATE_BATCH]]
        encoded = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**encoded, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                 max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
        for ids in out[:, encoded["input_ids"].shape[1]:].tolist():
            ended = [i for i, t in enumerate(ids) if t in stop]
            lengths.append(ended[0] + 1 if ended else len(ids))
    return lengths


def child(method: str, n_prompts: int, n: int, max_new_tokens: int) -> None:
    from rmaudit.devices import configure_cpu_threads
    from rmaudit.rollouts import BUILTIN, load_policy, sample_rollouts

    configure_cpu_threads(None)
    prompts = hh_prompts(n_prompts)
    model, tokenizer, dtype = load_policy(BUILTIN)
    start = time.perf_counter()
    if method == "rmaudit":
        lengths = [r.n_new_tokens for r in sample_rollouts(model, tokenizer, prompts, n=n, max_new_tokens=max_new_tokens)]
    else:
        lengths = with_generate(model, tokenizer, prompts, n, max_new_tokens)
    print(json.dumps({"seconds": time.perf_counter() - start, "new_tokens": sum(lengths),
                      "ended": sum(length < max_new_tokens for length in lengths), "dtype": dtype}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", choices=["rmaudit", "generate"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    if args.child:
        return child(args.child, args.prompts, args.n, args.max_new_tokens)
    from machine import machine_line, publish, timed

    runs: dict[str, list[dict]] = {"rmaudit": [], "generate": []}
    for round_ in range(args.repeats):
        for method in (list(runs) if round_ % 2 == 0 else list(runs)[::-1]):  # alternate the order
            _, rss, out = timed([sys.executable, __file__, "--child", method, "--prompts", str(args.prompts),
                                 "--n", str(args.n), "--max-new-tokens", str(args.max_new_tokens)], REPO)
            runs[method].append({**json.loads(out.strip().splitlines()[-1]), "rss": rss})
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]['seconds']:.1f} s" for k, v in runs.items()),
              file=sys.stderr)
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("seconds", "new_tokens", "ended", "rss")}
           for k, v in runs.items()}
    lines = [
        "## Policy sampling: rmaudit's sampler vs transformers' generate", "",
        f"Machine: {machine_line()}. Run: `python benchmarks/bench_sampling.py --prompts {args.prompts} --n {args.n} "
        f"--max-new-tokens {args.max_new_tokens} --repeats {args.repeats}` on {date.today().isoformat()}, alone on "
        f"the machine; builtin SmolLM2-135M-Instruct in {runs['rmaudit'][0]['dtype']}, {args.prompts} distinct "
        f"held-out hh prompts x {args.n} samples, temperature 1.", "",
        "| sampler | median s | min | max | new tokens (median) | ended before the limit | new tokens/s | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, values in runs.items():
        seconds = [r["seconds"] for r in values]
        m = med[name]
        lines.append(f"| {name} | {m['seconds']:.1f} | {min(seconds):.1f} | {max(seconds):.1f} | {m['new_tokens']:.0f} "
                     f"| {m['ended']:.0f} of {args.prompts * args.n} | {m['new_tokens'] / m['seconds']:.0f} "
                     f"| {m['rss']:.0f} |")
    rate = (med["rmaudit"]["new_tokens"] / med["rmaudit"]["seconds"]) / (med["generate"]["new_tokens"]
                                                                        / med["generate"]["seconds"])
    lines += ["", f"rmaudit / generate: **{med['generate']['seconds'] / med['rmaudit']['seconds']:.2f}x** by the "
              f"median times, **{rate:.2f}x** by new tokens per second; peak RSS "
              f"{med['rmaudit']['rss'] - med['generate']['rss']:+.0f} MiB."]
    lines.append("")
    publish("\n".join(lines), RESULTS, "Policy sampling benchmark", write=not args.no_write)


if __name__ == "__main__":
    main()
