"""Assemble every input a probe may read into one :class:`AuditContext`.

``build_context`` loads the checkpoint once (model in eval mode, tokenizer, manifest) and
gathers the rest, flags first and the manifest's defaults second: the held-out and
training pairs (the data file recorded in ``data``, reloaded and split by the prompt
hashes in the checkpoint's ``split.json``), the chat template (``--chat-template``, else the
tokenizer's, else the manifest's when the saved tokenizer lost it) and the max length.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rmaudit.data.pairs import PreferencePair
from rmaudit.data.store import first_of_each, keep_where, subset
from rmaudit.errors import RmauditInputError, input_error
from rmaudit.modeling.manifest import Manifest
from rmaudit.options import AuditOptions, Dtype
from rmaudit.probes.context import AuditContext


def build_context(checkpoint: Path, options: AuditOptions) -> AuditContext:
    """Load the checkpoint and gather every probe input (flags first, manifest defaults second)."""
    from rmaudit.devices import configure_cpu_threads, resolve_device
    from rmaudit.distributed import local_device

    options = options.validated()
    checkpoint = Path(checkpoint)
    # Everything cheap and checkable comes first, so bad input ends the run before a model loads.
    device, device_reason = resolve_device(options.device)
    device = local_device(device)  # under a launcher: this process' own GPU
    options = dataclasses.replace(options, device=device)
    _preflight(checkpoint, options)
    manifest = read_checkpoint_manifest(checkpoint)
    notes: dict[str, Any] = {"device": device, "device_reason": device_reason}
    if device == "cpu":
        notes.update(configure_cpu_threads(options.threads))
        if "cpu_busy" in notes and options.progress:
            print(f"rmaudit: warning: {notes['cpu_busy']}", file=sys.stderr, flush=True)
    all_eval_pairs, eval_pairs = eval_sample(checkpoint, options, manifest, notes)
    train_pairs = _side_pairs("train", options.train_data, checkpoint, manifest, notes, options.skip_bad_rows)
    _check_annotator_field(options.annotator_field, all_eval_pairs, options.data)
    extra_pairs = canonical_pairs(options.pairs)
    trained_template = read_template_file(options.chat_template)
    if trained_template is not None:
        notes["chat_template_file"] = str(options.chat_template)
    if options.training_log is not None:
        from rmaudit.probes.training_log import read_curves

        read_curves(Path(options.training_log))  # a log that cannot be read is named now, not after scoring
    if options.rollouts_file is not None:
        from rmaudit.rollouts import read_rollouts

        read_rollouts(Path(options.rollouts_file))
    dtype, dtype_reason = options.dtype.resolved(device)
    options = dataclasses.replace(options, dtype=dtype)
    if options.progress:
        print(f"rmaudit: scoring on {device} ({device_reason}) in {dtype} ({dtype_reason})", file=sys.stderr, flush=True)
    loaded = _load_checkpoint(checkpoint, options)
    notes.update({"pooling": loaded.pooling, "dtype_reason": dtype_reason, "loader_notes": list(loaded.notes)})
    _restore_chat_template(loaded.tokenizer, manifest, notes, trained_template)
    _try_template(loaded.tokenizer)
    record = _audit_record(checkpoint, options, loaded.tokenizer)
    return AuditContext(
        checkpoint=Path(checkpoint),
        model=loaded.model,
        tokenizer=loaded.tokenizer,
        manifest=manifest,
        eval_pairs=eval_pairs,
        all_eval_pairs=all_eval_pairs,
        train_pairs=train_pairs,
        policy_tokenizer=_load_policy_tokenizer(options.policy, options.allow_hub),
        canonical_pairs=extra_pairs,
        training_log=Path(options.training_log) if options.training_log else None,
        annotator_field=options.annotator_field,
        gold=Path(options.gold) if options.gold else None,
        policy=str(options.policy) if options.policy is not None else None,
        rollouts_file=Path(options.rollouts_file) if options.rollouts_file else None,
        rollouts=options.rollouts, rollout_prompts=options.rollout_prompts, max_new_tokens=options.max_new_tokens,
        device=options.device, seed=options.seed,
        dtype=options.dtype.torch(),
        max_length=_max_length(options, manifest, loaded, notes),
        batch_size=options.batch_size,
        share_prefixes=options.share_prefixes,
        pooling=options.pooling.value,
        progress=options.progress,
        consumer=options.consumer.value if options.consumer else None,
        head_origin=loaded.head_origin,
        notes=notes,
        record=record,
        float32_loader=lambda: _load_checkpoint(checkpoint, dataclasses.replace(options, dtype=Dtype.FLOAT32)).model,
    )


def eval_sample(checkpoint: Path, options: AuditOptions, manifest: Manifest | None,
                notes: dict[str, Any]) -> tuple[Sequence[PreferencePair] | None, Sequence[PreferencePair] | None]:
    """(every held-out pair, the scored sample of at most --max-pairs): --data, else the
    manifest's split. benchmarks/bench_audit.py reads the same sample for its floor."""
    all_eval_pairs = _side_pairs("eval", options.data, checkpoint, manifest, notes, options.skip_bad_rows,
                                 options.annotator_field)
    if all_eval_pairs is None:
        return None, None
    notes["n_eval_pairs_available"] = len(all_eval_pairs)
    return all_eval_pairs, sample_pairs(all_eval_pairs, options.max_pairs, options.seed)


