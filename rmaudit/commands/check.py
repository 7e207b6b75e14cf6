"""Audit a reward-model checkpoint: run the probes, write the reports, gate on the result.

Exit codes: 0 = gate passed, 1 = gate failed (a probe at or above --fail-on), 2 = usage or
input error, 3 = internal error.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Optional

import typer

from rmaudit.options import Consumer, Dtype, FailOn, Pooling, option_defaults, options_help

HELP = options_help()
DEFAULT = option_defaults()


def check_command(
    checkpoint: Path = typer.Argument(..., help="Reward-model checkpoint folder (any *ForSequenceClassification, num_labels=1)."),
    probes: Optional[str] = typer.Option(None, "--probes", help=HELP["probes"] + " Default: config, else all."),
    data: Optional[Path] = typer.Option(None, "--data", help=HELP["data"]),
    train_data: Optional[Path] = typer.Option(None, "--train-data", help=HELP["train_data"]),
    policy: Optional[Path] = typer.Option(None, "--policy", help=HELP["policy"]),
    rollouts_file: Optional[Path] = typer.Option(None, "--rollouts-file", help=HELP["rollouts_file"]),
    rollouts: int = typer.Option(DEFAULT["rollouts"], "--rollouts", help=HELP["rollouts"]),
    rollout_prompts: int = typer.Option(DEFAULT["rollout_prompts"], "--rollout-prompts", help=HELP["rollout_prompts"]),
    max_new_tokens: int = typer.Option(DEFAULT["max_new_tokens"], "--max-new-tokens", help=HELP["max_new_tokens"]),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help=HELP["pairs"]),
    training_log: Optional[Path] = typer.Option(None, "--training-log", help=HELP["training_log"]),
    annotator_field: Optional[str] = typer.Option(None, "--annotator-field", help=HELP["annotator_field"]),
    gold: Optional[Path] = typer.Option(None, "--gold", help=HELP["gold"]),
    fdr: float = typer.Option(DEFAULT["fdr"], "--fdr", help=HELP["fdr"]),
    max_pairs: int = typer.Option(DEFAULT["max_pairs"], "--max-pairs", help=HELP["max_pairs"]),
    dtype: Dtype = typer.Option(DEFAULT["dtype"], "--dtype", help=HELP["dtype"]),
    batch_size: int = typer.Option(DEFAULT["batch_size"], "--batch-size", help=HELP["batch_size"]),
    max_length: Optional[int] = typer.Option(None, "--max-length", help=HELP["max_length"]),
    chat_template: Optional[Path] = typer.Option(None, "--chat-template", help=HELP["chat_template"]),
    device: str = typer.Option(DEFAULT["device"], "--device", help=HELP["device"]),
    attn_implementation: Optional[str] = typer.Option(None, "--attn-implementation", help=HELP["attn_implementation"]),
    threads: Optional[int] = typer.Option(None, "--threads", help=HELP["threads"]),
    share_prefixes: bool = typer.Option(DEFAULT["share_prefixes"], "--share-prefixes/--no-share-prefixes",
                                        help=HELP["share_prefixes"]),
    pooling: Pooling = typer.Option(DEFAULT["pooling"], "--pooling", help=HELP["pooling"]),
    gguf_file: Optional[str] = typer.Option(None, "--gguf-file", help=HELP["gguf_file"]),
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder. Default: reports/<checkpoint>/<timestamp>/."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the JSON result to this file."),
    fail_on: Optional[FailOn] = typer.Option(None, "--fail-on", help=HELP["fail_on"] + " Default: config, else fail."),
    config: Optional[Path] = typer.Option(None, "--config", help="Gate config (rmaudit.toml or pyproject.toml "
                                          "[tool.rmaudit]). Default: the nearest one above the current folder."),
    allow_hub: bool = typer.Option(False, "--allow-hub", help=HELP["allow_hub"]),
    seed: int = typer.Option(DEFAULT["seed"], "--seed", help=HELP["seed"]),
    progress: bool = typer.Option(True, "--progress/--no-progress", help=HELP["progress"]),
    consumer: Optional[Consumer] = typer.Option(None, "--consumer", help=HELP["consumer"] + " Default: config, else none."),
    require: Optional[str] = typer.Option(None, "--require", help=HELP["require"] + " Default: config, else none."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help=HELP["allow_pickle"]),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=HELP["trust_remote_code"]),
    allow_fresh_head: bool = typer.Option(False, "--allow-fresh-head", help=HELP["allow_fresh_head"]),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help=HELP["skip_bad_rows"]),
    sign_key: Optional[Path] = typer.Option(None, "--sign-key", help="Sign report.json with this Ed25519 private key "
                                            "(unencrypted PEM; needs pip install 'rmaudit[sign]'). "
                                            "`rmaudit verify --public-key` checks the signature."),
) -> int:
    """Audit a reward-model checkpoint and gate on the result (exit 0 pass, 1 fail, 2 input error)."""
    from rich.console import Console

    from rmaudit.cli import quiet_libraries

    from rmaudit.audit import AuditOptions, run_audit
    from rmaudit.devices import resolve_device
    from rmaudit.distributed import is_main_process, process_group
    from rmaudit.config import load_gate_config
    from rmaudit.report import REPORT_FILES, default_report_dir, render_console_summary, write_json, write_reports
    from rmaudit.report.destination import check_json_path, check_report_dir, move_aside, report_lock, staging_dir, swap_in
    from rmaudit.record import load_signing_key, signature_block
    from rmaudit.report.github import write_github_outputs
    from rmaudit.report.json_report import to_jsonable

    quiet_libraries()
    gate = load_gate_config(config, start=Path.cwd())
    options = AuditOptions(
        probes=probes or gate.probes or "all", data=data, train_data=train_data, policy=policy, pairs=pairs,
        max_pairs=max_pairs, dtype=dtype, batch_size=batch_size, fail_on=fail_on or FailOn(gate.fail_on),
        limits=gate.limits, settings=gate.settings, pooling=pooling, max_length=max_length, gguf_file=gguf_file,
        chat_template=chat_template,
        allow_hub=allow_hub, progress=progress, seed=seed, consumer=consumer or (Consumer(gate.consumer) if gate.consumer else None),
        require=require or gate.require or (), allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
        allow_fresh_head=allow_fresh_head, skip_bad_rows=skip_bad_rows, device=device,
        attn_implementation=attn_implementation, threads=threads, share_prefixes=share_prefixes, training_log=training_log,
        annotator_field=annotator_field, rollouts_file=rollouts_file, rollouts=rollouts,
        rollout_prompts=rollout_prompts, max_new_tokens=max_new_tokens, gold=gold, fdr=fdr,
    ).validated()
    if not is_main_process():  # under a launcher: score a share of the plan; process 0 writes the reports
        with process_group(resolve_device(options.device)[0]):
            result = run_audit(checkpoint, dataclasses.replace(options, progress=False))
        return 0 if result.passed else 1
    key = load_signing_key(sign_key) if sign_key is not None else None
    out_dir = out or default_report_dir(checkpoint)
    check_report_dir(out_dir)
    if json_path is not None:
        check_json_path(json_path)
    with report_lock(out_dir):
        try:
            with process_group(resolve_device(options.device)[0]):
                result = run_audit(checkpoint, options)
            if key is not None:
                result.signature = signature_block(to_jsonable(result.to_dict()), key)
            staged = staging_dir(out_dir)
            write_reports(result, staged)
            swap_in(staged, out_dir)
        except BaseException:
            aside = move_aside(out_dir)
            if aside is not None:
                print(f"rmaudit: the run failed; the previous report is now in {aside}", file=sys.stderr)
            raise
    written = {kind: out_dir / name for kind, name in REPORT_FILES.items()}
    if json_path is not None:
        write_json(result, json_path)
    write_github_outputs(result, written)
    console = Console(stderr=False)
    render_console_summary(result, console)
    for probe in result.probes:   # what the policy's samples say PPO should be set to, and where they are
        if probe.metrics.get("ppo_settings"):
            console.print(f"{probe.name}: {probe.metrics['ppo_settings']}", highlight=False, markup=False)
        for name in probe.files:
            console.print(f"{probe.name}: wrote {out_dir / name}", highlight=False, markup=False)
    console.print(f"reports: {written['html'].parent}", highlight=False, markup=False)
    return 0 if result.passed else 1
