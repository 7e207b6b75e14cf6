"""Benchmark of `rmaudit train` against trl.RewardTrainer: real tokens per second in the same run.

Both trainers start from the same weights (loaded once, seeded head, saved to a temporary
folder that every round loads), see the same real hh-rlhf pairs (../shared/data; rmaudit's
demo set when absent) for --steps optimizer steps of --batch-size pairs, with the same
learning rate, dtype and max length (over-length pairs are left out before either starts,
so both see the same real tokens), and run their defaults otherwise except that TRL's
gradient checkpointing is off as rmaudit's is. Each round runs each trainer in its own
process, alternating which goes first, so peak RSS (``wait4``) is each trainer's own.

The figure is REAL (non-pad) tokens per second from the start of the first step to the end
of the last, so compute spent on padding counts as lost time; the padded share is counted
from the batches each trainer actually ran (TRL's through its ``compute_loss`` inputs).
After the first round, both trained models reward the same held-out pairs (the rows after
the training ones whose prompts training never saw) with rmaudit's scorer, and the accuracy
is reported with a prompt-clustered 95% interval.

rmaudit runs as it trains by default (each pair packed into one row, its shared prompt
forwarded once: rmaudit/train/packing.py) and, unless ``--trainers`` leaves it out, with
``--no-share-prefixes`` (one plain stacked forward), so the table separates what length
grouping and what packing bring.

The training limit is the same model's forward+backward+AdamW rate on rows of real tokens
with no padding at all (the training pairs' token ids concatenated and cut into rows of
their mean length, as many rows per step as rmaudit's stacked batch): what a trainer that
wasted nothing would reach on this machine.

``--dtype auto`` (the default) is what ``rmaudit train`` picks: bf16 autocast where the CPU
runs bf16 natively (AMX, AVX512-BF16), float32 elsewhere (a bf16 matmul on AVX2 is 50-80x
slower); both trainers then run that dtype.

    python benchmarks/bench_train.py --steps 50 --repeats 5        # SmolLM2-135M, writes results/train.md
    python benchmarks/bench_train.py --model tiny --steps 8 --repeats 1 --no-write   # quick look
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

HH = REPO.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
RESULTS = REPO / "benchmarks" / "results" / "train.md"
TRAINERS = ("rmaudit", "trl", "rmaudit-stacked")  # rmaudit-stacked: --no-share-prefixes


# ----------------------------------------------------------------------------- preparation (parent)

def initial_model(kind: str):
    """The starting RewardModel: SmolLM2-135M with a seeded head, or a random 4-layer Llama."""
    import torch

    from rmaudit.modeling.builtin_models import SMOLLM2_GGUF, require_smollm2_dir
    from rmaudit.modeling.loading import load_reward_model, load_tokenizer

    if kind == "smollm2":
        return load_reward_model(str(require_smollm2_dir()), gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(tempfile.mkdtemp(prefix="bench-tiny-"))
    tokenizer, _ = load_tokenizer(str(require_smollm2_dir()), gguf_file=SMOLLM2_GGUF)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return load_reward_model(str(folder), dtype=torch.float32)


def split_pairs(loaded, n_train: int, n_heldout: int, max_length: int):
    """The first n_train pairs that fit max_length, then n_heldout more whose prompts are not
    among the training ones (both trainers would drop over-length pairs)."""
    from rmaudit.data import builtin_demo_path, load_pairs
    from rmaudit.train.encode import encode_pairs

    train, heldout, seen = [], [], set()
    for pair in load_pairs(HH if HH.is_file() else builtin_demo_path(), limit=4 * (n_train + n_heldout)):
        if not encode_pairs(loaded.tokenizer, [pair], max_length, "drop")[1].kept:
            continue
        if len(train) < n_train:
            train.append(pair)
            seen.add(pair.prompt_text())
        elif pair.prompt_text() not in seen and len(heldout) < n_heldout:
            heldout.append(pair)
    if len(train) < n_train:
        raise SystemExit(f"only {len(train)} pairs fit --max-length {max_length}; need {n_train}")
    return train, heldout


def write_jsonl(path: Path, pairs) -> None:
    path.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": [{"role": "assistant", "content": p.chosen}],
                                        "rejected": [{"role": "assistant", "content": p.rejected}]}) + "\n"
                            for p in pairs), encoding="utf-8")


# ----------------------------------------------------------------------------- one trainer (child)

def child_rmaudit(folder: Path, work: Path, args, share_prefixes: bool = True) -> dict:
    from rmaudit.modeling.loading import load_reward_model
    from rmaudit.train.config import build_config
    from rmaudit.train.recipe import train

    config = build_config(overrides=dict(
        data=str(work / "train.jsonl"), out=str(work / "rmaudit"), eval_fraction=0.0, batch_size=args.batch_size,
        epochs=1, lr=args.lr, warmup_ratio=0.0, max_length=args.max_length, truncation="drop", dtype=args.dtype,
        log_every=1, progress=False, share_prefixes=share_prefixes))
    shutil.rmtree(work / "rmaudit", ignore_errors=True)  # the previous round's run
    train(config, loaded=load_reward_model(str(folder)))
    steps = [r for r in map(json.loads, (work / "rmaudit" / "metrics.jsonl").read_text().splitlines())
             if r["kind"] == "train"]
    tokens = [b["tokens_seen"] - a["tokens_seen"] for a, b in zip([{"tokens_seen": 0}, *steps], steps)]
    seconds = sum(t / r["tokens_per_s"] for t, r in zip(tokens, steps))
    padded = sum(t / (1 - r["padded_fraction"]) for t, r in zip(tokens, steps))
    return {"tokens": sum(tokens), "seconds": seconds, "steps": len(steps), "padded_share": 1 - sum(tokens) / padded,
            "final_loss": steps[-1]["loss"], "checkpoint": work / "rmaudit"}


def child_trl(folder: Path, work: Path, args) -> dict:
    import datasets
    import trl
    from transformers import TrainerCallback

    from rmaudit.modeling.loading import load_reward_model

    class StepClock(TrainerCallback):
        start: float | None = None
        end = 0.0

        def on_step_begin(self, *_, **__):
            self.start = self.start or time.perf_counter()

        def on_step_end(self, *_, **__):
            self.end = time.perf_counter()

    class CountingRewardTrainer(trl.RewardTrainer):
        """Counts the padded cells of every batch TRL's collator builds (real ones: its mask)."""

        cells = real = 0

        def compute_loss(self, model, inputs, *rest, **kwargs):
            if model.training:
                self.cells += inputs["input_ids"].numel()
                self.real += int(inputs["attention_mask"].sum())
            return super().compute_loss(model, inputs, *rest, **kwargs)

    rows = [json.loads(line) for line in (work / "train.jsonl").read_text().splitlines()]
    config = trl.RewardConfig(
        output_dir=str(work / "trl"), per_device_train_batch_size=args.batch_size, num_train_epochs=1,
        learning_rate=args.lr, warmup_steps=0, bf16=args.dtype == "bfloat16", gradient_checkpointing=False,
        max_length=args.max_length, logging_steps=1, report_to="none", save_strategy="no", use_cpu=True,
        dataloader_drop_last=True, seed=0)
    loaded, clock = load_reward_model(str(folder)), StepClock()
    trainer = CountingRewardTrainer(model=loaded.model, args=config, train_dataset=datasets.Dataset.from_list(rows),
                                    processing_class=loaded.tokenizer, callbacks=[clock])
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    return {"tokens": trainer.real, "seconds": clock.end - clock.start, "steps": len(logs),
            "padded_share": 1 - trainer.real / trainer.cells, "final_loss": logs[-1]["loss"],
            "trained": loaded}


