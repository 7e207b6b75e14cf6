"""All probes. Importing this package registers every probe module in ``PROBES``.

The import order is the order of ``rmaudit probes`` and of every report: the six classic
pathologies first, then the battery and the headline accuracy.
"""

from rmaudit.probes.base import PROBES, Probe, ProbeSkipped, register_probe

from rmaudit.probes import length_bias  # noqa: F401,E402
from rmaudit.probes import padding  # noqa: F401,E402
from rmaudit.probes import chat_template  # noqa: F401,E402
from rmaudit.probes import bias_term  # noqa: F401,E402
from rmaudit.probes import prompt_leakage  # noqa: F401,E402
from rmaudit.probes import canonical_pairs  # noqa: F401,E402
from rmaudit.probes import accuracy  # noqa: F401,E402

__all__ = ["PROBES", "Probe", "ProbeSkipped", "register_probe"]
