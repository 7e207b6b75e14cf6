"""The one small interface every probe implements.

A probe is one class in one module: a fixed ``name``, a one-line ``description`` (shown by
``rmaudit probes``), a two-line ``why`` (shown in the report), the context ``inputs`` it
needs (a missing one skips it with a reason that names the flag), its :class:`Limit` s
(gates, configurable in ``[tool.rmaudit.limits.<name>]``), its :class:`Setting` s (how it
measures, ``[tool.rmaudit.settings.<name>]``), and ``run(ctx)`` returning a
:class:`~rmaudit.results.ProbeResult` whose findings carry the reasons. Register it as an
entry point in the ``rmaudit.probes`` group (see ``rmaudit/probes/registry.py``).

A probe that scores texts beyond the labelled pairs (edits, other templates) also lists them
in ``plan(ctx)``: the runner scores every probe's plan in one stream before the first probe
runs, and the probes then read their rewards from the shared cache (issue 13).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Sequence

from rmaudit.errors import RmauditInputError
from rmaudit.findings import Finding, Limit, Setting, Status, worst
from rmaudit.results import ProbeResult

if TYPE_CHECKING:
    from rmaudit.probes.context import AuditContext


class ProbeSkipped(Exception):
    """Raised by a probe whose inputs are missing; the message is the reason shown to users."""


class Probe:
    """Base class of every probe. Subclasses set the class attributes and implement ``run``."""

    name: ClassVar[str]
    description: ClassVar[str]
    why: ClassVar[str]
    order: ClassVar[int] = 1000                 # position in `rmaudit probes` and in reports
    section: ClassVar[str] = ""                 # report heading the probe is grouped under ("" = none)
    inputs: ClassVar[tuple[str, ...]] = ()      # AuditContext fields that must be present
    limits: ClassVar[tuple[Limit, ...]] = ()
    settings: ClassVar[tuple[Setting, ...]] = ()

    def __init__(self, limits: Mapping[str, float] | None = None, settings: Mapping[str, Any] | None = None):
        limits, settings = dict(limits or {}), dict(settings or {})
        _reject_unknown(self.name, "limit", limits, self.limit_keys())
        _reject_unknown(self.name, "setting", settings, [s.name for s in self.settings])
        self._limits = {lim.metric: lim.with_overrides(limits) for lim in self.limits}
        self._settings = {s.name: settings.get(s.name, s.default) for s in self.settings}

    @classmethod
    def limit_keys(cls) -> list[str]:
        return [key for lim in cls.limits for key in lim.keys()]

    def limit(self, metric: str) -> Limit:
        """This run's limit on ``metric`` (defaults with the user's overrides)."""
        return self._limits[metric]

    def setting(self, name: str) -> Any:
        return self._settings[name]

    def run(self, ctx: "AuditContext") -> ProbeResult:
        raise NotImplementedError

    def plan(self, ctx: "AuditContext") -> Iterable[Sequence[str]]:
        """The rendered texts ``run`` will score with the RM's readout (``ctx.score`` and
        friends), as sequences of texts; the runner scores them all before any probe runs.
        A probe that reads the model plans the labelled pairs (held-out, then canonical), which
        nearly every such probe rewards; override to add what else it scores. A text planned
        but never asked for costs one forward pass; one asked for but not planned is scored
        when asked: the plan is an optimisation, never a change in what is measured. A
        :class:`~rmaudit.probes.context.TokenReadings` among them plans token ids read
        another way (``ctx.token_rewards``)."""
        return [ctx.labelled_texts()] if "model" in self.inputs else []

    def result(
        self,
        findings: Sequence[Finding],
        summary: str,
        *,
        metrics: dict[str, Any] | None = None,
        evidence: list[dict[str, Any]] | None = None,
        chart: dict[str, Any] | None = None,
        status: Status | None = None,
        files: dict[str, str] | None = None,
    ) -> ProbeResult:
        """This probe's result; the status is the worst finding's unless ``status`` is given."""
        return ProbeResult(
            name=self.name,
            status=status or worst(f.status for f in findings),
            summary=summary,
            findings=list(findings),
            metrics=metrics or {},
            limits={m: {"comparison": lim.comparison.value, "warn": lim.warn, "fail": lim.fail}
                    for m, lim in self._limits.items()},
            settings=dict(self._settings),
            evidence=evidence or [],
            chart=chart or {},
            description=self.why,
            section=self.section,
            files=files or {},
        )


def _reject_unknown(probe: str, kind: str, given: Mapping[str, Any], known: list[str]) -> None:
    unknown = [k for k in given if k not in known]
    if unknown:
        raise RmauditInputError(f"{kind}s for {probe!r}: unknown {', '.join(map(repr, unknown))} "
                                f"(valid: {', '.join(known) or 'none'})")


EVIDENCE_TEXT_LIMIT = 300


def dtype_name(dtype: Any) -> str:
    """How reports name a torch dtype: ``bfloat16``, not ``torch.bfloat16``."""
    return str(dtype).replace("torch.", "")


def clip_evidence(text: str | None, limit: int = EVIDENCE_TEXT_LIMIT) -> str | None:
    """Dataset text for an evidence row: at most ``limit`` characters, an ellipsis marking a cut.
    The HTML report shows it in full width; the JSON must stay small for 500-pair audits."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def exception_line(exc: BaseException, limit: int = 160) -> str:
    """``Type: first line of the message`` cut to ``limit`` characters, for a finding that
    reports an error (transformers' messages run to several sentences and a URL)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    line = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return clip_evidence(line, limit) or line


def metric(value: float | None, digits: int = 4) -> float | None:
    """A metric value for the result: rounded, with None for a missing or non-finite number."""
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def percent(value: float | None) -> str:
    """A rate for a message ("12.5%"), "n/a" when it could not be measured."""
    return "n/a" if value is None else f"{value:.1%}"


def with_reasons(summary: str, findings: Sequence[Finding]) -> str:
    """The probe's summary line followed by the reasons for its status, if any."""
    reasons = reasons_text(findings)
    return f"{summary}. {reasons}" if reasons else summary


def reasons_text(findings: Sequence[Finding]) -> str:
    """"FAIL: <message>; <message>" for the findings that set the status ('' when all pass)."""
    status = worst(f.status for f in findings)
    if status is Status.PASS:
        return ""
    return status.value.upper() + ": " + "; ".join(f.message for f in findings if f.status is status)
