"""Benchmark of rmaudit's scorer against the straightforward way and the roofline, same texts.

Three ways to reward the chosen and rejected texts of the same held-out hh sample
(``rmaudit.inputs.eval_sample``), alternating in one process for --repeats rounds:

* ``straightforward``: what TRL's evaluation loop and RewardBench do: fixed batches of 16 in
  file order, padded to the longest row, float32, the model's own forward;
* ``rmaudit``: the audit's own path (``AuditContext.score_texts``): weights loaded in the
  machine's fast dtype (what ``--dtype auto`` picks), length-sorted token-budget batches with
  at most 10% padding, shared prefixes forwarded once; and the same without prefix sharing;
* ``rmaudit, float32``: the audit's path with float32 weights, what ``--dtype float32``
  reads: exact, for the price of float32 arithmetic (shown only when the fast dtype is not
  float32 already);
* ``roofline``: the same model in the fast dtype on unpadded input (each text alone): no
  padding at all. In float32 no padding scheme beats it; in bf16 on a 2-core AVX512-BF16
  CPU length-sorted batches did (110%, results/scoring.md), a single row leaving the bf16
  units idle.

Rates are real (unpadded) tokens per second; agreement is the Spearman rank correlation of
rmaudit's rewards with the float32 straightforward ones. Once, untimed, the float32 weights
rounded to the fast dtype are read with float32 arithmetic: the agreement that rounding the
weights alone leaves, a ceiling for any scorer that holds them in that dtype (where the fast
dtype is not float32 itself).

    python benchmarks/bench_scoring.py runs/hh --pairs 64 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "scoring.md"
BATCH = 16


def load(checkpoint: Path, pairs: int, dtype_name: str):
    """(float32 model, model in the audit's dtype as ``rmaudit check`` loads it, texts, token ids)."""
    from rmaudit.inputs import eval_sample, read_checkpoint_manifest
    from rmaudit.modeling.loading import load_reward_model
    from rmaudit.options import AuditOptions
    from rmaudit.scoring import render, tokenize_rendered

    manifest = read_checkpoint_manifest(checkpoint)
    _, sample = eval_sample(checkpoint, AuditOptions(max_pairs=pairs).validated(), manifest, {})
    if not sample:
        raise SystemExit(f"{checkpoint}: no held-out pairs in its manifest's split")
    exact = load_reward_model(checkpoint)
    fast = load_reward_model(checkpoint, dtype=dtype_name)
    texts = [render(exact.tokenizer, c) for p in sample for c in (p.chosen_messages(), p.rejected_messages())]
    ids, _ = tokenize_rendered(exact.tokenizer, texts, manifest.max_length if manifest else None)
    return exact, fast, texts, ids


def straightforward(model, tokenizer, ids) -> np.ndarray:
    import torch

    from rmaudit.scoring import pad_batch

    out = []
    with torch.inference_mode():
        for start in range(0, len(ids), BATCH):
            input_ids, mask = pad_batch(ids[start:start + BATCH], tokenizer.pad_token_id)
            out.append(model(input_ids=input_ids, attention_mask=mask).logits[:, 0].float().numpy())
    return np.concatenate(out)


def rmaudit_scorer(model, tokenizer, texts, max_length, share: bool) -> np.ndarray:
    """The audit's own scoring path (AuditContext.score_texts): weights in the audit's dtype,
    length-sorted token-budget batches capped at 10% padding, shared prefixes."""
    from rmaudit.scoring import padding_cap, score_texts

    return score_texts(model, tokenizer, texts, batch_size=BATCH, max_length=max_length, share_prefixes=share,
                       max_padding=padding_cap("cpu")).rewards


def rounded_weights(exact, fast):
    """A float32 copy of ``exact`` whose weights are rounded to ``fast``'s dtype: the agreement
    that rounding the weights alone leaves, whatever the arithmetic."""
    import copy

    import torch

    dtype = next(fast.parameters()).dtype
    model = copy.deepcopy(exact)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.to(dtype).float())
    return model


