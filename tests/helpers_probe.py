"""Run one probe as the audit runner does, with overrides routed to its limits or settings."""

from __future__ import annotations

from typing import Any

from rmaudit.probes.base import Probe
from rmaudit.results import ProbeResult
from rmaudit.runner import run_probe


def record_progress_bars(monkeypatch) -> list[list]:
    """From now on, each bar the audit opens (``rmaudit.scoring.scoring_progress``) is
    recorded, not drawn, as [description, total, advanced so far]; returns the list."""
    import contextlib

    import rmaudit.scoring

    bars: list[list] = []

    @contextlib.contextmanager
    def recorded(total, description="scoring"):
        bars.append([description, total, 0])
        yield lambda n: bars[-1].__setitem__(2, bars[-1][2] + n)

    monkeypatch.setattr(rmaudit.scoring, "scoring_progress", recorded)
    return bars


def configured(cls: type[Probe], **overrides: Any) -> Probe:
    """``cls`` with each override given as a limit key (``r2_fail``) or a setting name (``sample_size``)."""
    limits = {k: v for k, v in overrides.items() if k in cls.limit_keys()}
    settings = {k: v for k, v in overrides.items() if k not in limits}
    return cls(limits, settings)


def run_configured(cls: type[Probe], ctx, **overrides: Any) -> ProbeResult:
    """The probe's result on ``ctx`` exactly as ``rmaudit check`` produces it (a skip is a result)."""
    return run_probe(configured(cls, **overrides), ctx)
