"""List every probe `rmaudit check` can run, with its one-line description."""

from __future__ import annotations

import typer


def probes_command() -> int:
    """List every probe with its one-line description and default thresholds."""
    from rmaudit.probes import PROBES

    width = max((len(name) for name in PROBES), default=0)
    for name, probe in PROBES.items():
        typer.echo(f"{name:<{width}}  {probe.description}")
        if probe.default_thresholds:
            pairs = ", ".join(f"{k}={v:g}" for k, v in probe.default_thresholds.items())
            typer.echo(f"{'':<{width}}  thresholds: {pairs}")
    return 0