def child_limit(folder: Path, work: Path, args) -> dict:
    """Forward+backward+AdamW with no padding at all: the rate no batching scheme can beat."""
    import torch

    from rmaudit.data import load_pairs
    from rmaudit.modeling.loading import load_reward_model
    from rmaudit.train.encode import encode_pairs

    loaded = load_reward_model(str(folder))
    encoded, _ = encode_pairs(loaded.tokenizer, load_pairs(work / "train.jsonl"), args.max_length, "drop")
    stream = [t for e in encoded for ids in (e.chosen_ids, e.rejected_ids) for t in ids]
    width = len(stream) // (2 * len(encoded))
    rows = torch.tensor(stream[:len(stream) // width * width]).view(-1, width)
    per_step, steps = 2 * args.batch_size, min(args.steps, 12)
    model = loaded.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, fused=True)  # the fastest AdamW torch has
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
    seconds = tokens = 0
    for step in range(steps + 2):  # two warm-up steps, not timed
        batch = rows[(step * per_step) % len(rows):][:per_step]
        start = time.perf_counter()
        with autocast:
            loss = model(input_ids=batch).logits.float().mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= 2:
            seconds, tokens = seconds + time.perf_counter() - start, tokens + batch.numel()
    return {"tokens": tokens, "seconds": seconds, "steps": steps, "row_tokens": width}


def heldout_accuracy(result: dict, work: Path, args) -> dict:
    """Accuracy of the trained model on the held-out pairs, rmaudit's scorer for both
    trainers, with a 95% interval that resamples prompts."""
    import numpy as np
    import torch

    from rmaudit.data import load_pairs
    from rmaudit.modeling.loading import load_reward_model
    from rmaudit.scoring import render, score_texts
    from rmaudit.stats import cluster_bootstrap_interval, pair_credit

    # rmaudit's model as an audit reads it: its saved checkpoint; TRL's as its trainer left it.
    trained = result.pop("trained", None) or load_reward_model(str(result.pop("checkpoint")))
    pairs, tokenizer = load_pairs(work / "heldout.jsonl"), trained.tokenizer
    texts = [render(tokenizer, m) for p in pairs for m in (p.chosen_messages(), p.rejected_messages())]
    rewards = score_texts(trained.model.eval(), tokenizer, texts, dtype=getattr(torch, args.dtype),
                          max_length=args.max_length).rewards
    credit = pair_credit(np.asarray(rewards[0::2]) - np.asarray(rewards[1::2]))
    low, high = cluster_bootstrap_interval(credit, np.array([p.prompt_text() for p in pairs]))
    return {"accuracy": float(credit.mean()), "accuracy_ci": [low, high], "heldout_pairs": len(pairs)}


def run_child(args) -> None:
    from rmaudit.devices import configure_cpu_threads

    configure_cpu_threads(None)
    runner = {"rmaudit": child_rmaudit, "trl": child_trl, "limit": child_limit,
              "rmaudit-stacked": lambda *a: child_rmaudit(*a, share_prefixes=False)}[args.child]
    result = runner(args.folder, args.work, args)
    if args.accuracy:
        result.update(heldout_accuracy(result, args.work, args))
    result.pop("trained", None)
    print(json.dumps({k: v for k, v in result.items() if k != "checkpoint"}))


# ----------------------------------------------------------------------------- rounds and the table (parent)

def measured(name: str, args, folder: Path, work: Path, accuracy: bool) -> dict:
    from machine import timed

    cmd = [sys.executable, __file__, "--child", name, "--folder", str(folder), "--work", str(work),
           "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
           "--lr", str(args.lr), "--dtype", args.dtype] + (["--accuracy"] if accuracy else [])
    wall, peak, out = timed(cmd, REPO)
    result = json.loads(out.strip().splitlines()[-1])
    print(f"{name}: {result['tokens'] / result['seconds']:.0f} real tokens/s, peak {peak:.0f} MiB", file=sys.stderr)
    return {**result, "wall_s": wall, "peak_mb": peak, "rate": result["tokens"] / result["seconds"]}


def spread(values: list[float], fmt: str = "{:.1f}") -> str:
    return f"{fmt.format(statistics.median(values))} | {fmt.format(min(values))} | {fmt.format(max(values))}"


def summary(rounds: dict[str, list[dict]], limit: dict, args, dtype_reason: str) -> str:
    from machine import machine_line

    ours, theirs, stacked = rounds["rmaudit"], rounds["trl"], rounds.get("rmaudit-stacked", [])
    ratio = statistics.median(o["rate"] / t["rate"] for o, t in zip(ours, theirs))
    stacked_ratio = (f"; with --no-share-prefixes (stacked) "
                     f"{statistics.median(o['rate'] / t['rate'] for o, t in zip(stacked, theirs)):.2f}x" if stacked else "")
    limit_share = statistics.median(o["rate"] for o in ours) / limit["rate"]
    lines = [
        f"## {date.today().isoformat()}, {args.model}, {args.steps} steps of {args.batch_size} pairs, "
        f"{args.repeats} round{'s' if args.repeats > 1 else ''}", "",
        f"Machine: {machine_line()}. Run: `python benchmarks/bench_train.py --model {args.model} --steps {args.steps} "
        f"--batch-size {args.batch_size} --max-length {args.max_length} --repeats {args.repeats}` on "
        f"{date.today().isoformat()}, alone on the machine; dtype {args.dtype} ({dtype_reason}). "
        f"{'Real hh-rlhf harmless-base rows' if HH.is_file() else 'The built-in demo set'}, "
        f"{args.steps * args.batch_size} training pairs, one epoch, same initial weights and hyperparameters; "
        f"{args.repeats} alternating rounds, each trainer in its own process.", "",
        "| trainer | steps | real tokens | real tokens/s: median | min | max | padded share | peak RSS MiB: median "
        "| min | max | final loss | held-out accuracy (95% CI) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, runs in (("rmaudit", ours), ("rmaudit --no-share-prefixes", stacked), ("trl.RewardTrainer", theirs)):
        if not runs:
            continue
        first = runs[0]
        lines.append(f"| {name} | {first['steps']} | {first['tokens']:,} | {spread([r['rate'] for r in runs], '{:.0f}')} | "
                     f"{first['padded_share']:.1%} | {spread([r['peak_mb'] for r in runs], '{:.0f}')} | "
                     f"{first['final_loss']:.4f} | {first['accuracy']:.3f} [{first['accuracy_ci'][0]:.3f}, "
                     f"{first['accuracy_ci'][1]:.3f}] on {first['heldout_pairs']} pairs |")
    lines += [
        f"| training limit (no padding) | {limit['steps']} | {limit['tokens']:,} | {limit['rate']:.0f} | | | 0% | "
        f"{limit['peak_mb']:.0f} | | | | rows of {limit['row_tokens']} tokens, 1 round |", "",
        f"**rmaudit / TRL: {ratio:.2f}x** real tokens/s (median of the per-round ratios; goal >= 2x){stacked_ratio}; "
        f"rmaudit at **{limit_share:.0%}** of the training limit (goal >= 60%; packing forwards a pair's shared prompt "
        "once, tokens the limit forwards twice, so it can pass 100%).", "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2")
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps per trainer and round")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--dtype", choices=("auto", "bfloat16", "float32"), default="auto")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--heldout", type=int, default=64, help="held-out pairs for the accuracy after round 1")
    parser.add_argument("--trainers", default=",".join(TRAINERS),
                        help="comma-separated trainers to run (rmaudit and trl at least)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", choices=(*TRAINERS, "limit"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--accuracy", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_child(args)
    from rmaudit.devices import resolve_dtype

    args.dtype, dtype_reason = resolve_dtype(args.dtype, "cpu")
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work, folder = Path(tmp), Path(tmp) / "initial"
        loaded = initial_model(args.model)
        loaded.model.save_pretrained(folder)
        loaded.tokenizer.save_pretrained(folder)
        train_pairs, heldout = split_pairs(loaded, args.steps * args.batch_size, args.heldout, args.max_length)
        del loaded
        write_jsonl(work / "train.jsonl", train_pairs)
        write_jsonl(work / "heldout.jsonl", heldout)
        trainers = [name for name in TRAINERS if name in args.trainers.split(",")]
        rounds: dict[str, list[dict]] = {name: [] for name in trainers}
        for i in range(args.repeats):
            for name in trainers if i % 2 == 0 else trainers[::-1]:
                rounds[name].append(measured(name, args, folder, work, accuracy=i == 0))
        limit = measured("limit", args, folder, work, accuracy=False)
    if rounds["rmaudit"][0]["tokens"] != rounds["trl"][0]["tokens"]:
        print(f"warning: real tokens differ (rmaudit {rounds['rmaudit'][0]['tokens']}, TRL {rounds['trl'][0]['tokens']})",
              file=sys.stderr)
    from machine import publish

    report = summary(rounds, limit, args, dtype_reason)
    publish(report, RESULTS, "`rmaudit train` vs `trl.RewardTrainer`: training throughput", write=not args.no_write)


if __name__ == "__main__":
    main()
