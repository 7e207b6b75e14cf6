"""The audit record: a content-addressed identity of what was audited, and its signature.

A gate is only worth something if the checkpoint handed to PPO is the one that passed.
``report.json`` carries :func:`audit_record`: the sha256 of every file of the checkpoint that
decides how it scores (weights, config, tokenizer, chat template), of the data files the
audit read, and the rmaudit version, plus one ``digest`` over all of it. ``rmaudit verify
REPORT CKPT`` recomputes the checkpoint's part (:func:`compare_checkpoint`) and passes only
on a byte-for-byte match of a passing report.

Files that cannot change a reward (a README, training logs, ``checkpoint-*/`` folders) are
not part of the identity, so copying a run folder with its logs still verifies; a new file
of a kind that can (a ``chat_template.jinja`` dropped in later) is a difference.

Signing (optional, ``pip install 'rmaudit[sign]'``) uses Ed25519 from the ``cryptography``
package: the signature covers the sha256 of the whole report (record, verdict and every
finding) minus the signature itself, so neither the checkpoint nor the verdict can be
swapped under it. Keys are plain PEM files, e.g. made with OpenSSL (see docs/verify.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from rmaudit.errors import RmauditInputError, input_error
from rmaudit.modeling.manifest import sha256_file, sha256_text

ALGORITHM = "sha256"
SIGNATURE_SCHEME = "ed25519"
_SIGNED_PREFIX = b"rmaudit audit record v1\n"

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".msgpack", ".h5", ".npz")
CONFIG_FILES = {"config.json", "generation_config.json", "rmaudit.json", "split.json"}
TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model"}
TEMPLATE_FILES = {"chat_template.jinja", "chat_template.json"}
TEMPLATE_FOLDER = "additional_chat_templates"
KINDS = ("weights", "config", "tokenizer", "chat_template")
# A transformers Trainer checkpoint's optimiser and RNG state: not weights, cannot change a reward.
TRAINER_STATE = ("training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state")


def file_kind(relative: str) -> str | None:
    """Which part of the identity a checkpoint file belongs to (None: it cannot change a reward)."""
    parts = relative.split("/")
    name = parts[-1]
    if len(parts) == 2 and parts[0] == TEMPLATE_FOLDER and name.endswith(".jinja"):
        return "chat_template"
    if len(parts) != 1 or name.startswith(TRAINER_STATE):
        return None
    if name in TEMPLATE_FILES:
        return "chat_template"
    if name in TOKENIZER_FILES:
        return "tokenizer"
    if name in CONFIG_FILES:
        return "config"
    if name.endswith(WEIGHT_SUFFIXES) or name.endswith(".index.json"):
        return "weights"
    return None


def checkpoint_identity(folder: Path) -> dict[str, dict[str, str]]:
    """``{kind: {relative path: sha256}}`` for every identity file of a checkpoint folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise input_error(folder, None, None, "expected a checkpoint folder")
    identity: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
    candidates = [p for p in folder.iterdir() if p.is_file()]
    if (folder / TEMPLATE_FOLDER).is_dir():
        candidates += [p for p in (folder / TEMPLATE_FOLDER).iterdir() if p.is_file()]
    for path in sorted(candidates):
        relative = path.relative_to(folder).as_posix()
        kind = file_kind(relative)
        if kind is not None:
            identity[kind][relative] = sha256_file(path)
    return identity


def audit_record(checkpoint: Path, data_files: Mapping[str, Path | None], chat_template: Any,
                 version: str, gold: Path | None = None) -> dict[str, Any]:
    """The record written into report.json (``digest`` covers every other field). A gold RM
    (the overoptimization probe's reference) is evidence too: its identity is recorded."""
    checkpoint = Path(checkpoint)
    record: dict[str, Any] = {
        "algorithm": ALGORITHM,
        "rmaudit_version": version,
        "checkpoint": checkpoint_identity(checkpoint) if checkpoint.is_dir() else None,
        "chat_template_sha256": _text_sha(chat_template),
        "data": {side: {"path": str(path), "sha256": sha256_file(Path(path))}
                 for side, path in sorted(data_files.items()) if path is not None and Path(path).is_file()},
    }
    if gold is not None:
        record["gold"] = checkpoint_identity(gold)
    if record["checkpoint"] is None:
        record["checkpoint_note"] = f"{checkpoint} is not a local folder: nothing to verify against"
    record["digest"] = canonical_sha(record)
    return record


def _text_sha(template: Any) -> str | None:
    """sha256 of the chat template the audit rendered with (a dict of named templates as canonical JSON)."""
    if template is None:
        return None
    # The manifest's chat_template.sha256 is the same hash of the same text: the two compare directly.
    return sha256_text(template) if isinstance(template, str) else canonical_sha(template)


