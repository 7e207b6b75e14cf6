"""The Python API of the audit: :func:`check` (and :func:`run_audit`, its options-object twin).

``rmaudit check`` is a thin layer over these. The work is split in three small modules:
``options.py`` (what can be asked), ``inputs.py`` (load the checkpoint and gather what the
probes read) and ``runner.py`` (run the probes, assemble the result).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from rmaudit.inputs import build_context, sample_pairs
from rmaudit.options import AuditOptions, options_help
from rmaudit.results import AuditResult
from rmaudit.runner import prepare_probes, run_probes

__all__ = ["AuditOptions", "build_context", "check", "options_help", "run_audit", "run_probes", "sample_pairs"]


def run_audit(checkpoint: str | Path, options: AuditOptions | None = None) -> AuditResult:
    """Audit a reward-model checkpoint: load it, run the selected probes, return every result."""
    options = (options or AuditOptions()).validated()
    probes = prepare_probes(options)  # fail fast on a typo, before loading a model
    return run_probes(build_context(Path(checkpoint), options), options, probes)


def check(checkpoint: str | Path, probes: str | Sequence[str] = "all", data: str | Path | None = None,
          **options: Any) -> AuditResult:
    """Audit ``checkpoint`` and return the :class:`AuditResult` (``result.passed`` is the gate).

    ``options`` are :class:`AuditOptions` fields (``max_pairs=200``, ``dtype="bfloat16"``,
    ``limits={"length_bias": {"r2_fail": 0.2}}``...)::

        import rmaudit
        result = rmaudit.check("runs/demo", probes=["length_bias", "accuracy"], max_pairs=100)
        print(result.gate, [(f.metric, f.value) for f in result.probe("length_bias").findings])
    """
    known = {f.name for f in dataclasses.fields(AuditOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"rmaudit.check() got unknown options {unknown} (known: {sorted(known)})")
    for name in ("train_data", "policy", "pairs"):
        if options.get(name) is not None:
            options[name] = Path(options[name])
    return run_audit(checkpoint, AuditOptions(probes=probes, data=Path(data) if data else None, **options))
