"""rmaudit: audit reward models for the classic RLHF pathologies before PPO sees them.

The Python API (each name loads its module on first use, so ``import rmaudit`` is cheap)::

    import rmaudit
    result = rmaudit.check("runs/demo", probes="all")          # -> AuditResult
    run = rmaudit.train(out="runs/rm", max_steps=50)            # -> TrainResult
"""

from __future__ import annotations

from typing import Any

from rmaudit._version import __version__

__all__ = ["AuditOptions", "AuditResult", "Finding", "Probe", "ProbeResult", "Status", "TrainConfig", "__version__",
           "check", "register_probe", "train"]

_LAZY = {
    "check": "rmaudit.audit", "AuditOptions": "rmaudit.options", "AuditResult": "rmaudit.results",
    "ProbeResult": "rmaudit.results", "Finding": "rmaudit.findings", "Status": "rmaudit.findings",
    "Probe": "rmaudit.probes.base", "register_probe": "rmaudit.probes.registry", "TrainConfig": "rmaudit.train.config",
    "train": "rmaudit.train.api",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'rmaudit' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
