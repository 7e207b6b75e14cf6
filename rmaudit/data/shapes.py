"""Turn raw rows into `PreferencePair`s for the three generic shapes.

The shape is detected once per file, from its first row, and can be steered with a
`ColumnMap` (which names the columns to read):

- ``explicit``: ``prompt``, ``chosen``, ``rejected`` are strings; the prompt becomes one user
  message (a prompt that is itself an hh-rlhf transcript is split into its turns);
- ``conversational`` (TRL's format): ``chosen`` / ``rejected`` are lists of
  ``{"role", "content"}`` messages, or such lists JSON-encoded in a CSV/Parquet cell, with an
  optional ``prompt`` message list. Without a prompt column the prompt is the shared prefix
  of the two lists and the response is each list's final assistant message;
- ``hh``: no prompt column and ``chosen`` / ``rejected`` are whole hh-rlhf transcripts.

A pair whose chosen and rejected conversations disagree on the prompt is not an error but
is skipped (`SkipRow`) and counted by the loader: it compares two different conversations.
Optional columns: ``margin`` (a number; empty/NaN means none) and ``category`` (RewardBench's
``subset`` where a row has no ``category`` and none was named). Other scalar columns are kept in
``meta``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from rmaudit.data.hh import looks_like_hh_transcript, parse_hh_turns, split_hh_transcript
from rmaudit.data.pairs import Message, PreferencePair
from rmaudit.errors import input_error

EXPLICIT, CONVERSATIONAL, HH = "explicit", "conversational", "hh"
ROLES = ("system", "user", "assistant")


@dataclass
class ColumnMap:
    """Which column holds each field; ``None`` means the default name in brackets."""

    prompt: str | None = None
    """Prompt column ["prompt"]; a string or a message list."""
    chosen: str | None = None
    """Preferred response column ["chosen"]."""
    rejected: str | None = None
    """Dispreferred response column ["rejected"]."""
    margin: str | None = None
    """Optional per-pair margin column ["margin"]."""
    category: str | None = None
    """Optional category column ["category"]."""

    def name(self, field: str) -> str:
        """The column name to read for ``field``."""
        return getattr(self, field) or field

    def is_set(self, field: str) -> bool:
        """Whether the user named this column explicitly (so it must exist)."""
        return getattr(self, field) is not None


class SkipRow(Exception):
    """A row that is well-formed but cannot become a pair; the loader counts it by reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def detect_shape(row: dict, columns: ColumnMap, path: Path, number: int) -> str:
    """Pick the shape of a file from one of its rows."""
    for field in ("prompt", "margin", "category"):
        if columns.is_set(field) and columns.name(field) not in row:
            raise input_error(path, number, columns.name(field), "column not found")
    chosen = require(row, columns.name("chosen"), path, number)
    require(row, columns.name("rejected"), path, number)
    if isinstance(chosen, list) or _decode_messages(chosen) is not None:
        return CONVERSATIONAL
    if not isinstance(chosen, str):
        raise input_error(path, number, columns.name("chosen"),
                          f"expected a string or a message list, got {type(chosen).__name__}")
    if row.get(columns.name("prompt")) is not None:
        return EXPLICIT
    if looks_like_hh_transcript(chosen):
        return HH
    raise input_error(path, number, columns.name("prompt"),
                      "missing, and 'chosen' is neither a message list nor an hh-rlhf "
                      "transcript ('\\n\\nHuman: ...\\n\\nAssistant: ...')")


def row_to_pair(row: dict, shape: str, columns: ColumnMap, path: Path, number: int) -> PreferencePair:
    """Convert one row of a file of the given shape; raises SkipRow or RmauditInputError."""
    convert = {EXPLICIT: _explicit, CONVERSATIONAL: _conversational, HH: _hh}[shape]
    prompt, chosen, rejected = convert(row, columns, path, number)
    check_turn_order(prompt, path, number, columns.name("prompt"))
    # chosen first: an hh prompt is cut from the chosen transcript, so its error names that field
    for field, text in [("chosen", chosen), ("rejected", rejected)] + [("prompt", m["content"]) for m in prompt]:
        check_encodable(text, path, number, columns.name(field))
    category_column = category_field(row, columns)
    used = {columns.name(f) for f in ("prompt", "chosen", "rejected", "margin")} | {category_column}
    return PreferencePair(
        prompt=prompt, chosen=chosen, rejected=rejected,
        margin=read_margin(row, columns.name("margin"), path, number),
        source=str(path), row=number,
        category=read_category(row, category_column, path, number),
        meta=scalar_extras(row, used),
    )


