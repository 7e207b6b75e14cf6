"""Compare two audits: what got better or worse between two checkpoints (or two reports).

Each side is an :class:`~rmaudit.results.AuditResult`. For every probe both audits ran, the
diff lists the status before and after and, for every graded finding (a metric with a
limit), the value before and after, its change and the limit, so "accuracy fell from 0.71
to 0.64, below the 0.65 warn" reads off one row. A probe whose status got more severe is a
regression; :attr:`AuditDiff.regressed` drives ``rmaudit diff``'s exit code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rmaudit.findings import Status
from rmaudit.results import AuditResult, ProbeResult

# Worse to the right; skip and error both mean "no verdict", error the worse of the two.
RANK = {Status.PASS: 0, Status.SKIP: 1, Status.WARN: 2, Status.FAIL: 3, Status.ERROR: 4}


@dataclass
class MetricChange:
    metric: str
    before: Any
    after: Any
    limit: Any
    comparison: str | None
    before_status: Status | None = None   # the finding's own status on each side
    after_status: Status | None = None

    @property
    def delta(self) -> float | None:
        if _number(self.before) and _number(self.after):
            return float(self.after) - float(self.before)
        return None


@dataclass
class ProbeChange:
    name: str
    before: Status | None      # None: the probe did not run in that audit
    after: Status | None
    metrics: list[MetricChange] = field(default_factory=list)

    @property
    def change(self) -> str:
        if self.before is None or self.after is None:
            return "added" if self.before is None else "removed"
        difference = RANK[self.after] - RANK[self.before]
        return "worse" if difference > 0 else "better" if difference < 0 else "same"


@dataclass
class AuditDiff:
    before: AuditResult
    after: AuditResult
    probes: list[ProbeChange]

    @property
    def regressed(self) -> list[str]:
        """Probes whose status got more severe, or that a required verdict lost."""
        return [p.name for p in self.probes if p.change == "worse"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "before": {"checkpoint": self.before.checkpoint, "gate": self.before.gate},
            "after": {"checkpoint": self.after.checkpoint, "gate": self.after.gate},
            "regressed": self.regressed,
            "probes": [{"name": p.name, "before": p.before.value if p.before else None,
                        "after": p.after.value if p.after else None, "change": p.change,
                        "metrics": [{"metric": m.metric, "before": m.before, "after": m.after, "delta": m.delta,
                                     "limit": m.limit, "comparison": m.comparison,
                                     "before_status": m.before_status.value if m.before_status else None,
                                     "after_status": m.after_status.value if m.after_status else None}
                                    for m in p.metrics]}
                       for p in self.probes],
        }


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _graded(probe: ProbeResult | None) -> dict[str, Any]:
    """metric -> finding, for the findings that grade a metric against a limit."""
    if probe is None:
        return {}
    return {f.metric: f for f in probe.findings if f.metric and f.comparison is not None}


def diff_audits(before: AuditResult, after: AuditResult) -> AuditDiff:
    """Probe by probe, in the order of the ``after`` audit (then probes only ``before`` ran)."""
    first = {p.name: p for p in before.probes}
    second = {p.name: p for p in after.probes}
    names = list(second) + [n for n in first if n not in second]
    changes = []
    for name in names:
        a, b = first.get(name), second.get(name)
        graded_a, graded_b = _graded(a), _graded(b)
        metrics = []
        for metric in list(graded_b) + [m for m in graded_a if m not in graded_b]:
            fa, fb = graded_a.get(metric), graded_b.get(metric)
            reference = fb if fb is not None else fa
            assert reference is not None  # the metric came from one of the two
            metrics.append(MetricChange(metric, fa.value if fa else None, fb.value if fb else None, reference.limit,
                                        reference.comparison.value if reference.comparison else None,
                                        fa.status if fa else None, fb.status if fb else None))
        changes.append(ProbeChange(name, a.status if a else None, b.status if b else None, metrics))
    return AuditDiff(before, after, changes)
