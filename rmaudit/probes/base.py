"""The one small interface every probe implements, and the registry that names them.

A probe is a class with a fixed ``name``, a one-line ``description`` (shown by
``rmaudit probes``), a two-line ``why`` (shown in the HTML report), its default
thresholds, and a ``run`` method that returns a :class:`~rmaudit.results.ProbeResult`.
Register it with :func:`register_probe` in its own module under ``rmaudit/probes/``
and import that module in ``rmaudit/probes/__init__.py``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

from rmaudit.results import ProbeResult, Status

if TYPE_CHECKING:
    from rmaudit.probes.context import AuditContext


class ProbeSkipped(Exception):
    """Raised by a probe whose inputs are missing; the message is the reason shown to users."""


class Probe:
    """Base class of every probe. Subclasses set the class attributes and implement ``run``."""

    name: ClassVar[str]
    description: ClassVar[str]
    why: ClassVar[str]
    default_thresholds: ClassVar[dict[str, float]] = {}

    def run(self, ctx: "AuditContext", thresholds: dict[str, float]) -> ProbeResult:
        raise NotImplementedError

    def result(
        self,
        status: Status,
        summary: str,
        *,
        metrics: dict[str, Any] | None = None,
        thresholds: dict[str, Any] | None = None,
        evidence: list[dict[str, Any]] | None = None,
        chart: dict[str, Any] | None = None,
    ) -> ProbeResult:
        """Build this probe's result with its name and description filled in."""
        return ProbeResult(
            name=self.name,
            status=status,
            summary=summary,
            metrics=metrics or {},
            thresholds=thresholds or {},
            evidence=evidence or [],
            chart=chart or {},
            description=self.why,
        )


EVIDENCE_TEXT_LIMIT = 300


def clip_evidence(text: str | None, limit: int = EVIDENCE_TEXT_LIMIT) -> str | None:
    """Dataset text for an evidence row: at most ``limit`` characters, an ellipsis marking a cut.
    The HTML report shows it in full width; the JSON must stay small for 500-pair audits."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def metric(value: float | None, digits: int = 4) -> float | None:
    """A metric value for the result: rounded, with None for a missing or non-finite number."""
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


PROBES: dict[str, type[Probe]] = {}


def register_probe(cls: type[Probe]) -> type[Probe]:
    """Class decorator: make a probe available to ``--probes`` under its ``name``."""
    if cls.name in PROBES:
        raise ValueError(f"probe {cls.name!r} registered twice")
    PROBES[cls.name] = cls
    return cls


def grade(value: float, warn_at: float, fail_at: float) -> Status:
    """PASS/WARN/FAIL for a metric where larger is worse."""
    if value >= fail_at:
        return Status.FAIL
    if value >= warn_at:
        return Status.WARN
    return Status.PASS