def _explicit(row, columns, path, number):
    prompt = prompt_messages(require(row, columns.name("prompt"), path, number),
                             path, number, columns.name("prompt"))
    chosen = require_text(row, columns.name("chosen"), path, number)
    rejected = require_text(row, columns.name("rejected"), path, number)
    return prompt, chosen, rejected


def _conversational(row, columns, path, number):
    chosen = _message_list(row, columns.name("chosen"), path, number)
    rejected = _message_list(row, columns.name("rejected"), path, number)
    prompt_value = row.get(columns.name("prompt"))
    if prompt_value is None:
        if chosen[:-1] != rejected[:-1]:
            raise SkipRow("chosen and rejected prompts differ")
        prompt = chosen[:-1]
    else:
        prompt = prompt_messages(prompt_value, path, number, columns.name("prompt"))
    return (prompt, _completion(chosen, prompt, path, number, columns.name("chosen")),
            _completion(rejected, prompt, path, number, columns.name("rejected")))


def _completion(messages: list[Message], prompt: list[Message], path, number, field) -> str:
    """The final assistant message, after dropping a repeated copy of the prompt."""
    if messages[: len(prompt)] == prompt and len(messages) > len(prompt):
        messages = messages[len(prompt):]
    if messages[-1]["role"] != "assistant":
        raise input_error(path, number, field, f"last message has role {messages[-1]['role']!r}, expected 'assistant'")
    if len(messages) > 1:
        raise input_error(path, number, field,
                          f"expected one assistant message after the prompt, got {len(messages)} messages")
    return messages[-1]["content"]


def _hh(row, columns, path, number):
    chosen_prompt, chosen = _split_transcript(row, columns.name("chosen"), path, number)
    rejected_prompt, rejected = _split_transcript(row, columns.name("rejected"), path, number)
    if chosen_prompt != rejected_prompt:
        raise SkipRow("chosen and rejected prompts differ")
    return chosen_prompt, chosen, rejected


def _split_transcript(row, field, path, number):
    text = require_text(row, field, path, number)
    try:
        return split_hh_transcript(text)
    except ValueError as exc:
        raise input_error(path, number, field, f"not an hh-rlhf transcript: {exc}") from exc


def prompt_messages(value, path: Path, number: int, field: str) -> list[Message]:
    """A prompt cell as messages: a plain string, an hh transcript, or a message list."""
    decoded = _decode_messages(value)
    if isinstance(value, list) or decoded is not None:
        return validate_messages(decoded if decoded is not None else value, path, number, field)
    if not isinstance(value, str):
        raise input_error(path, number, field, f"expected a string or a message list, got {type(value).__name__}")
    if looks_like_hh_transcript(value):
        messages = parse_hh_turns(value)
        if messages[-1] == {"role": "assistant", "content": ""}:  # "...\n\nAssistant:" awaiting a reply
            messages.pop()
        return messages
    return [{"role": "user", "content": value}]


def _message_list(row, field, path, number) -> list[Message]:
    value = require(row, field, path, number)
    decoded = _decode_messages(value)
    if decoded is None and not isinstance(value, list):
        raise input_error(path, number, field, f"expected a message list, got {_describe(value)}")
    messages = validate_messages(decoded if decoded is not None else value, path, number, field)
    if not messages:
        raise input_error(path, number, field, "empty message list")
    return messages


