"""Plain-text formatting shared by every writer: numbers, cell values, truncation, labels."""

from __future__ import annotations

import json
import math
import re
from pathlib import PurePath
from typing import Any

from rmaudit.results import AuditResult, ProbeResult, Status

STATUS_LABELS = {
    Status.PASS: "pass",
    Status.WARN: "warn",
    Status.FAIL: "fail",
    Status.SKIP: "skip",
    Status.ERROR: "error",
}


def format_value(value: Any) -> str:
    """A metric or cell value as short readable text (4 significant digits for floats)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


# Characters that change how the text around them displays rather than being seen: C0/C1
# controls (ANSI escapes start with ESC), DEL, bidi overrides and isolates (the "Trojan
# Source" trick), zero-width and line-separator characters, lone surrogates. \t \n \r stay.
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e"
                        "\u2060-\u2069\ufeff\ud800-\udfff]")


def neutralise(text: str) -> str:
    """``text`` with every invisible or display-changing character shown as ``⟨U+XXXX⟩``;
    every writer (HTML, Markdown, JUnit, terminal) renders strings from data through it."""
    return _INVISIBLE.sub(lambda m: f"⟨U+{ord(m.group()):04X}⟩", text)


def neutralise_tree(value: Any) -> Any:
    """:func:`neutralise` applied to every string (keys too) in nested dicts and lists."""
    if isinstance(value, str):
        return neutralise(value)
    if isinstance(value, dict):
        return {neutralise_tree(k): neutralise_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [neutralise_tree(v) for v in value]
    return value


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis when something was cut."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def one_line(text: str) -> str:
    """Collapse all whitespace runs (newlines included) to single spaces."""
    return re.sub(r"\s+", " ", text).strip()


def checkpoint_name(checkpoint: str) -> str:
    """The last path component of a checkpoint path or hub id (``org/rm`` -> ``rm``)."""
    parts = [p for p in PurePath(str(checkpoint).replace("\\", "/")).parts if p not in ("/", ".", "")]
    return parts[-1] if parts else "checkpoint"


def counts_line(result: AuditResult) -> str:
    """``3 pass · 1 warn · 0 fail · 1 skip · 0 error``."""
    return " · ".join(f"{n} {status}" for status, n in result.counts().items())


def verdict_text(result: AuditResult) -> str:
    """``GATE PASSED`` / ``GATE FAILED``."""
    return "GATE PASSED" if result.gate == "pass" else "GATE FAILED"


def reason_text(probe: ProbeResult) -> str:
    """Why a probe has its status: each deciding finding with its number and limit
    (``"... [r2 = 0.41 >= 0.3]"``); the summary for a probe that passed or skipped."""
    reasons = probe.reasons
    if not reasons or probe.status in (Status.PASS, Status.SKIP):
        return probe.summary
    return "; ".join(f"{f.message} [{f.crossed}]" if f.crossed else f.message for f in reasons)
