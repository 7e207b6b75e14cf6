"""The `rmaudit train` recipe: Bradley-Terry reward-model training, top to bottom.

What one run does, in order (each step is one method of :class:`BradleyTerryRecipe`):

1. ``setup_run``    run folder, effective config saved (``config.yaml``), accelerate set up;
2. ``setup_data``   pairs loaded (built-in demo set without ``--data``), held-out split by prompt hash,
                    prompt hashes of both sides written to ``split.json``;
3. ``setup_model``  base model with a fresh ``Linear(d, 1)`` head (SmolLM2 GGUF without ``--base``),
                    pairs rendered with the chat template and tokenized under the over-length policy;
4. ``setup_optim``  AdamW with a head lr multiplier and a warmup + linear/cosine schedule; model,
                    optimizer and data loaders prepared by accelerate (DDP/FSDP come from
                    ``accelerate launch``; this file has no distribution code of its own);
5. ``train``        per micro-batch: chosen and rejected stacked in ONE forward under bf16 autocast
                    (float32 master weights), ``-logsigmoid(r_c - r_r - margin)``, accumulation, clip at
                    1.0, step; logs every N steps, held-out eval every M, resumable checkpoints every K;
6. ``save_final``   final eval and the model saved with its ``rmaudit.json`` manifest into ``--out``.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from safetensors.torch import load_file
from torch import nn

from rmaudit.atomic import replace_dir
from rmaudit.devices import resolve_dtype
from rmaudit.data import builtin_demo_path, prompt_hash, read_pairs, split_position
from rmaudit.data.split import split_by_hashes
from rmaudit.errors import RmauditInputError, input_error
from rmaudit.modeling.builtin_models import SMOLLM2_GGUF, require_smollm2_dir
from rmaudit.modeling.checkpoint import save_checkpoint
from rmaudit.modeling.head import head_stats
from rmaudit.modeling.loading import LoadedRewardModel, load_reward_model
from rmaudit.modeling.manifest import (MANIFEST_NAME, DataFile, Manifest, package_versions, read_manifest,
                                       sha256_file, tokenizer_facts, write_json_atomic)
from rmaudit.modeling.pooling import (attends_causally, native_rewards, pooled_rewards, position_limit, reward_body,
                                      scalar_head)
from rmaudit.train.batching import (EncodedPair, LengthGroupedBatchSampler, PairDataset, collate_pairs,
                                    padded_fraction, stack_batch)
from rmaudit.train.config import TrainConfig, write_config
from rmaudit.train.encode import encode_pairs, kept_leading_tokens
from rmaudit.train.encoded_store import pair_lengths
from rmaudit.train.loss import bradley_terry_loss, pair_statistics, split_stacked
from rmaudit.train.metrics import MetricsLog, stage_bar
from rmaudit.train.optim import build_optimizer, build_scheduler
from rmaudit.train.packing import packed_pair_rewards, packing_support
from rmaudit.train.state import find_checkpoint, load_training_state, save_training_state

SPLIT_FILE = "split.json"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"


class PairRewards(nn.Module):
    """Wraps the reward model so that accelerate's DDP/FSDP wrapper sees the pooled-reward
    forward. ``pooling``: "mask" (the last real token) or "native" (the model's own pooling,
    for encoders: :func:`readout_pooling`)."""

    def __init__(self, model: nn.Module, pooling: str = "mask"):
        super().__init__()
        self.model = model
        self.pooling = pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                shared: torch.Tensor | None = None) -> torch.Tensor:
        if self.pooling == "native":
            return native_rewards(self.model, input_ids, attention_mask)
        if shared is None:  # one plain forward over the stacked rows
            return pooled_rewards(self.model, input_ids, attention_mask)
        return packed_pair_rewards(self.model, input_ids, attention_mask, shared)


@dataclass
class TrainResult:
    """Where the model went and how it ended."""

    out_dir: Path
    steps: int
    train_metrics: dict[str, float]
    eval_metrics: dict[str, float] | None
    main_process: bool = True  # False on the other ranks of a multi-process run


def recompute_with_the_same_attention(model: nn.Module) -> Callable[[], tuple[Any, Any]]:
    """``context_fn`` for torch.utils.checkpoint: the backward recomputes a layer under the
    attention implementation its forward ran. The packed row's forward runs tree attention
    inside ``tree_attention_on`` (rmaudit/train/packing.py), which has ended by the time the
    backward recomputes; recomputed with the model's own attention, the layer would attend
    across pairs and sides, and torch refuses the mismatch."""
    def context_fn() -> tuple[Any, Any]:
        ran: dict[str, Any] = {}

        @contextlib.contextmanager
        def forward() -> Iterator[None]:
            ran["attention"] = model.config._attn_implementation
            yield

        @contextlib.contextmanager
        def recompute() -> Iterator[None]:
            own = model.config._attn_implementation
            model.config._attn_implementation = ran["attention"]
            try:
                yield
            finally:
                model.config._attn_implementation = own

        return forward(), recompute()
    return context_fn


def readout_pooling(model: nn.Module) -> tuple[str, str]:
    """(pooling, why): where training reads the reward. A causal decoder is read at the last
    real token, as transformers' own forward and TRL read it. An encoder's own forward reads
    its pooler (BERT, DeBERTa: the first position) or its head's own position (RoBERTa), and
    every consumer of the checkpoint will run that forward, so training reads it there too,
    as TRL's RewardTrainer does; a last-token head would be read elsewhere by all of them."""
    if attends_causally(model):
        return "mask", "causal decoder: read at the last real token"
    return "native", (f"{model.config.model_type} does not attend causally: read by its own forward "
                      "(its pooler), as transformers and TRL read it")