def _audit_record(checkpoint: Path, options: AuditOptions, tokenizer: Any) -> dict[str, Any]:
    """The content-addressed identity of what this audit reads (``rmaudit verify`` checks it)."""
    from rmaudit import __version__
    from rmaudit.record import audit_record

    data = {"eval": options.data, "train": options.train_data, "pairs": options.pairs,
            "rollouts": options.rollouts_file, "training_log": options.training_log,
            "chat_template": options.chat_template}
    return audit_record(checkpoint, data, getattr(tokenizer, "chat_template", None), __version__,
                        gold=Path(options.gold) if options.gold else None)


def _preflight(checkpoint: Path, options: AuditOptions) -> None:
    """Refuse what must not be loaded (pickle, custom code) or not audited (a random head)."""
    from rmaudit.modeling.preflight import resolve_source

    _preflight_policy(options.policy)
    if options.gold is not None:
        # The gold RM loads with the defaults (no pickle, no remote code, a trained head): it is
        # refused here, before anything loads, by the same rules its loader applies; the audited
        # RM's --allow-pickle and --trust-remote-code do not extend to it.
        _preflight_reward_model(Path(options.gold), None, allow_pickle=False, trust_remote_code=False,
                                allow_fresh_head=False)
    _, is_local = resolve_source(checkpoint, options.gguf_file, options.allow_hub)
    if is_local:
        _preflight_reward_model(checkpoint, options.gguf_file, allow_pickle=options.allow_pickle,
                                trust_remote_code=options.trust_remote_code, allow_fresh_head=options.allow_fresh_head)


def _preflight_reward_model(folder: Path, gguf_file: str | None, *, allow_pickle: bool, trust_remote_code: bool,
                            allow_fresh_head: bool) -> None:
    from rmaudit.modeling.preflight import inspect_checkpoint, require_reward_model

    facts = inspect_checkpoint(folder, gguf_file=gguf_file, allow_pickle=allow_pickle,
                               trust_remote_code=trust_remote_code)
    require_reward_model(facts, folder, allow_fresh_head)


def load_gold_context(ctx: AuditContext) -> AuditContext:
    """An AuditContext scoring with the --gold RM: loaded like the audited one (safetensors,
    no remote code), its template restored from its own manifest."""
    from rmaudit.modeling.loading import load_reward_model

    assert ctx.gold is not None
    loaded = load_reward_model(ctx.gold, dtype=ctx.dtype or "float32", device=ctx.device)
    manifest = read_checkpoint_manifest(ctx.gold)
    _restore_chat_template(loaded.tokenizer, manifest, {})
    return AuditContext(checkpoint=ctx.gold, model=loaded.model, tokenizer=loaded.tokenizer, manifest=manifest,
                        dtype=ctx.dtype, device=ctx.device, max_length=_gold_max_length(manifest, ctx),
                        batch_size=ctx.batch_size, share_prefixes=ctx.share_prefixes, pooling=ctx.pooling,
                        progress=ctx.progress, seed=ctx.seed)