def validate_messages(value: list, path: Path, number: int, field: str) -> list[Message]:
    """Check a list of ``{"role": str, "content": str}`` and copy it to plain dicts."""
    messages = []
    for index, message in enumerate(value):
        where = f"message {index + 1}"
        if not isinstance(message, dict):
            raise input_error(path, number, field, f"{where}: expected an object with role and content")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not role:
            raise input_error(path, number, field, f"{where}: 'role' must be a non-empty string")
        if role not in ROLES:
            raise input_error(path, number, field, f"{where}: role {role[:40]!r} is not one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise input_error(path, number, field, f"{where}: 'content' must be a string, got {_describe(content)}")
        messages.append({"role": role, "content": content})
    return messages


def check_encodable(text: str, path: Path, number: int, field: str) -> None:
    """Refuse text UTF-8 cannot encode: a JSON escape such as "\\ud800" decodes to a lone
    surrogate, which the tokenizer and every report format would fail on later."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise input_error(path, number, field, f"character {exc.start + 1} is a lone surrogate "
                                               f"(U+{ord(text[exc.start]):04X}), not Unicode text") from None


def check_turn_order(prompt: list[Message], path: Path, number: int, field: str) -> None:
    """A prompt the chat template can render as the model saw it in training: an optional
    leading system message, then user and assistant turns alternating, ending with the user
    (the response that follows is the assistant's)."""
    turns = prompt[1:] if prompt and prompt[0]["role"] == "system" else prompt
    if not turns:
        raise input_error(path, number, field, "the prompt has no user message")
    for index, message in enumerate(turns):
        expected = "user" if index % 2 == 0 else "assistant"
        if message["role"] != expected:
            position = index + 1 + (len(prompt) - len(turns))
            raise input_error(path, number, field, f"message {position}: role {message['role']!r} where "
                              f"{expected!r} was expected (turns must alternate user/assistant after "
                              "an optional first system message)")
    if turns[-1]["role"] != "user":
        raise input_error(path, number, field, "the prompt ends with an assistant message; "
                          "its last message must be the user's")


def _decode_messages(value) -> list | None:
    """A JSON-encoded message list (as CSV/Parquet cells hold them), else None."""
    if not isinstance(value, str) or not value.lstrip().startswith("[{"):
        return None
    try:
        decoded = json.loads(value)
    except json.JSONDecodeError:
        return None
    if isinstance(decoded, list) and decoded and all(isinstance(m, dict) and "role" in m for m in decoded):
        return decoded
    return None


def require(row: dict, field: str, path: Path, number: int):
    """The value of a required column, or a one-line error naming it."""
    if field not in row or row[field] is None:
        empty_cell = field in row and Path(path).suffixes[:1] in ([".csv"], [".tsv"])
        raise input_error(path, number, field, "missing (empty cell)" if empty_cell else "missing")
    return row[field]


def require_text(row: dict, field: str, path: Path, number: int) -> str:
    """A required string column."""
    value = require(row, field, path, number)
    if not isinstance(value, str):
        raise input_error(path, number, field, f"expected a string, got {_describe(value)}")
    return value


def _blank(value) -> bool:
    """Missing, empty, or NaN (how pandas writes an empty CSV/Parquet cell)."""
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def read_margin(row: dict, field: str, path: Path, number: int) -> float | None:
    """The optional margin as a float; missing, empty or NaN mean no margin."""
    value = row.get(field)
    if _blank(value):
        return None
    if isinstance(value, bool):
        raise input_error(path, number, field, "expected a number, got a boolean")
    try:
        margin = float(value)
    except (TypeError, ValueError):
        raise input_error(path, number, field, f"expected a number, got {_describe(value)}") from None
    if not math.isfinite(margin):
        raise input_error(path, number, field, f"expected a finite number, got {value!r}")
    return margin


def category_field(row: dict, columns: ColumnMap) -> str:
    """The column read as the category: the named one, else ``category``, else RewardBench's
    ``subset`` (its release files name the slice there), so per-subset accuracy needs no flag."""
    if columns.is_set("category") or "category" in row:
        return columns.name("category")
    return "subset" if "subset" in row else "category"


def read_category(row: dict, field: str, path: Path, number: int) -> str | None:
    """The optional category as a string; missing, empty or NaN mean none."""
    value = row.get(field)
    if _blank(value):
        return None
    if isinstance(value, (list, dict)):
        raise input_error(path, number, field, f"expected a string, got {type(value).__name__}")
    return str(value)


def scalar_extras(row: dict, used: set[str]) -> dict:
    """Columns the pair does not consume, when they hold plain scalars (ids, scores)."""
    return {k: v for k, v in row.items()
            if k not in used and (v is None or isinstance(v, (str, int, float, bool)))}


def _describe(value) -> str:
    if isinstance(value, str):
        return f"text {value[:40]!r}"
    if isinstance(value, bool):
        return f"a JSON boolean ({str(value).lower()})"
    return type(value).__name__
