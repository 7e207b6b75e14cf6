"""Length-grouped batches of encoded pairs, their collation and the padded-token fraction.

Sequences of similar length go in the same batch so that padding (compute spent on nothing)
stays small; batch order is still shuffled so that training does not see a length curriculum.
Batch order depends only on (seed, epoch), never on the number of processes: accelerate splits
each global batch across processes, so one process and N processes see the same global batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from rmaudit.prefix_sharing import common_prefix

GROUP_BATCHES = 64  # batches per length-sorted group: large enough to pad little, small enough to stay random


@dataclass
class EncodedPair:
    """One preference pair as token ids (prompt + response rendered with the chat template)."""

    chosen_ids: list[int]
    rejected_ids: list[int]
    margin: float | None = None

    @property
    def length(self) -> int:
        return max(len(self.chosen_ids), len(self.rejected_ids))

    @property
    def shared(self) -> int:
        """Tokens both sides share from the start, each keeping one of its own (where its reward is read)."""
        return min(common_prefix(self.chosen_ids, self.rejected_ids), len(self.chosen_ids) - 1,
                   len(self.rejected_ids) - 1)

    @property
    def packed_length(self) -> int:
        """Width of the pair packed into one row: the shared tokens once, then each side's own."""
        return len(self.chosen_ids) + len(self.rejected_ids) - self.shared


class PairDataset(torch.utils.data.Dataset):
    """A sequence of EncodedPair (a list, an EncodedPairStore) as a map-style dataset; not copied."""

    def __init__(self, pairs: Sequence[EncodedPair]):
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> EncodedPair:
        return self.pairs[index]


class LengthGroupedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of indices grouped by length.

    ``shuffle=True`` (training): shuffle with a generator seeded by (seed, epoch), sort each group of
    GROUP_BATCHES batches by length, cut it into batches, shuffle the batch order; the incomplete
    last batch is dropped so that every optimizer step sees the same number of pairs.
    ``shuffle=False`` (evaluation): sort everything by length and keep every pair.
    ``set_epoch`` and ``skip`` let a resumed run continue at exactly the same batch.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, shuffle: bool = True):
        self.lengths = list(lengths)
        self.batch_size = batch_size  # accelerate reads this to split global batches across processes
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.skip_batches = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip(self, n_batches: int) -> None:
        """Skip the first ``n_batches`` of the next iteration (resume mid-epoch)."""
        self.skip_batches = n_batches

    def epoch_batches(self) -> list[list[int]]:
        """All batches of the current epoch, in order."""
        if not self.shuffle:
            order = sorted(range(len(self.lengths)), key=lambda i: (-self.lengths[i], i))
            return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        group = self.batch_size * GROUP_BATCHES
        batches = []
        for start in range(0, len(order), group):
            chunk = sorted(order[start:start + group], key=lambda i: -self.lengths[i])
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        batches = [b for b in batches if len(b) == self.batch_size]
        permutation = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in permutation]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.epoch_batches()[self.skip_batches:]
        self.skip_batches = 0
        return iter(batches)

    def __len__(self) -> int:
        if self.shuffle:
            return len(self.lengths) // self.batch_size
        return -(-len(self.lengths) // self.batch_size)


def _pad(rows: list[list[int]], length: int, value: int) -> torch.Tensor:
    return torch.tensor([row + [value] * (length - len(row)) for row in rows], dtype=torch.long)


def collate_pairs(pairs: list[EncodedPair], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad chosen and rejected to ONE common length so the step can stack them in one forward.

    Returns ``chosen_ids``, ``chosen_mask``, ``rejected_ids``, ``rejected_mask`` (B, L), ``margin`` (B,),
    0 where a pair has none (a zero margin is the plain Bradley-Terry loss), and ``shared`` (B,).
    """
    length = max(pair.length for pair in pairs)
    chosen = [p.chosen_ids for p in pairs]
    rejected = [p.rejected_ids for p in pairs]
    return {
        "chosen_ids": _pad(chosen, length, pad_token_id),
        "chosen_mask": _pad([[1] * len(r) for r in chosen], length, 0),
        "rejected_ids": _pad(rejected, length, pad_token_id),
        "rejected_mask": _pad([[1] * len(r) for r in rejected], length, 0),
        "margin": torch.tensor([p.margin or 0.0 for p in pairs], dtype=torch.float32),
        # what a packed row forwards once (rmaudit/train/packing.py)
        "shared": torch.tensor([p.shared for p in pairs], dtype=torch.long),
    }


def stack_batch(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of shape (2B, L): chosen rows first, then rejected."""
    return (torch.cat([batch["chosen_ids"], batch["rejected_ids"]]),
            torch.cat([batch["chosen_mask"], batch["rejected_mask"]]))


def padded_fraction(attention_mask: torch.Tensor) -> float:
    """Share of the positions in a padded batch that are padding (wasted compute)."""
    return 1.0 - attention_mask.float().mean().item()
