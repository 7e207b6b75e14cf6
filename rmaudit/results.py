"""The one result model that every report format renders.

An audit produces an :class:`AuditResult` holding one :class:`ProbeResult` per probe.
``to_dict``/``from_dict`` define the JSON schema documented in ``docs/report-schema.md``;
the HTML, JUnit and Markdown writers read nothing but these objects, so a report can be
re-rendered later from its JSON alone.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = "1.0"


class Status(str, enum.Enum):
    """Outcome of one probe, ordered by severity for gating (see :data:`SEVERITY`)."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"


# `--fail-on warn` gates on warn and worse; an error always fails the gate because a
# crashed probe has checked nothing.
SEVERITY = {Status.SKIP: 0, Status.PASS: 0, Status.WARN: 1, Status.FAIL: 2, Status.ERROR: 2}


@dataclass
class ProbeResult:
    """What one probe found.

    ``metrics`` and ``thresholds`` are flat JSON-able mappings; ``evidence`` is a list of
    table rows (dicts with the same keys) taken from real data; ``chart`` holds the raw
    series the HTML report plots (free-form per probe, JSON-able).
    """

    name: str
    status: Status
    summary: str
    metrics: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    evidence: list[dict[str, Any]] = field(default_factory=list)
    chart: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "summary": self.summary,
            "description": self.description,
            "metrics": self.metrics,
            "thresholds": self.thresholds,
            "evidence": self.evidence,
            "chart": self.chart,
            "seconds": round(self.seconds, 3),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ProbeResult":
        return cls(
            name=data["name"],
            status=Status(data["status"]),
            summary=data.get("summary", ""),
            metrics=dict(data.get("metrics") or {}),
            thresholds=dict(data.get("thresholds") or {}),
            evidence=list(data.get("evidence") or []),
            chart=dict(data.get("chart") or {}),
            description=data.get("description", ""),
            seconds=float(data.get("seconds", 0.0)),
        )


@dataclass
class AuditResult:
    """A whole audit: the checkpoint, the gate verdict and every probe's result."""

    checkpoint: str
    probes: list[ProbeResult]
    fail_on: Status = Status.FAIL
    rmaudit_version: str = ""
    created_at: str = ""
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def gate(self) -> str:
        """"fail" when any probe is at or above ``fail_on`` severity, any probe errored, or
        no probe reached a verdict at all (everything skipped: nothing was checked)."""
        limit = SEVERITY[self.fail_on]
        if not any(p.status in (Status.PASS, Status.WARN, Status.FAIL) for p in self.probes):
            return "fail"
        for probe in self.probes:
            if probe.status is Status.ERROR or SEVERITY[probe.status] >= limit:
                return "fail"
        return "pass"

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in Status}
        for probe in self.probes:
            out[probe.status.value] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "rmaudit_version": self.rmaudit_version,
            "checkpoint": self.checkpoint,
            "created_at": self.created_at,
            "fail_on": self.fail_on.value,
            "gate": self.gate,
            "counts": self.counts(),
            "context": self.context,
            "probes": [p.to_dict() for p in self.probes],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AuditResult":
        return cls(
            checkpoint=data["checkpoint"],
            probes=[ProbeResult.from_dict(p) for p in data.get("probes", [])],
            fail_on=Status(data.get("fail_on", "fail")),
            rmaudit_version=data.get("rmaudit_version", ""),
            created_at=data.get("created_at", ""),
            context=dict(data.get("context") or {}),
        )
