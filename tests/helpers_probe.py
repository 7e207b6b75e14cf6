"""Run one probe as the audit runner does, with overrides routed to its limits or settings."""

from __future__ import annotations

from typing import Any

from rmaudit.probes.base import Probe
from rmaudit.results import ProbeResult
from rmaudit.runner import run_probe


def configured(cls: type[Probe], **overrides: Any) -> Probe:
    """``cls`` with each override given as a limit key (``r2_fail``) or a setting name (``sample_size``)."""
    limits = {k: v for k, v in overrides.items() if k in cls.limit_keys()}
    settings = {k: v for k, v in overrides.items() if k not in limits}
    return cls(limits, settings)


def run_configured(cls: type[Probe], ctx, **overrides: Any) -> ProbeResult:
    """The probe's result on ``ctx`` exactly as ``rmaudit check`` produces it (a skip is a result)."""
    return run_probe(configured(cls, **overrides), ctx)
