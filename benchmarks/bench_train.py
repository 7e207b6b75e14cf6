"""Benchmark of `rmaudit train` against trl.RewardTrainer: training tokens per second in the same run.

Both trainers start from the same weights (one load, deep-copied), see the same real hh-rlhf
pairs (../shared/data; rmaudit's demo set when absent) for one epoch with the same batch size,
learning rate, dtype and max length (over-length pairs dropped by both, the same rule), and run
their defaults otherwise except that TRL's gradient checkpointing is off as rmaudit's is. The
figure is REAL (non-pad) tokens per second over the whole epoch, so work spent on padding
counts as lost time: rmaudit's length-grouped batches pad little, TRL's random batches pad to
the longest sequence in each batch. Both epochs process the same real
tokens, timed from the start of the first step to the end of the last. On a shared CPU the load
changes from minute to minute, so the trainers alternate for --repeats rounds and each keeps its
best round.

    python benchmarks/bench_train.py                          # SmolLM2-135M, 32 pairs, writes results/train.md
    python benchmarks/bench_train.py --model tiny --pairs 32 --no-write     # quick look on a random 4-layer Llama
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rmaudit.data import builtin_demo_path, load_pairs  # noqa: E402
from rmaudit.modeling.builtin_models import SMOLLM2_GGUF, require_smollm2_dir  # noqa: E402
from rmaudit.modeling.loading import load_reward_model  # noqa: E402
from rmaudit.train.config import build_config  # noqa: E402
from rmaudit.train.encode import encode_pairs  # noqa: E402
from rmaudit.train.recipe import train  # noqa: E402

HH = REPO.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"


def load_model(kind: str):
    if kind == "smollm2":
        return load_reward_model(str(require_smollm2_dir()), gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    from transformers import LlamaConfig, LlamaForCausalLM

    from rmaudit.modeling.loading import load_tokenizer

    folder = Path(tempfile.mkdtemp(prefix="bench-tiny-"))
    tokenizer, _ = load_tokenizer(str(require_smollm2_dir()), gguf_file=SMOLLM2_GGUF)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return load_reward_model(str(folder), dtype=torch.float32)


def usable_pairs(loaded, n: int, max_length: int):
    """The first n pairs that fit max_length (both trainers would drop the others)."""
    pairs = load_pairs(HH if HH.is_file() else builtin_demo_path(), limit=4 * n)
    keep = []
    for pair in pairs:
        if encode_pairs(loaded.tokenizer, [pair], max_length, "drop")[1].kept:
            keep.append(pair)
        if len(keep) == n:
            break
    return keep


def run_rmaudit(loaded, pairs, args, work: Path) -> dict:
    data = work / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": [{"role": "assistant", "content": p.chosen}],
                                        "rejected": [{"role": "assistant", "content": p.rejected}]}) + "\n"
                            for p in pairs))
    config = build_config(overrides=dict(
        data=str(data), out=str(work / "rmaudit"), eval_fraction=0.0, batch_size=args.batch_size, epochs=1,
        lr=args.lr, warmup_ratio=0.0, max_length=args.max_length, truncation="drop", dtype=args.dtype,
        log_every=1, progress=False))
    train(config, loaded=loaded)
    records = [json.loads(line) for line in (work / "rmaudit" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "train"]
    tokens = [b["tokens_seen"] - a["tokens_seen"] for a, b in zip([{"tokens_seen": 0}, *steps], steps)]
    seconds = sum(t / r["tokens_per_s"] for t, r in zip(tokens, steps))
    return {"tokens": sum(tokens), "seconds": seconds, "steps": len(steps),
            "padded_fraction": sum(r["padded_fraction"] for r in steps) / len(steps),
            "final_loss": steps[-1]["loss"]}


def run_trl(loaded, pairs, args, work: Path) -> dict:
    import datasets
    import trl
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.start: float | None = None
            self.end = 0.0

        def on_step_begin(self, *_, **__):
            self.start = self.start or time.perf_counter()

        def on_step_end(self, *_, **__):
            self.end = time.perf_counter()

    rows = [{"prompt": p.prompt, "chosen": [{"role": "assistant", "content": p.chosen}],
             "rejected": [{"role": "assistant", "content": p.rejected}]} for p in pairs]
    config = trl.RewardConfig(
        output_dir=str(work / "trl"), per_device_train_batch_size=args.batch_size, num_train_epochs=1,
        learning_rate=args.lr, warmup_steps=0, bf16=args.dtype == "bfloat16", gradient_checkpointing=False,
        max_length=args.max_length, logging_steps=1, report_to="none", save_strategy="no", use_cpu=True,
        dataloader_drop_last=True, seed=0)
    clock = StepClock()
    trainer = trl.RewardTrainer(model=loaded.model, args=config, train_dataset=datasets.Dataset.from_list(rows),
                                processing_class=loaded.tokenizer, callbacks=[clock])
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    return {"tokens": int(logs[-1]["num_tokens"]), "seconds": clock.end - clock.start, "steps": len(logs),
            "final_loss": logs[-1]["loss"]}


def write_markdown(path: Path, args, ours: dict, theirs: dict) -> None:
    ours_tps, theirs_tps = ours["tokens"] / ours["seconds"], theirs["tokens"] / theirs["seconds"]
    lines = [
        "# `rmaudit train` vs `trl.RewardTrainer`: training throughput",
        "",
        f"Command: `python benchmarks/bench_train.py --model {args.model} --pairs {args.pairs} "
        f"--batch-size {args.batch_size} --max-length {args.max_length} --dtype {args.dtype} "
        f"--repeats {args.repeats}` (best of {args.repeats} alternating rounds per trainer)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs while measured), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads. Data: "
        f"{'real hh-rlhf harmless-base rows' if HH.is_file() else 'the built-in demo set'}; one epoch, "
        "same initial weights, same pairs, same hyperparameters.",
        "",
        "| trainer | steps | real tokens | seconds | real tokens/s | padded share | final loss |",
        "|---|---|---|---|---|---|---|",
        f"| rmaudit | {ours['steps']} | {ours['tokens']} | {ours['seconds']:.1f} | {ours_tps:.1f} | "
        f"{ours['padded_fraction']:.3f} | {ours['final_loss']:.4f} |",
        f"| trl.RewardTrainer | {theirs['steps']} | {theirs['tokens']} | {theirs['seconds']:.1f} | "
        f"{theirs_tps:.1f} | n/a | {theirs['final_loss']:.4f} |",
        "",
        f"**Ratio rmaudit / TRL: {ours_tps / theirs_tps:.2f}x** real tokens per second.",
        "",
        "Real tokens exclude padding, so the ratio credits length-grouped batching (less compute on pads);",
        "per-step arithmetic is the same (one stacked forward, mask/last-token pooling, AdamW, clip 1.0).",
        "The CPU was shared with other jobs, so absolute figures vary between runs; the ratio is taken",
        "within one run.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2")
    parser.add_argument("--pairs", type=int, default=32, help="a multiple of --batch-size")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    initial = load_model(args.model)
    pairs = usable_pairs(initial, args.pairs, args.max_length)
    rounds: dict[str, list[dict]] = {"rmaudit": [], "trl": []}
    for i in range(args.repeats):
        order = [("rmaudit", run_rmaudit), ("trl", run_trl)]
        for name, run in order if i % 2 == 0 else order[::-1]:
            with tempfile.TemporaryDirectory() as work:
                rounds[name].append(run(copy.deepcopy(initial), pairs, args, Path(work)))
    ours, theirs = (max(rounds[k], key=lambda r: r["tokens"] / r["seconds"]) for k in ("rmaudit", "trl"))
    assert ours["tokens"] == theirs["tokens"], "both trainers must see the same real tokens"
    print(json.dumps({"rmaudit": ours, "trl": theirs,
                      "ratio": (ours["tokens"] / ours["seconds"]) / (theirs["tokens"] / theirs["seconds"])}))
    if not args.no_write:
        write_markdown(args.out, args, ours, theirs)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
