"""Findings: the reason for every verdict, next to the number that caused it.

A probe measures metrics and grades some of them against limits. Each grading is a
:class:`Finding` - status, one-line message, the metric, its value, the limit and the
comparison that trips it - and the probe's status is the worst of its findings
(:func:`worst`, the one severity rule of the code base). Every report format renders the
findings as they are, so a fail always shows which number crossed which limit.

Limits and settings are different things and are configured apart:

* a :class:`Limit` is a gate: ``[tool.rmaudit.limits.<probe>]`` sets ``<metric>_warn`` and
  ``<metric>_fail`` (``r2_fail = 0.2``);
* a :class:`Setting` only changes how a probe measures (sample sizes, seeds, significance
  levels): ``[tool.rmaudit.settings.<probe>]``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, Iterable


class Status(str, enum.Enum):
    """Outcome of one finding or probe, ordered by :data:`SEVERITY` for gating."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"


# `--fail-on warn` gates on warn and worse; an error always fails the gate because a
# crashed probe has checked nothing.
SEVERITY = {Status.SKIP: 0, Status.PASS: 0, Status.WARN: 1, Status.FAIL: 2, Status.ERROR: 2}


def worst(statuses: Iterable[Status], default: Status = Status.PASS) -> Status:
    """The most severe status (error beats fail on a tie of severity; pass beats skip)."""
    order = {Status.SKIP: 0, Status.PASS: 1, Status.WARN: 2, Status.FAIL: 3, Status.ERROR: 4}
    return max(statuses, key=order.__getitem__, default=default)


class Comparison(str, enum.Enum):
    """How a value trips its limit: ``value <op> limit`` means the limit is crossed."""

    AT_LEAST = ">="
    ABOVE = ">"
    AT_MOST = "<="
    BELOW = "<"
    EQUAL = "=="
    NOT_EQUAL = "!="

    def trips(self, value: Any, limit: Any) -> bool:
        if self in (Comparison.EQUAL, Comparison.NOT_EQUAL):
            return (value == limit) is (self is Comparison.EQUAL)
        if not _is_number(value) or not _is_number(limit):
            return False
        return {
            Comparison.AT_LEAST: value >= limit, Comparison.ABOVE: value > limit,
            Comparison.AT_MOST: value <= limit, Comparison.BELOW: value < limit,
        }[self]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class Finding:
    """One graded fact: ``metric`` = ``value``, checked ``comparison`` ``limit``.

    ``metric``/``value``/``limit``/``comparison`` are None for a finding that grades no
    number (a note such as "the policy template was inferred").

    ``p_value`` is set by probes whose finding rests on a hypothesis test (an effect graded
    only when it is significant); the runner then fills ``p_adjusted``, the Benjamini-Hochberg
    q-value across every such finding of the audit (rmaudit/multiple_testing.py).
    """

    status: Status
    message: str
    metric: str | None = None
    value: Any = None
    limit: Any = None
    comparison: Comparison | None = None
    p_value: float | None = None
    p_adjusted: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"status": self.status.value, "message": self.message, "metric": self.metric,
               "value": self.value, "limit": self.limit,
               "comparison": self.comparison.value if self.comparison else None}
        if self.p_value is not None:
            out.update(p_value=self.p_value, p_adjusted=self.p_adjusted)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Finding":
        comparison = data.get("comparison")
        return cls(Status(data["status"]), str(data.get("message", "")), data.get("metric"), data.get("value"),
                   data.get("limit"), Comparison(comparison) if comparison else None,
                   data.get("p_value"), data.get("p_adjusted"))

    @property
    def crossed(self) -> str:
        """``"r2 = 0.41 >= 0.3"``: the number and the limit it crossed (or passed)."""
        if self.metric is None:
            return ""
        from rmaudit.report.formatting import format_value

        text = f"{self.metric} = {format_value(self.value)}"
        if self.comparison is not None and self.limit is not None:
            op = self.comparison.value if self.status in (Status.WARN, Status.FAIL) else _NEGATED[self.comparison]
            text += f" {op} {format_value(self.limit)}"
        if self.p_value is not None:  # a tested finding shows its raw and its audit-wide adjusted p
            text += f" (p {p_text(self.p_value)}" + (f", BH q {p_text(self.p_adjusted)})" if self.p_adjusted is not None else ")")
        return text


def p_text(p: float) -> str:
    """"= 0.031" or "< 1e-12" (a t-test's p underflows to 0 for a large effect)."""
    return "< 1e-12" if p < 1e-12 else f"= {p:.2g}"


# A passing finding shows the comparison that holds ("r2 = 0.05 < 0.1").
_NEGATED = {Comparison.AT_LEAST: "<", Comparison.ABOVE: "<=", Comparison.AT_MOST: ">", Comparison.BELOW: ">=",
            Comparison.EQUAL: "!=", Comparison.NOT_EQUAL: "=="}


@dataclass(frozen=True)
class Limit:
    """A configurable gate on one metric: warn and/or fail when ``value <comparison> limit``."""

    metric: str
    comparison: Comparison
    warn: float | None = None
    fail: float | None = None
    help: str = ""

    def keys(self) -> list[str]:
        """The config keys of this limit: ``<metric>_warn`` and/or ``<metric>_fail``."""
        return [f"{self.metric}_{level}" for level in ("warn", "fail") if getattr(self, level) is not None]

    def with_overrides(self, values: dict[str, float]) -> "Limit":
        return Limit(self.metric, self.comparison, values.get(f"{self.metric}_warn", self.warn),
                     values.get(f"{self.metric}_fail", self.fail), self.help)

    def check(self, value: Any, message: str, metric: str | None = None) -> Finding:
        """Grade ``value``; ``metric`` names the graded metric when it is not the limit's own
        (one limit applied to several metrics, e.g. ``accuracy[<category>]``)."""
        name = metric or self.metric
        for status, limit in ((Status.FAIL, self.fail), (Status.WARN, self.warn)):
            if limit is not None and self.comparison.trips(value, limit):
                return Finding(status, message, name, value, limit, self.comparison)
        nearest = self.warn if self.warn is not None else self.fail
        return Finding(Status.PASS, message, name, value, nearest, self.comparison)

    def describe(self) -> str:
        parts = [f"{level} {self.comparison.value} {getattr(self, level):g}"
                 for level in ("warn", "fail") if getattr(self, level) is not None]
        return ", ".join(parts)


@dataclass(frozen=True)
class Setting:
    """A configurable knob of how a probe measures (not a gate)."""

    name: str
    default: Any
    help: str = ""


def note(status: Status, message: str, metric: str | None = None, value: Any = None) -> Finding:
    """A finding that grades no configurable limit (a rule, or a fact the user must see)."""
    return Finding(status, message, metric, value)