def freeze_lower_layers(model: nn.Module, n_layers: int) -> int:
    """Freeze the input embeddings and the lowest ``n_layers`` blocks; return how many parameters still train."""
    body = reward_body(model)
    blocks = next(m for m in body.children() if isinstance(m, nn.ModuleList))
    if n_layers > len(blocks):
        raise RmauditInputError(f"--freeze-layers {n_layers}: the model has only {len(blocks)} layers")
    for module in (model.get_input_embeddings(), *blocks[:n_layers]):
        module.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def disable_dropout(model: nn.Module) -> None:
    """Dropout makes chosen and rejected see different noise in the same step; reward training
    turns it off: the Dropout modules, and the attention dropout rate that transformers'
    attention modules hand their attention function (which the packed row's tree attention
    would not apply, so the packed and stacked steps would differ)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def set_readout_tokens(model: nn.Module, tokenizer: Any, pad_token: str | None, chat_template: str | None) -> None:
    """--pad-token and --chat-template: they decide where consumers read the reward, so they
    are set before encoding and saved with the tokenizer (a pad distinct from eos keeps TRL
    PPO from hiding end-of-turn tokens; a template that ends the turn at eos puts the reward
    where TRL PPO and OpenRLHF read it)."""
    if pad_token is not None:
        pad_id = tokenizer.convert_tokens_to_ids(pad_token)
        if pad_id is None or tokenizer.convert_ids_to_tokens(pad_id) != pad_token:  # unknown tokens map to unk
            raise input_error("--pad-token", None, None, f"{pad_token!r} is not a token of the base model's vocabulary")
        tokenizer.pad_token = pad_token
        model.config.pad_token_id = pad_id
    if chat_template is not None:
        path = Path(chat_template)
        try:
            tokenizer.chat_template = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise input_error(path, None, None, f"cannot read the --chat-template file: {exc}") from None


class BradleyTerryRecipe:
    """One training run. ``loaded`` lets Python callers train a model they already hold in memory."""

    def __init__(self, config: TrainConfig, loaded: LoadedRewardModel | None = None):
        self.config = config
        self.loaded = loaded
        self.resume_differences: dict[str, Any] = {}  # what --resume-force continued over
        self.step = 0
        self.epoch = 0
        self.batches_done = 0  # global batches consumed in the current epoch
        self.tokens_seen = 0
        self.train_window: list[dict[str, float]] = []
        self.last_train: dict[str, float] = {}
        self.last_eval: dict[str, float] | None = None

    # ---- 1. run folder --------------------------------------------------------------------------
    def setup_run(self) -> None:
        cfg = self.config
        self.out = Path(cfg.out)
        _check_tracker(str(cfg.report_to))
        self.accelerator = Accelerator(
            gradient_accumulation_steps=cfg.grad_accum,
            # Every process gets its slice of ONE global batch, so the data a step sees does not depend
            # on the number of processes (1 process x batch 4 == 2 processes x batch 2).
            dataloader_config=DataLoaderConfiguration(split_batches=True),
            log_with=None if cfg.report_to == "none" else str(cfg.report_to),
            project_dir=str(cfg.out),
        )
        self.main = self.accelerator.is_main_process
        self.dtype, self.dtype_reason = resolve_dtype(str(cfg.dtype), self.accelerator.device.type)
        set_seed(cfg.seed)
        if not cfg.resume and any((self.out / name).exists() for name in (METRICS_FILE, MANIFEST_NAME)):
            raise input_error(self.out, None, None, "already holds a training run; choose another --out, or "
                              f"continue it with: {restart_command(self.out)}")
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_config(cfg, self.out / CONFIG_FILE)

    # ---- 2. data --------------------------------------------------------------------------------
    def setup_data(self) -> None:
        cfg = self.config
        data_path = Path(cfg.data) if cfg.data else builtin_demo_path()
        # Stored, not held (rmaudit/data/store.py, benchmarks/results/train_scale.md): the split,
        # its prompt hashes and the encoding each read the pairs back in one pass.
        pairs = read_pairs(data_path, adapter=cfg.adapter, limit=cfg.limit, store=True).pairs
        if cfg.eval_data:
            eval_pairs = read_pairs(cfg.eval_data, adapter=cfg.adapter, limit=cfg.limit, store=True).pairs
            train_pairs = pairs
            train_hashes = {prompt_hash(p.prompt) for p in train_pairs}
            eval_hashes = {prompt_hash(p.prompt) for p in eval_pairs}
        else:
            hashes = [prompt_hash(p.prompt) for p in pairs]
            train_pairs, eval_pairs = split_by_hashes(pairs, hashes, cfg.eval_fraction)
            eval_hashes = {h for h in hashes if split_position(h) < cfg.eval_fraction}
            train_hashes = set(hashes) - eval_hashes
        if not train_pairs:
            raise input_error(data_path, None, None, "no training pairs left after the held-out split")
        self.train_pairs, self.eval_pairs = train_pairs, eval_pairs
        self.data_files = {"train": _file_record(data_path, builtin=not cfg.data)}
        if cfg.eval_data:
            self.data_files["eval"] = _file_record(Path(cfg.eval_data))
        self.split_info = {
            "method": "external file" if cfg.eval_data else "sha256 of the normalised prompt",
            "eval_fraction": None if cfg.eval_data else cfg.eval_fraction,
            "train_pairs": len(train_pairs), "eval_pairs": len(eval_pairs),
            "train_prompts": len(train_hashes), "eval_prompts": len(eval_hashes),
            "shared_prompts": len(train_hashes & eval_hashes),
            "prompt_hashes_file": SPLIT_FILE,
        }
        if self.main:
            write_json_atomic(self.out / SPLIT_FILE, {"train": sorted(train_hashes), "eval": sorted(eval_hashes)})

    # ---- 3. model and tokens --------------------------------------------------------------------
    def setup_model(self) -> None:
        cfg = self.config
        if self.loaded is None:
            base, gguf = cfg.base, cfg.gguf_file
            if base is None:
                base, gguf = str(require_smollm2_dir()), gguf or SMOLLM2_GGUF
            self.loaded = load_reward_model(base, gguf_file=gguf, allow_hub=cfg.allow_hub, dtype=torch.float32,
                                            head_init=cfg.head_init, head_bias=cfg.head_bias, seed=cfg.seed,
                                            allow_pickle=cfg.allow_pickle, trust_remote_code=cfg.trust_remote_code)
        model, tokenizer = self.loaded.model, self.loaded.tokenizer
        set_readout_tokens(model, tokenizer, cfg.pad_token, cfg.chat_template)
        model.float()  # float32 master weights; bf16 only inside autocast
        self.head_at_init = head_stats(scalar_head(model)[1])
        self.pooling, self.pooling_reason = readout_pooling(model)
        self.max_length, self.max_length_note = held_length(model, cfg.max_length)
        disable_dropout(model)
        if cfg.freeze_layers:
            freeze_lower_layers(model, cfg.freeze_layers)
        if cfg.grad_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={
                "use_reentrant": False, "context_fn": recompute_with_the_same_attention(model)})
        model.train()
        self.model, self.tokenizer = model, tokenizer
        supported, why = packing_support(model)
        if self.pooling == "native":
            supported, why = False, "an encoder's rows are read whole by its own forward"
        self.share_prefixes = cfg.share_prefixes and supported
        self.prefix_sharing_reason = (f"each batch packed into one row, each pair's prompt once: {why}"
                                      if self.share_prefixes
                                      else "--no-share-prefixes" if not cfg.share_prefixes else why)
        shown = self.main and cfg.progress
        keep = kept_leading_tokens(tokenizer, self.pooling)
        self.train_encoded, self.train_lengths = encode_pairs(tokenizer, self.train_pairs, self.max_length,
                                                              cfg.truncation, "encode train pairs" if shown else None,
                                                              keep_first=keep)
        self.eval_encoded, self.eval_lengths = encode_pairs(tokenizer, self.eval_pairs, self.max_length,
                                                            cfg.truncation, "encode held-out pairs" if shown else None,
                                                            keep_first=keep)
        if not self.train_encoded:
            raise RmauditInputError(f"every training pair is longer than --max-length {self.max_length} "
                                    f"(policy {cfg.truncation}); raise --max-length or use --truncation truncate")

    # ---- 4. optimizer, schedule, loaders --------------------------------------------------------
    def setup_optim(self) -> None:
        cfg, acc = self.config, self.accelerator
        n_proc = acc.num_processes
        self.sampler = LengthGroupedBatchSampler(self.batch_lengths(self.train_encoded), cfg.batch_size * n_proc,
                                                 seed=cfg.seed, shuffle=True)
        if len(self.sampler) == 0:
            raise RmauditInputError(f"{len(self.train_encoded)} training pairs do not fill one global batch of "
                                    f"{cfg.batch_size * n_proc}; lower --batch-size")
        self.steps_per_epoch = math.ceil(len(self.sampler) / cfg.grad_accum)
        self.total_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        pad_id = self.tokenizer.pad_token_id
        train_loader = torch.utils.data.DataLoader(PairDataset(self.train_encoded), batch_sampler=self.sampler,
                                                   collate_fn=lambda b: collate_pairs(b, pad_id))
        optimizer = build_optimizer(self.model, cfg.lr, cfg.head_lr_mult, cfg.weight_decay)
        self.scheduler = build_scheduler(optimizer, self.total_steps, cfg.warmup_ratio, cfg.scheduler)
        self.net, self.optimizer, self.train_loader = acc.prepare(PairRewards(self.model, self.pooling), optimizer, train_loader)
        self.eval_loader = None
        if self.eval_encoded:
            eval_sampler = LengthGroupedBatchSampler(self.batch_lengths(self.eval_encoded),
                                                     cfg.eval_batch_size * n_proc, shuffle=False)
            self.eval_loader = acc.prepare(torch.utils.data.DataLoader(
                PairDataset(self.eval_encoded), batch_sampler=eval_sampler,
                collate_fn=lambda b: collate_pairs(b, pad_id)))
        tracker = None
        if cfg.report_to != "none":
            self.accelerator.init_trackers("rmaudit", config=cfg.to_dict())
            tracker = self.accelerator
        self.log = MetricsLog(self.out / METRICS_FILE, self.main, self.total_steps, cfg.progress, tracker=tracker)

    def batch_lengths(self, pairs: Sequence[EncodedPair]) -> list[int]:
        """What a pair adds to its batch, to group pairs by: its packed width when pairs are
        packed (a packed row holds no pads; the grouping that 0.5.3 chose for padded packed
        rows is kept, so a run's batches are those of earlier versions), its longer side
        otherwise (grouping keeps the stacked batch's padding low)."""
        return pair_lengths(pairs, packed=self.share_prefixes)

    def maybe_resume(self) -> None:
        if not self.config.resume:
            return
        try:
            folder = find_checkpoint(self.config.resume)
        except RmauditInputError:
            if (Path(self.config.resume) / MANIFEST_NAME).exists():
                raise  # a finished run without checkpoints: nothing to resume
            # Interrupted before its first checkpoint: nothing to continue, so start over in place.
            self.log.note(f"{self.config.resume}: no checkpoint yet; starting from step 0")
            self.log.truncate_after(0)
            return
        self.resume_differences = check_resume_matches(folder, self.config, self.data_files)
        weights = {}
        for file in sorted(folder.glob("*.safetensors")):
            weights.update(load_file(str(file)))
        self.accelerator.unwrap_model(self.net).model.load_state_dict(weights)
        progress = load_training_state(folder, self.optimizer, self.scheduler,
                                       rank=self.accelerator.process_index)
        self.step, self.epoch, self.batches_done = progress["step"], progress["epoch"], progress["batches_done"]
        self.tokens_seen = progress["tokens_seen"]
        self.log.truncate_after(self.step)
        self.log.bar.update(self.step)
        self.log.note(f"resumed from {folder} at step {self.step}")

    # ---- 5. the loop ----------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype != "bfloat16":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.accelerator.device.type, dtype=torch.bfloat16)

    def rewards(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen, rejected) rewards from ONE forward over the stacked batch, chosen rows first;
        with shared prefixes, over one packed row per pair (the shared prompt once, then each
        side's own tokens: rmaudit/train/packing.py)."""
        input_ids, attention_mask = stack_batch(batch)
        shared = batch["shared"] if self.share_prefixes else None
        with self.autocast():
            rewards = self.net(input_ids, attention_mask, shared)
        return split_stacked(rewards.float())

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Forward, loss and backward of one micro-batch (accelerate handles accumulation and DDP sync)."""
        chosen, rejected = self.rewards(batch)
        loss = bradley_terry_loss(chosen, rejected, batch["margin"])
        self.accelerator.backward(loss)
        acc = self.accelerator
        masks = torch.cat([batch["chosen_mask"], batch["rejected_mask"]])
        padding = 0.0 if self.share_prefixes else padded_fraction(masks)  # a packed row holds no pads
        return {"chosen": acc.gather(chosen.detach()), "rejected": acc.gather(rejected.detach()),
                "margin": acc.gather(batch["margin"]), "tokens": int(acc.gather(masks.sum()).sum()),
                "padded_fraction": padding}

    def optimizer_step(self) -> float | None:
        grad_norm = None  # not measured when clipping is off
        if self.config.max_grad_norm > 0:
            grad_norm = float(self.accelerator.clip_grad_norm_(self.net.parameters(), self.config.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def train(self) -> None:
        acc = self.accelerator
        micro: list[dict[str, Any]] = []
        started = time.perf_counter()
        while self.step < self.total_steps:
            # accelerate's loader re-seeds the sampler with its own iteration count on every
            # __iter__ (accelerate/data_loader.py, DataLoaderShard.__iter__), which restarts at 0
            # in a resumed process; set both, or a run resumed after epoch 0 reshuffles as epoch 0.
            if hasattr(self.train_loader, "set_epoch"):
                self.train_loader.set_epoch(self.epoch)
            self.sampler.set_epoch(self.epoch)
            self.sampler.skip(self.batches_done)
            for batch in self.train_loader:
                with acc.accumulate(self.net):
                    micro.append(self.train_step(batch))
                    self.batches_done += 1
                    if acc.sync_gradients:
                        lr = self.scheduler.get_last_lr()[0]
                        grad_norm = self.optimizer_step()
                        self.step += 1
                        self.after_step(micro, grad_norm, lr, time.perf_counter() - started)
                        micro, started = [], time.perf_counter()
                if self.step >= self.total_steps:
                    break
            else:
                self.epoch, self.batches_done = self.epoch + 1, 0

    def after_step(self, micro: list[dict[str, Any]], grad_norm: float | None, lr: float, seconds: float) -> None:
        cfg = self.config
        chosen = torch.cat([m["chosen"] for m in micro])
        rejected = torch.cat([m["rejected"] for m in micro])
        margin = torch.cat([m["margin"] for m in micro])
        tokens = sum(m["tokens"] for m in micro)
        self.tokens_seen += tokens
        record = {"loss": bradley_terry_loss(chosen, rejected, margin).item(), **pair_statistics(chosen, rejected),
                  "grad_norm": grad_norm, "lr": lr, "tokens": tokens, "seconds": seconds,
                  "padded_fraction": sum(m["padded_fraction"] for m in micro) / len(micro)}
        self.train_window.append(record)
        self.log.advance(record["loss"])
        if self.step % cfg.log_every == 0 or self.step == self.total_steps:
            self.log.write(self.window_record())
        if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < self.total_steps:
            self.evaluate()
        if cfg.save_every and self.step % cfg.save_every == 0 and self.step < self.total_steps:
            self.save_resumable()

    def window_record(self) -> dict[str, Any]:
        """Means over the steps since the last log line; tokens/s over their total time."""
        window, self.train_window = self.train_window, []
        keys = ("loss", "accuracy", "margin", "reward_mean", "reward_std", "padded_fraction")
        record = {k: sum(r[k] for r in window) / len(window) for k in keys}
        norms = [r["grad_norm"] for r in window if r["grad_norm"] is not None]
        record["grad_norm"] = sum(norms) / len(norms) if norms else None
        seconds = sum(r["seconds"] for r in window)
        record.update(kind="train", step=self.step, epoch=self.epoch, lr=window[-1]["lr"],
                      tokens_per_s=sum(r["tokens"] for r in window) / max(seconds, 1e-9),
                      tokens_seen=self.tokens_seen)
        self.last_train = record
        return record

    @torch.no_grad()
    def evaluate(self) -> dict[str, float] | None:
        """Held-out accuracy, mean margin, reward mean/std and loss, over every held-out pair."""
        if self.eval_loader is None:
            return None
        self.net.eval()
        chosen, rejected, margin = [], [], []
        with stage_bar(len(self.eval_loader), "held-out pass", self.log.progress, "batch") as bar:
            for batch in self.eval_loader:
                c, r = self.rewards(batch)
                chosen.append(self.accelerator.gather_for_metrics(c))
                rejected.append(self.accelerator.gather_for_metrics(r))
                margin.append(self.accelerator.gather_for_metrics(batch["margin"]))
                bar.update(1)
        self.net.train()
        chosen, rejected = torch.cat(chosen), torch.cat(rejected)
        record = {"kind": "eval", "step": self.step, "pairs": len(chosen),
                  "loss": bradley_terry_loss(chosen, rejected, torch.cat(margin)).item(),
                  **pair_statistics(chosen, rejected)}
        self.log.write(record)
        self.last_eval = record
        return record

    # ---- checkpoints and the final model --------------------------------------------------------
    def save_resumable(self) -> Path:
        """``out/checkpoints/step-N``: a loadable model plus trainer_state, renamed into place when complete."""
        acc = self.accelerator
        final = self.out / "checkpoints" / f"step-{self.step:06d}"
        partial = final.with_name(final.name + ".partial")
        acc.wait_for_everyone()
        if self.main:
            shutil.rmtree(partial, ignore_errors=True)
            save_checkpoint(acc.unwrap_model(self.net).model, self.tokenizer, partial, self.manifest())
        acc.wait_for_everyone()
        progress = {"step": self.step, "epoch": self.epoch, "batches_done": self.batches_done,
                    "tokens_seen": self.tokens_seen}
        save_training_state(partial, self.optimizer, self.scheduler, progress,
                            rank=acc.process_index, main=self.main)
        acc.wait_for_everyone()
        if self.main:
            replace_dir(partial, final)
            self.log.note(f"checkpoint: {final}")
        return final

    def save_final(self) -> Path:
        """Final eval, then the model + tokenizer + manifest into ``--out`` (the run folder itself)."""
        if self.train_window:
            self.log.write(self.window_record())
        self.evaluate()
        acc = self.accelerator
        acc.wait_for_everyone()
        if self.main:
            staging = self.out / ".final.partial"
            shutil.rmtree(staging, ignore_errors=True)
            save_checkpoint(acc.unwrap_model(self.net).model, self.tokenizer, staging, self.manifest(final=True))
            # Move file by file (each os.replace is atomic); the manifest last marks the model complete.
            (self.out / MANIFEST_NAME).unlink(missing_ok=True)
            files = sorted(staging.iterdir(), key=lambda p: p.name == MANIFEST_NAME)
            for file in files:
                os.replace(file, self.out / file.name)
            staging.rmdir()
        acc.wait_for_everyone()
        self.log.close(self.step)
        return self.out

    def manifest(self, final: bool = False) -> Manifest:
        """Everything an audit needs to reproduce this run, each fact stated once."""
        cfg = self.config
        model = self.accelerator.unwrap_model(self.net).model
        return Manifest(
            trainer="rmaudit train (Bradley-Terry)",
            pooling=self.pooling,
            base_model=self.loaded.base_info,
            data=self.data_files,
            split=self.split_info,
            tokenizer=tokenizer_facts(self.tokenizer),
            max_length=self.max_length,
            truncation={"policy": cfg.truncation, "train": self.train_lengths.as_dict(),
                        "eval": self.eval_lengths.as_dict()},
            head={"init": cfg.head_init, "bias": cfg.head_bias, "at_init": self.head_at_init,
                  "now": head_stats(scalar_head(model)[1])},
            hyperparameters=cfg.to_dict(),
            run={"world_size": self.accelerator.num_processes,
                 "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                 "global_batch_pairs": cfg.batch_size * cfg.grad_accum * self.accelerator.num_processes,
                 "steps": self.step, "total_steps": self.total_steps, "tokens_seen": self.tokens_seen,
                 "complete": final, "dtype": self.dtype, "dtype_reason": self.dtype_reason,
                 # read by the training_log probe: the two-tower bug is a separate forward or dropout on
                 "forward": "stacked", "dropout": "disabled", "prefix_sharing": self.share_prefixes,
                 "prefix_sharing_reason": self.prefix_sharing_reason, "pooling_reason": self.pooling_reason,
                 **({"resume_forced_over": self.resume_differences} if self.resume_differences else {})},
            packages=package_versions(),
            metrics={"train": self.last_train, "eval": self.last_eval},
        )

    def run(self) -> TrainResult:
        self.setup_run()
        self.setup_data()
        self.setup_model()
        self.setup_optim()
        self.log_setup()
        self.maybe_resume()
        self.train()
        out = self.save_final()
        return TrainResult(out, self.step, self.last_train, self.last_eval, self.main)

    def log_setup(self) -> None:
        t, e = self.train_lengths, self.eval_lengths
        self.log.note(
            f"rmaudit train: {t.kept} train pairs ({t.truncated} truncated, {t.dropped} dropped over "
            f"{t.max_length} tokens, policy {t.policy}), {e.kept} held-out pairs ({e.truncated} truncated, "
            f"{e.dropped} dropped); {self.total_steps} steps of {self.config.batch_size * self.config.grad_accum * self.accelerator.num_processes} "
            f"pairs on {self.accelerator.num_processes} process(es), dtype {self.dtype} ({self.dtype_reason}), "
            f"prefix sharing {'on' if self.share_prefixes else 'off'} ({self.prefix_sharing_reason})"
            + (f"; reward read by the model's own forward ({self.pooling_reason})" if self.pooling == "native" else "")
            + (f"; {self.max_length_note}" if self.max_length_note else ""))


# Settings that change neither the data nor the arithmetic of a step may differ on resume.
RESUME_FREE = {"resume", "resume_force", "out", "progress", "report_to", "allow_hub", "allow_pickle",
               "trust_remote_code", "grad_checkpointing", "log_every", "eval_every", "eval_batch_size", "save_every"}


def held_length(model: nn.Module, requested: int) -> tuple[int, str | None]:
    """(the longest sequence trained on, a note when that is less than ``requested``): a model
    with learned positions (BERT's 512, GPT-2's 1,024) cannot read past them, and a pair it
    cannot read is better dropped or truncated by the --truncation policy than crash a step."""
    limit = position_limit(model)
    if limit is None or requested <= limit:
        return requested, None
    return limit, f"--max-length {requested} held to the {limit} positions {model.config.model_type} has"


def check_resume_matches(folder: Path, cfg: TrainConfig, data_files: dict[str, DataFile]) -> dict[str, Any]:
    """{field: [checkpoint's, now]} for every difference; refused unless ``--resume-force``.

    A resumed run that silently changed its data or learning rate would record settings it
    did not train with; the manifest of a forced resume lists what changed."""
    recorded = read_manifest(folder)
    if recorded is None:
        raise input_error(folder, None, None, f"no {MANIFEST_NAME}: cannot check that the run resumes as it started")
    now = cfg.to_dict()
    differences = {k: [v, now.get(k)] for k, v in recorded.hyperparameters.items()
                   if k not in RESUME_FREE and now.get(k) != v}
    for side, record in recorded.data.items():
        current = data_files.get(side)
        if current is None or current.sha256 != record.sha256:
            differences[f"data.{side}"] = [record.path, current.path if current else None]
    if differences and not cfg.resume_force:
        listed = "; ".join(f"{k}: {old!r} then, {new!r} now" for k, (old, new) in sorted(differences.items()))
        raise input_error(folder, None, None, f"--resume with different settings ({listed}); resume with the "
                          "original ones, or pass --resume-force to continue anyway (recorded in the manifest)")
    return differences


def restart_command(out: Path) -> str:
    """The command line that was run, with ``--resume OUT``: what to type to continue it."""
    args = [a for a in sys.argv[1:] if a != "--resume"]
    return " ".join(["rmaudit", *map(shlex.quote, args), "--resume", shlex.quote(str(out))])


def _check_tracker(name: str) -> None:
    """--report-to names a tracker whose package is installed, or training would fail at step 1."""
    if name == "none":
        return
    from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

    available = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available, "mlflow": is_mlflow_available}
    if not available[name]():
        package = {"tensorboard": "tensorboard (or tensorboardX)"}.get(name, name)
        raise input_error("--report-to", None, None, f"{name} needs the {package} package: pip install it first")


def _file_record(path: Path, builtin: bool = False) -> DataFile:
    return DataFile(str(path), sha256_file(path) if path.is_file() else None, builtin)


def train(config: TrainConfig, loaded: LoadedRewardModel | None = None) -> TrainResult:
    """Train a Bradley-Terry reward model as configured; see the module docstring for the steps."""
    return BradleyTerryRecipe(config, loaded).run()
