"""Adapters for two public pairwise-judgement files that do not use chosen/rejected columns.

Both are recognised by their fields when no adapter is named.

LLMBar (``input``, ``output_1``, ``output_2``, ``label``): ``label`` 1 or 2 names the preferred
output. Any other label is an input error.

PandaLM (``instruction``, ``input``, ``response1``, ``response2``, ``annotator1..3``; each
annotator votes 0 = tie, 1 or 2): the prompt is the instruction, followed by the input after a
blank line when the input is not empty. The pair keeps the response that at least two of the
three annotators voted for; rows where the majority vote is a tie, or where no vote has a
majority, are skipped and counted.

Decision on PandaLM's malformed rows: six responses in ``testset-v1.json`` are JSON booleans
(``true``) instead of text. They are skipped with one logged warning that counts them
("response is a JSON boolean, not text") instead of failing the whole file, because the rest
of the benchmark is usable and guessing the lost text (it was probably "True") would invent
data. Any other non-string response is an input error naming the row and field.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rmaudit.data.pairs import PreferencePair
from rmaudit.data.shapes import SkipRow, require, require_text, scalar_extras
from rmaudit.errors import input_error

LLMBAR_FIELDS = ("input", "output_1", "output_2", "label")
PANDALM_FIELDS = ("instruction", "input", "response1", "response2", "annotator1", "annotator2", "annotator3")
PANDALM_BOOLEAN = "response is a JSON boolean, not text"
PANDALM_NO_MAJORITY = "annotator majority is a tie, or no majority"


def detect_adapter(row: dict) -> str | None:
    """The adapter whose fields this row has, or None for the generic shapes."""
    if all(field in row for field in PANDALM_FIELDS):
        return "pandalm"
    if all(field in row for field in LLMBAR_FIELDS):
        return "llmbar"
    return None


def llmbar_pair(row: dict, path: Path, number: int) -> PreferencePair:
    """One LLMBar row: ``label`` names the preferred of ``output_1`` / ``output_2``."""
    prompt = require_text(row, "input", path, number)
    outputs = {1: require_text(row, "output_1", path, number), 2: require_text(row, "output_2", path, number)}
    label = require(row, "label", path, number)
    if isinstance(label, bool) or label not in (1, 2):
        raise input_error(path, number, "label", f"expected 1 or 2, got {label!r}")
    return PreferencePair(
        prompt=[{"role": "user", "content": prompt}],
        chosen=outputs[label], rejected=outputs[3 - label],
        source=str(path), row=number,
        meta={"label": label, **scalar_extras(row, set(LLMBAR_FIELDS))},
    )


def pandalm_pair(row: dict, path: Path, number: int) -> PreferencePair:
    """One PandaLM row, preferring the response with a two-of-three annotator majority."""
    votes = [_vote(row, f"annotator{i}", path, number) for i in (1, 2, 3)]
    winner = next((v for v in (1, 2) if votes.count(v) >= 2), None)
    responses = {i: _response(row, f"response{i}", path, number) for i in (1, 2)}
    if winner is None:
        raise SkipRow(PANDALM_NO_MAJORITY)
    instruction = require_text(row, "instruction", path, number)
    extra = require_text(row, "input", path, number).strip()
    content = f"{instruction}\n\n{extra}" if extra else instruction
    return PreferencePair(
        prompt=[{"role": "user", "content": content}],
        chosen=responses[winner], rejected=responses[3 - winner],
        source=str(path), row=number,
        meta={"annotators": votes, "preferred": winner, **scalar_extras(row, set(PANDALM_FIELDS))},
    )


def _vote(row: dict, field: str, path: Path, number: int) -> int:
    vote = require(row, field, path, number)
    if isinstance(vote, bool) or vote not in (0, 1, 2):
        raise input_error(path, number, field, f"expected 0 (tie), 1 or 2, got {vote!r}")
    return vote


def _response(row: dict, field: str, path: Path, number: int) -> str:
    if isinstance(row.get(field), bool):
        raise SkipRow(PANDALM_BOOLEAN)
    return require_text(row, field, path, number)


ADAPTERS: dict[str, Callable[[dict, Path, int], PreferencePair]] = {
    "llmbar": llmbar_pair,
    "pandalm": pandalm_pair,
}
