"""List every probe `rmaudit check` can run: description, inputs, limits and settings."""

from __future__ import annotations

import typer


def probes_command(markdown: bool = typer.Option(False, "--markdown", help="Print docs/probes.md (the catalogue "
                                                                          "generated from the registry).")) -> int:
    """List every registered probe with its one-line description, limits and settings."""
    from rmaudit.probes.registry import BrokenProbe, load_probes

    if markdown:
        from rmaudit.probes.catalogue import catalogue_markdown

        typer.echo(catalogue_markdown(), nl=False)
        return 0

    probes = load_probes()
    width = max((len(name) for name in probes), default=0)
    pad = " " * width
    for name, probe in probes.items():
        if isinstance(probe, BrokenProbe):
            typer.echo(f"{name:<{width}}  BROKEN: cannot import {probe.target}: {probe.error}")
            continue
        typer.echo(f"{name:<{width}}  {probe.description}")
        if probe.limits:
            typer.echo(f"{pad}  limits: " + "; ".join(f"{lim.metric} {lim.describe()}" for lim in probe.limits))
        if probe.settings:
            typer.echo(f"{pad}  settings: " + ", ".join(f"{st.name}={st.default}" for st in probe.settings))
    return 0