def roofline(model, ids) -> None:
    import torch

    with torch.inference_mode():
        for row in ids:
            model(input_ids=torch.tensor([row]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from scipy import stats

    from machine import machine_line, publish
    from rmaudit.devices import configure_cpu_threads, resolve_dtype

    configure_cpu_threads(None)
    dtype_name = resolve_dtype("auto", "cpu")[0]
    exact, fast, texts, ids = load(args.checkpoint, args.pairs, dtype_name)
    tokenizer = exact.tokenizer
    max_length = max(len(r) for r in ids)
    tokens = sum(len(r) for r in ids)
    padded = sum(len(ids[s:s + BATCH]) * max(len(r) for r in ids[s:s + BATCH]) for s in range(0, len(ids), BATCH))
    seconds: dict[str, list[float]] = {"straightforward": [], "rmaudit": [], "rmaudit, no prefix sharing": [],
                                       "rmaudit, float32": [], "roofline": []}
    if dtype_name == "float32":
        del seconds["rmaudit, float32"]
    rewards: dict[str, np.ndarray] = {}
    for round_ in range(args.repeats):
        names = list(seconds) if round_ % 2 == 0 else list(seconds)[::-1]  # alternate the order
        for name in names:
            start = time.perf_counter()
            if name == "straightforward":
                rewards[name] = straightforward(exact.model, tokenizer, ids)
            elif name == "roofline":
                roofline(fast.model, ids)
            elif name == "rmaudit, float32":
                rewards[name] = rmaudit_scorer(exact.model, tokenizer, texts, max_length, share=True)
            else:
                rewards[name] = rmaudit_scorer(fast.model, tokenizer, texts, max_length, share=name == "rmaudit")
            seconds[name].append(time.perf_counter() - start)
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in seconds.items()), file=sys.stderr)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    if dtype_name != "float32":  # float32 weights rounded to float32 are the weights themselves
        rewards["weights rounded"] = rmaudit_scorer(rounded_weights(exact.model, fast.model), tokenizer, texts,
                                                    max_length, share=True)
    rho = {k: float(stats.spearmanr(rewards["straightforward"], v).statistic) for k, v in rewards.items()}
    n = len(texts) // 2
    flips = int((np.sign(rewards["rmaudit"][:n] - rewards["rmaudit"][n:])
                 != np.sign(rewards["straightforward"][:n] - rewards["straightforward"][n:])).sum())
    lines = [
        "## Scoring: rmaudit vs the straightforward way vs the roofline", "",
        f"Machine: {machine_line()}. Run: `python benchmarks/bench_scoring.py {args.checkpoint} --pairs {args.pairs} "
        f"--repeats {args.repeats}` on {date.today().isoformat()}, alone on the machine, the audit's dtype "
        f"{dtype_name} (`--dtype auto`: weights loaded in it). {len(texts)} held-out hh texts, {tokens:,} real "
        f"tokens; file-order batches of {BATCH} pad them to {padded:,} ({1 - tokens / padded:.0%} padding).", "",
        "| scorer | median s | min | max | real tokens/s |", "|---|---:|---:|---:|---:|",
    ]
    for name, values in seconds.items():
        lines.append(f"| {name} | {med[name]:.1f} | {min(values):.1f} | {max(values):.1f} | {tokens / med[name]:,.0f} |")
    lines += ["", f"rmaudit / straightforward speed: **{med['straightforward'] / med['rmaudit']:.2f}x** (goal >= 3x; "
              f"{med['straightforward'] / med['rmaudit, no prefix sharing']:.2f}x without prefix sharing); rmaudit / "
              f"roofline rate: **{med['roofline'] / med['rmaudit']:.0%}** (goal >= 80%); Spearman of rmaudit's rewards "
              f"with the float32 straightforward ones: **{rho['rmaudit']:.5f}** (goal >= 0.999; "
              f"{rho['rmaudit, no prefix sharing']:.5f} without prefix sharing); {flips} of {n} pair verdicts differ "
              f"from float32. Reward std (float32) {np.std(rewards['straightforward']):.3f}."]
    if "weights rounded" in rho:
        lines[-1] += (f" The weights rounded to {dtype_name} and read in float32 arithmetic: Spearman "
                      f"{rho['weights rounded']:.5f}.")
    if "rmaudit, float32" in med:
        lines[-1] += (f" The exact path (`--dtype float32`): {med['straightforward'] / med['rmaudit, float32']:.2f}x "
                      f"the straightforward way, {med['roofline'] / med['rmaudit, float32']:.0%} of the roofline, "
                      f"Spearman {rho['rmaudit, float32']:.5f}.")
    lines.append("")
    report = "\n".join(lines)
    publish(report, RESULTS, "Scoring benchmark", write=not args.no_write)


if __name__ == "__main__":
    main()