def _gold_max_length(manifest: Manifest | None, ctx: AuditContext) -> int:
    """The gold RM's own trained length, else the audit's bound."""
    if manifest is not None and manifest.max_length:
        return manifest.max_length
    return ctx.max_length or FALLBACK_MAX_LENGTH


def read_checkpoint_manifest(checkpoint: Path) -> Manifest | None:
    from rmaudit.modeling.manifest import read_manifest

    return read_manifest(checkpoint) if checkpoint.is_dir() else None


# Used when neither --max-length, the manifest nor the model's config bounds a text.
FALLBACK_MAX_LENGTH = 4096


def _max_length(options: AuditOptions, manifest: Manifest | None, loaded: Any, notes: dict[str, Any]) -> int:
    """A bound always applies: the flag, else the manifest, else the model's position limit."""
    if options.max_length:
        return options.max_length
    if manifest is not None and manifest.max_length:
        return manifest.max_length
    from rmaudit.modeling.pooling import position_limit

    positions = position_limit(loaded.model)
    if positions is not None:
        notes["max_length_source"] = "the model's position limit (max_position_embeddings)"
        return positions
    notes["max_length_source"] = f"fallback {FALLBACK_MAX_LENGTH} (no flag, manifest or position limit)"
    return FALLBACK_MAX_LENGTH


def _load_checkpoint(checkpoint: Path, options: AuditOptions) -> Any:
    """The loaded model (a checkpoint that cannot be loaded at all is an input error)."""
    from rmaudit.modeling.loading import load_reward_model

    # Weights in the scoring dtype: on CPU, bf16 weights run about 2x faster than bf16 autocast.
    return load_reward_model(checkpoint, gguf_file=options.gguf_file, allow_hub=options.allow_hub,
                             dtype=options.dtype.value, allow_pickle=options.allow_pickle,
                             trust_remote_code=options.trust_remote_code, device=options.device,
                             attn_implementation=options.attn_implementation)


def read_template_file(path: Path | None) -> str | None:
    """The text of ``--chat-template``, read before any model loads (a bad file is named now)."""
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise input_error(path, None, None, f"--chat-template: cannot read it as UTF-8 text: {exc}") from None
    if not text.strip():
        raise input_error(path, None, None, "--chat-template: the file is empty")
    import jinja2

    try:  # syntax only: rendering needs the tokenizer, which loads with the model (_try_template)
        jinja2.Environment().parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise input_error(path, None, None, f"--chat-template: jinja syntax error at line {exc.lineno}: "
                                            f"{exc.message}") from None
    return text


def _restore_chat_template(tokenizer: Any, manifest: Manifest | None, notes: dict[str, Any],
                           trained: str | None = None) -> None:
    """The template every reading renders with: ``--chat-template`` when given (the format the
    RM was trained on, e.g. plain text for a TRL RM trained without a template); else the
    tokenizer's; else, for a tokenizer saved without one, the manifest's."""
    own = getattr(tokenizer, "chat_template", None)
    if trained is not None:
        from rmaudit.probes.chat_template import SAVED_TEMPLATE

        setattr(tokenizer, SAVED_TEMPLATE, own)  # chat_template compares against it without a --policy
        tokenizer.chat_template = trained
        notes["chat_template_source"] = "--chat-template"
        notes["checkpoint_template_differs"] = own != trained  # a consumer with the saved tokenizer renders `own`
        return
    recorded = manifest.chat_template if manifest else None
    if recorded and not own:
        tokenizer.chat_template = recorded
        notes["chat_template_source"] = "manifest"


def _try_template(tokenizer: Any) -> None:
    """Render one short conversation before any scoring: a template that loops or fails is a
    one-line input error here (:func:`rmaudit.scoring.render` bounds its time and size)."""
    from rmaudit.scoring import render

    try:
        render(tokenizer, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}])
    except RmauditInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - jinja raises many types; the template is the user's input
        raise RmauditInputError(f"chat template: cannot render a conversation: {type(exc).__name__}: {exc}") from None


