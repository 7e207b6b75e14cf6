"""All probes. Importing this package registers every probe module in ``PROBES``."""

from rmaudit.probes.base import PROBES, Probe, ProbeSkipped, register_probe

__all__ = ["PROBES", "Probe", "ProbeSkipped", "register_probe"]
