"""The one result model that every report format renders.

An audit produces an :class:`AuditResult` holding one :class:`ProbeResult` per probe, and
each probe result holds its :class:`~rmaudit.findings.Finding` list: the reason for its
status next to the number that caused it. ``to_dict``/``from_dict`` define the JSON schema
documented in ``docs/report-schema.md`` (version :data:`SCHEMA_VERSION`; reports of schema
1.x are migrated on read). The HTML, JUnit, Markdown and console writers read nothing but
these objects, so a report can be re-rendered later from its JSON alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rmaudit.findings import SEVERITY, Finding, Status, worst

__all__ = ["SCHEMA_VERSION", "SEVERITY", "AuditResult", "Finding", "ProbeResult", "Status", "worst"]

SCHEMA_VERSION = "2.1"


@dataclass
class ProbeResult:
    """What one probe found.

    ``findings`` grade metrics against limits; ``status`` is their worst unless the probe
    skipped or errored. ``metrics`` and ``settings`` are flat JSON-able mappings; ``limits``
    maps each gated metric to its ``{"comparison", "warn", "fail"}``; ``evidence`` is a list
    of table rows taken from real data; ``chart`` holds the raw series the HTML report plots.
    """

    name: str
    status: Status
    summary: str
    findings: list[Finding] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    evidence: list[dict[str, Any]] = field(default_factory=list)
    chart: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    seconds: float = 0.0
    section: str = ""  # report heading this probe is grouped under
    # Files written beside the report (name -> text), e.g. rollouts.jsonl; report.json lists their names.
    files: dict[str, str] = field(default_factory=dict)

    @property
    def reasons(self) -> list[Finding]:
        """The findings that set the status (all warn/fail findings at the probe's status)."""
        return [f for f in self.findings if f.status is self.status and f.status not in (Status.PASS,)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "summary": self.summary,
            "description": self.description,
            "findings": [f.to_dict() for f in self.findings],
            "metrics": self.metrics,
            "limits": self.limits,
            "settings": self.settings,
            "evidence": self.evidence,
            "chart": self.chart,
            "seconds": round(self.seconds, 3),
            "section": self.section,
            **({"files": sorted(self.files)} if self.files else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ProbeResult":
        status = Status(data["status"])
        summary = data.get("summary", "")
        if "findings" in data:
            findings = [Finding.from_dict(f) for f in data["findings"] or []]
            settings = dict(data.get("settings") or {})
        else:  # schema 1.x: no findings; the summary was the only reason, thresholds mixed limits and settings
            findings = [Finding(status, summary)] if status in (Status.WARN, Status.FAIL) else []
            settings = {"thresholds (schema 1.x)": dict(data.get("thresholds") or {})}
        return cls(
            name=data["name"],
            status=status,
            summary=summary,
            findings=findings,
            metrics=dict(data.get("metrics") or {}),
            limits=dict(data.get("limits") or {}),
            settings=settings,
            evidence=list(data.get("evidence") or []),
            chart=dict(data.get("chart") or {}),
            description=data.get("description", ""),
            seconds=float(data.get("seconds", 0.0)),
            section=str(data.get("section") or ""),
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
    required: list[str] = field(default_factory=list)  # probes that must reach a verdict (--require)
    record: dict[str, Any] = field(default_factory=dict)   # what was audited, content-addressed (rmaudit/record.py)
    signature: dict[str, Any] | None = None                # --sign-key: Ed25519 over the rest of report.json

    @property
    def gate(self) -> str:
        """"fail" when any probe is at or above ``fail_on`` severity, any probe errored, no probe
        reached a verdict at all (everything skipped: nothing was checked), or a required probe
        skipped or did not run."""
        limit = SEVERITY[self.fail_on]
        if not any(p.status in (Status.PASS, Status.WARN, Status.FAIL) for p in self.probes):
            return "fail"
        if self.unmet_requirements:
            return "fail"
        for probe in self.probes:
            if probe.status is Status.ERROR or SEVERITY[probe.status] >= limit:
                return "fail"
        return "pass"

    @property
    def skipped(self) -> list[str]:
        return [p.name for p in self.probes if p.status is Status.SKIP]

    @property
    def unmet_requirements(self) -> list[str]:
        """Required probes that skipped, errored or are missing from the result."""
        verdicts = {p.name for p in self.probes if p.status in (Status.PASS, Status.WARN, Status.FAIL)}
        return [name for name in self.required if name not in verdicts]

    @property
    def passed(self) -> bool:
        return self.gate == "pass"

    def probe(self, name: str) -> ProbeResult:
        """The result of one probe by name (KeyError when it did not run)."""
        for probe in self.probes:
            if probe.name == name:
                return probe
        raise KeyError(name)

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
            "required": self.required,
            "gate": self.gate,
            "counts": self.counts(),
            "context": self.context,
            "probes": [p.to_dict() for p in self.probes],
            "record": self.record,
            **({"signature": self.signature} if self.signature else {}),
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
            required=[str(n) for n in data.get("required") or []],
            record=dict(data.get("record") or {}),
            signature=data.get("signature"),
        )