def sample_pairs(pairs: Sequence[PreferencePair], max_pairs: int, seed: int) -> Sequence[PreferencePair]:
    """At most ``max_pairs`` pairs, a seeded uniform sample kept in file order (a view of a store)."""
    if len(pairs) <= max_pairs:
        return pairs
    keep = np.sort(np.random.default_rng(seed).choice(len(pairs), size=max_pairs, replace=False))
    return subset(pairs, keep.tolist())


# ----------------------------------------------------------------------------- data sides

def _preflight_policy(policy: Path | None) -> None:
    """A --policy with weights is sampled later, by policy_rollouts: refuse pickle weights and
    custom code now, before any model loads, not halfway through the audit."""
    from rmaudit.modeling.preflight import inspect_checkpoint
    from rmaudit.rollouts import has_weights, policy_source

    if policy is None or not Path(policy).is_dir() or not has_weights(policy):
        return
    folder, gguf_file = policy_source(policy)
    try:
        inspect_checkpoint(folder, gguf_file=gguf_file, allow_pickle=False, trust_remote_code=False)
    except RmauditInputError as exc:
        raise RmauditInputError(f"--policy: {exc} (a policy loads from safetensors or GGUF only, without custom "
                                "code; --allow-pickle and --trust-remote-code apply to the reward model)") from None


def _check_annotator_field(field: str | None, pairs: Sequence[PreferencePair] | None, data: Path | None) -> None:
    """--annotator-field must name a column the eval data has (checked before the model loads)."""
    if field is None:
        return
    if not pairs:
        raise RmauditInputError(f"--annotator-field {field}: there are no eval pairs to read it from (give --data)")
    if not any(p.meta.get(field) not in (None, "") for p in pairs):
        columns = sorted({k for p in pairs[:50] for k in p.meta})
        raise input_error(data or pairs[0].source, None, field, "--annotator-field: no row has this column "
                          f"(extra columns seen: {', '.join(columns) or 'none'})")


def _side_pairs(side: str, flag_path: Path | None, checkpoint: Path, manifest: Manifest | None,
                notes: dict[str, Any], skip_bad_rows: bool,
                annotator_field: str | None = None) -> Sequence[PreferencePair] | None:
    """Pairs of one side ("eval" or "train"): the flag's file, else the manifest's split, else
    None, in a :class:`PairStore` (the file is streamed, memory does not grow with it). Exact
    duplicate pairs are kept once: a copy is not independent evidence."""
    from rmaudit.data import read_pairs

    pairs: Sequence[PreferencePair] | None
    if flag_path is not None:
        notes[f"{side}_source"] = str(flag_path)
        loaded = read_pairs(flag_path, skip_bad_rows=skip_bad_rows, store=True)
        if loaded.bad_rows:
            notes[f"{side}_bad_rows_skipped"] = (f"{len(loaded.bad_rows)}; first: "
                                                 + " | ".join(m for _, m in loaded.bad_rows[:5]))
        pairs = loaded.pairs
    else:
        pairs = _manifest_side(side, checkpoint, manifest, notes) if manifest else None
    return None if pairs is None else drop_duplicate_pairs(pairs, side, notes, annotator_field)


def drop_duplicate_pairs(pairs: Sequence[PreferencePair], side: str, notes: dict[str, Any],
                         annotator_field: str | None = None) -> Sequence[PreferencePair]:
    """The first of each identical (prompt, chosen, rejected); the count goes in the notes. With
    ``annotator_field``, the same pair labelled by two annotators is two labels and stays."""
    kept = first_of_each(pairs, lambda p: ([[m["role"], m["content"]] for m in p.prompt], p.chosen, p.rejected,
                                           p.meta.get(annotator_field) if annotator_field else None))
    if len(kept) == len(pairs):
        return pairs
    notes[f"{side}_duplicate_pairs_dropped"] = len(pairs) - len(kept)
    return subset(pairs, kept)


