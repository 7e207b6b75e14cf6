"""The probes: one module per probe behind the :class:`Probe` interface (``base.py``).

Probes register as entry points in the ``rmaudit.probes`` group (``registry.py``); this
package imports none of them, so importing it is cheap.
"""

from rmaudit.probes.base import Probe, ProbeSkipped
from rmaudit.probes.registry import load_probes, register_probe, select_probes

__all__ = ["Probe", "ProbeSkipped", "load_probes", "register_probe", "select_probes"]