def canonical_sha(value: Any) -> str:
    """sha256 of ``value`` as canonical JSON (sorted keys, no spaces): the same on every machine."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Difference:
    """One way the checkpoint on disk is not the audited one."""

    kind: str
    path: str
    change: str   # "changed", "missing", "added"
    audited: str | None = None
    now: str | None = None

    def describe(self) -> str:
        text = f"{self.kind}: {self.path} {self.change}"
        if self.change == "changed":
            text += f" (sha256 {self.audited[:12]}… audited, {self.now[:12]}… now)"  # type: ignore[index]
        return text


def compare_checkpoint(record: Mapping[str, Any], folder: Path) -> list[Difference]:
    """Every difference between the record's checkpoint identity and ``folder`` now."""
    audited = record.get("checkpoint")
    if not isinstance(audited, dict):
        raise RmauditInputError(str(record.get("checkpoint_note") or "the report's record has no checkpoint identity"))
    now = checkpoint_identity(folder)
    out: list[Difference] = []
    for kind in KINDS:
        before, after = dict(audited.get(kind) or {}), now.get(kind, {})
        for path in sorted(set(before) | set(after)):
            if path not in after:
                out.append(Difference(kind, path, "missing", before[path]))
            elif path not in before:
                out.append(Difference(kind, path, "added", None, after[path]))
            elif before[path] != after[path]:
                out.append(Difference(kind, path, "changed", before[path], after[path]))
    return out


def compare_data(record: Mapping[str, Any]) -> list[Difference]:
    """Data files that changed or vanished since the audit (re-hashed at their recorded paths)."""
    out = []
    for side, entry in sorted((record.get("data") or {}).items()):
        path = Path(entry["path"])
        if not path.is_file():
            out.append(Difference(f"data[{side}]", str(path), "missing", entry["sha256"]))
        elif (current := sha256_file(path)) != entry["sha256"]:
            out.append(Difference(f"data[{side}]", str(path), "changed", entry["sha256"], current))
    return out


def record_is_intact(record: Mapping[str, Any]) -> bool:
    """The record's own digest matches its fields (an edited report.json does not)."""
    body = {k: v for k, v in record.items() if k != "digest"}
    return record.get("digest") == canonical_sha(body)


# -- signing ---------------------------------------------------------------------------------

def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise RmauditInputError("signing needs the 'cryptography' package: pip install 'rmaudit[sign]'") from exc
    return serialization, ed25519


def load_signing_key(path: Path) -> Any:
    """An Ed25519 private key from an unencrypted PEM file (checked before any slow work)."""
    return _load_key(path, private=True)


def load_public_key(path: Path) -> Any:
    """An Ed25519 public key from a PEM file."""
    return _load_key(path, private=False)


def _load_key(path: Path, private: bool) -> Any:
    serialization, ed25519 = _crypto()
    what = "an unencrypted PEM private key" if private else "a PEM public key"
    try:
        data = Path(path).read_bytes()
        key = (serialization.load_pem_private_key(data, password=None) if private
               else serialization.load_pem_public_key(data))
    except (OSError, ValueError, TypeError) as exc:
        raise input_error(path, None, None, f"not {what} ({exc})") from None
    expected = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, expected):
        raise input_error(path, None, None, f"expected an Ed25519 key, got {type(key).__name__}")
    return key


def _public_fingerprint(public_key: Any) -> str:
    serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def _signed_message(report: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in report.items() if k != "signature"}
    return _SIGNED_PREFIX + canonical_sha(body).encode()


def signature_block(report: Mapping[str, Any], key: Any) -> dict[str, str]:
    """The ``signature`` block of ``report`` (the report.json dict), over everything else in it."""
    signature = key.sign(_signed_message(report))
    return {"scheme": SIGNATURE_SCHEME, "public_key_sha256": _public_fingerprint(key.public_key()),
            "value": base64.b64encode(signature).decode()}


def signature_problem(report: Mapping[str, Any], public_key: Any) -> str | None:
    """None when ``report`` carries a valid signature by ``public_key``; else what is wrong."""
    from cryptography.exceptions import InvalidSignature

    block = report.get("signature")
    if not isinstance(block, dict):
        return "the report is not signed"
    if block.get("scheme") != SIGNATURE_SCHEME:
        return f"unknown signature scheme {block.get('scheme')!r}"
    if block.get("public_key_sha256") != _public_fingerprint(public_key):
        return "the report was signed with a different key"
    try:
        public_key.verify(base64.b64decode(str(block.get("value", "")), validate=True), _signed_message(report))
    except (InvalidSignature, ValueError):
        return "the signature does not match the report (the report was changed after signing)"
    return None