def _manifest_side(side: str, checkpoint: Path, manifest: Manifest,
                   notes: dict[str, Any]) -> Sequence[PreferencePair] | None:
    """Reload the data file the trainer recorded and keep the side's pairs by prompt hash.

    The trainer records ``data.train`` (and ``data.eval`` for a separate held-out file), and
    the prompt hashes of both sides in ``split.prompt_hashes_file`` in the checkpoint. Without
    that file, the split is recomputed with ``split.eval_fraction`` (the same hash rule).
    """
    from rmaudit.data import prompt_hash, read_pairs
    from rmaudit.data.split import legacy_prompt_hash, on_eval_side

    record = manifest.data.get(side) or (manifest.data.get("train") if side == "eval" else None)
    if record is None:
        return None
    path = _find_recorded_file(record.path, checkpoint)
    if path is None:
        notes[f"{side}_source"] = f"not found: {record.path} (recorded in the manifest)"
        return None
    _note_hash_check(side, path, record.sha256, notes)
    settings = manifest.hyperparameters
    pairs: Sequence[PreferencePair] = read_pairs(path, adapter=settings.get("adapter"), limit=settings.get("limit"),
                                                 store=True).pairs
    hashes = _split_hashes(manifest.split, side, checkpoint)
    if hashes is not None:  # split files written before 0.5.3 hold the legacy hash
        pairs = keep_where(pairs, lambda p: prompt_hash(p.prompt) in hashes or legacy_prompt_hash(p.prompt) in hashes)
    elif "eval" not in manifest.data and manifest.split.get("eval_fraction") is not None:
        # split_by_prompt's rule as a filter, so the side stays a view of the stored file
        fraction = float(manifest.split["eval_fraction"])
        pairs = keep_where(pairs, lambda p: on_eval_side(p, fraction) == (side == "eval"))
    notes[f"{side}_source"] = f"manifest: {path}"
    return pairs or None


def _split_hashes(split: dict, side: str, checkpoint: Path) -> set[str] | None:
    """Prompt hashes of one side from the checkpoint's split file (``{"train": [...], "eval": [...]}``)."""
    name = split.get("prompt_hashes_file")
    path = checkpoint / name if name else None
    if path is None or not path.is_file():
        return None
    try:
        hashes = json.loads(path.read_text(encoding="utf-8"))[side]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise input_error(path, None, side, "expected a JSON object with a list of prompt hashes per side") from None
    return set(hashes)


def _find_recorded_file(recorded: str, checkpoint: Path) -> Path | None:
    """A path from the manifest: as written (absolute or from the cwd), else relative to the checkpoint."""
    for candidate in (Path(recorded), checkpoint / recorded, checkpoint.parent / recorded):
        if candidate.exists():
            return candidate
    return None


def _note_hash_check(side: str, path: Path, recorded: str | None, notes: dict[str, Any]) -> None:
    if not recorded:
        return
    from rmaudit.modeling.manifest import sha256_file

    if sha256_file(path) != recorded:
        notes[f"{side}_data_changed"] = f"{path} differs from the file the model was trained with (sha256)"


# ----------------------------------------------------------------------------- other inputs

def canonical_pairs(extra: Path | None) -> list[PreferencePair]:
    """The built-in canonical battery, plus the user's ``--pairs`` file."""
    from rmaudit.probes.canonical_pairs import BATTERY_FILE, load_canonical_pairs
    from rmaudit.resources import probe_data_dir

    files = [probe_data_dir() / BATTERY_FILE]
    if extra is not None:
        files.append(Path(extra))
    return load_canonical_pairs(files)


def _load_policy_tokenizer(policy: Path | None, allow_hub: bool) -> Any:
    if policy is None:
        return None
    from transformers import AutoTokenizer

    from rmaudit.rollouts import BUILTIN, policy_source

    if str(policy) == BUILTIN:
        folder, gguf_file = policy_source(BUILTIN)
        return AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file, local_files_only=True)
    if not Path(policy).exists() and not allow_hub:
        raise input_error(policy, None, None, "--policy tokenizer folder not found (pass --allow-hub for a hub id)")
    try:
        return AutoTokenizer.from_pretrained(str(policy), local_files_only=not allow_hub)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise input_error(policy, None, None, f"cannot load the --policy tokenizer: {first}") from exc
