"""Ablation: a training step's packed forward as padded rows under one 4-D tree mask (0.5.3)
against one row with no padding read through rmaudit's tree attention (0.5.18).

Both forward each pair's shared prompt once. The mask rows are padded to the batch's widest
pair and attend over the whole row width under a boolean mask; the tree row holds no pads and
runs one SDPA call per segment over its prompt and itself only (rmaudit/tree_attention.py).
The steps run in one process, alternating the two forwards, forward + backward of the
Bradley-Terry loss, on the same batches of real hh pairs, so the rounds pair up. Printed,
not written: the reading goes into results/train.md by hand.

    python benchmarks/ablate_tree_packing.py --pairs 64 --batch-size 8 --repeats 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from rmaudit.modeling.pooling import apply_head, reward_body
from rmaudit.tree_attention import attention_implementation

REPO = Path(__file__).resolve().parents[1]


# ---- before 0.5.18: padded packed rows under one (B, 1, W, W) tree mask, kept here as the baseline

PAD, SHARED, CHOSEN, REJECTED = -1, 0, 1, 2  # what each column of a packed row holds


def packed_widths(attention_mask: torch.Tensor, shared: torch.Tensor) -> list[int]:
    """Columns of each pair's packed row, from the stacked (2B, L) mask: chosen + rejected - shared."""
    lengths = attention_mask.sum(dim=1).tolist()
    n_pairs = len(shared)
    return [lengths[i] + lengths[i + n_pairs] - int(shared[i]) for i in range(n_pairs)]


def mask_rows_rewards(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      shared: torch.Tensor) -> torch.Tensor:
    """(2B,) float32 rewards of a training batch, chosen rows then rejected rows as in the
    stacked (2B, L) right-padded input, pair i sharing its first ``shared[i]`` tokens (fewer
    than either side's length; 0 is allowed). One forward over B packed rows; differentiable."""
    ids, positions, segments, reads = _pack_padded_rows(input_ids, attention_mask, shared)
    device = input_ids.device
    attention = attention_implementation(model)
    mask = _tree_mask(segments.to(device), additive=attention == "eager")
    hidden = reward_body(model)(input_ids=ids.to(device), attention_mask=mask, position_ids=positions.to(device),
                                use_cache=False).last_hidden_state
    rows = torch.arange(len(shared), device=device).repeat(2)
    return apply_head(model, hidden[rows, reads.to(device)])


def _pack_padded_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      shared: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, positions, segments) of the (B, W) packed rows, and the (2B,) columns where the
    chosen then the rejected rewards are read (each side's last token)."""
    n_pairs = len(shared)
    lengths = attention_mask.sum(dim=1).tolist()
    widths = packed_widths(attention_mask, shared)
    width = max(widths)
    ids = torch.zeros((n_pairs, width), dtype=torch.long)
    positions = torch.zeros((n_pairs, width), dtype=torch.long)
    segments = torch.full((n_pairs, width), PAD, dtype=torch.long)
    reads = torch.zeros(2 * n_pairs, dtype=torch.long)
    source = input_ids.cpu()
    for i in range(n_pairs):
        common, chosen, rejected = int(shared[i]), lengths[i], lengths[i + n_pairs]
        ids[i, :chosen] = source[i, :chosen]
        ids[i, chosen:widths[i]] = source[i + n_pairs, common:rejected]
        positions[i, :chosen] = torch.arange(chosen)
        positions[i, chosen:widths[i]] = torch.arange(common, rejected)
        segments[i, :common], segments[i, common:chosen], segments[i, chosen:widths[i]] = SHARED, CHOSEN, REJECTED
        reads[i], reads[i + n_pairs] = chosen - 1, widths[i] - 1
    return ids, positions, segments, reads


def _tree_mask(segments: torch.Tensor, additive: bool) -> torch.Tensor:
    """(B, 1, W, W) mask: query q sees key k when k <= q and k is a shared token or of q's own
    side. A pad column sees itself only, so no softmax row is empty (its output is never read).
    Boolean (True: attend) for sdpa; 0 / the float32 minimum for eager, which adds it."""
    width = segments.size(1)
    columns = torch.arange(width, device=segments.device)
    causal = columns[None, :] <= columns[:, None]
    key, query = segments[:, None, :], segments[:, :, None]
    allowed = causal[None] & (key != PAD) & ((key == SHARED) | (key == query))
    allowed |= torch.eye(width, dtype=torch.bool, device=segments.device)[None]
    if not additive:
        return allowed[:, None]
    blocked = torch.zeros(allowed.shape, dtype=torch.float32, device=segments.device)
    return blocked.masked_fill(~allowed, torch.finfo(torch.float32).min)[:, None]


def batches(loaded, n_pairs: int, batch_size: int, max_length: int) -> list[dict]:
    from bench_train import split_pairs

    from rmaudit.train.batching import LengthGroupedBatchSampler, collate_pairs
    from rmaudit.train.encoded_store import pair_lengths
    from rmaudit.train.encode import encode_pairs

    pairs, _ = split_pairs(loaded, n_pairs, 0, max_length)
    encoded, _ = encode_pairs(loaded.tokenizer, pairs, max_length, "drop")
    items = list(encoded)
    sampler = LengthGroupedBatchSampler(pair_lengths(items, packed=True), batch_size, seed=0, shuffle=True)
    return [collate_pairs([items[i] for i in chunk], loaded.tokenizer.pad_token_id) for chunk in sampler]


def step(model, batch, rewards_of) -> float:
    import torch

    from rmaudit.train.batching import stack_batch

    model.zero_grad(set_to_none=True)
    input_ids, mask = stack_batch(batch)
    rewards = rewards_of(model, input_ids, mask, batch["shared"])
    n = len(batch["shared"])
    loss = -torch.nn.functional.logsigmoid(rewards[:n] - rewards[n:]).mean()
    loss.backward()
    return float(loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_train import initial_model
    from machine import alternating_rounds, machine_line, paired_speed_lines

    from rmaudit.devices import configure_cpu_threads
    from rmaudit.train import packing
    from rmaudit.train.recipe import disable_dropout

    configure_cpu_threads(None)
    loaded = initial_model("smollm2")
    model = loaded.model.float().train()
    disable_dropout(model)
    work = batches(loaded, args.pairs, args.batch_size, args.max_length)
    ways = {"mask rows": mask_rows_rewards, "tree row": packing.packed_pair_rewards}
    for rewards_of in ways.values():  # warm-up, untimed; the losses must agree
        losses = [step(model, b, rewards_of) for b in work[:2]]
        print(f"warm-up losses {', '.join(f'{x:.6f}' for x in losses)}")
    seconds = alternating_rounds(list(ways), args.repeats,
                                 lambda name: [step(model, batch, ways[name]) for batch in work])
    tokens = sum(int(b["chosen_mask"].sum() + b["rejected_mask"].sum() - b["shared"].sum()) for b in work)
    print(f"Machine: {machine_line()}; SmolLM2-135M float32, {len(work)} batches of {args.batch_size} hh pairs "
          f"({tokens} packed tokens), {args.repeats} rounds")
    print("\n".join(paired_speed_lines(seconds, "mask rows", "mask rows")))


if __name__ == "__main__":
    main()
