"""Gate configuration for ``rmaudit check``: probe selection, ``fail-on``, per-probe limits and settings.

Found like ruff and pytest find theirs: walking up from the start folder, the first
folder holding an ``rmaudit.toml`` (keys at top level) or a ``pyproject.toml`` with a
``[tool.rmaudit]`` table wins; ``rmaudit.toml`` wins within one folder; an explicit
``--config`` path wins over discovery. Example::

    [tool.rmaudit]
    probes = ["length_bias", "padding"]      # or "all"
    fail-on = "warn"                         # "warn" or "fail"

    [tool.rmaudit.limits.length_bias]        # gates: <metric>_warn / <metric>_fail
    r2_warn = 0.05
    r2_fail = 0.2

    [tool.rmaudit.settings.padding]          # how a probe measures
    sample_size = 16

Unknown keys are errors (a typo must not silently disable a gate). The schema-1 table
``thresholds`` is still read: each key goes to ``limits`` or ``settings``, whichever names
it. Command-line flags override the file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmaudit.errors import input_error
from rmaudit.results import Status

CONFIG_FILE = "rmaudit.toml"
PYPROJECT = "pyproject.toml"
FAIL_ON_CHOICES = ("warn", "fail")
KNOWN_KEYS = ("probes", "require", "fail-on", "consumer", "limits", "settings", "thresholds")


@dataclass
class GateConfig:
    """The gate settings of one project (defaults when no file is found)."""

    probes: list[str] | None = field(default=None, metadata={"help": "probes to run; None means all"})
    fail_on: str = field(default="fail", metadata={"help": "lowest status that fails the gate: warn or fail"})
    limits: dict[str, dict[str, float]] = field(
        default_factory=dict, metadata={"help": "per-probe limit overrides, e.g. {'length_bias': {'r2_fail': 0.2}}"})
    settings: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata={"help": "per-probe setting overrides, e.g. {'padding': {'sample_size': 16}}"})
    consumer: str | None = field(default=None, metadata={"help": "the RL trainer that will read the reward (--consumer)"})
    require: list[str] | None = field(default=None, metadata={"help": "probes that must reach a verdict (--require)"})
    source: Path | None = field(default=None, metadata={"help": "the file these settings came from"})

    @property
    def fail_on_status(self) -> Status:
        """``fail_on`` as a :class:`~rmaudit.results.Status`."""
        return Status(self.fail_on)



def _has_rmaudit_table(pyproject: Path) -> bool:
    return "rmaudit" in _read_toml(pyproject).get("tool", {})


def find_config(start: Path) -> Path | None:
    """The nearest ``rmaudit.toml`` or ``pyproject.toml`` with ``[tool.rmaudit]``, walking up from ``start``."""
    start = Path(start).resolve()
    folder = start if start.is_dir() else start.parent
    for candidate in (folder, *folder.parents):
        if (candidate / CONFIG_FILE).is_file():
            return candidate / CONFIG_FILE
        pyproject = candidate / PYPROJECT
        if pyproject.is_file() and _has_rmaudit_table(pyproject):
            return pyproject
    return None


@dataclass
class ProbeKeys:
    """The configurable keys of one probe."""

    limits: list[str]
    settings: list[str]


def registered_probes() -> dict[str, ProbeKeys]:
    """Every registered probe's limit keys and setting names."""
    from rmaudit.probes.registry import BrokenProbe, load_probes  # late: it imports every probe module

    return {name: ProbeKeys([], []) if isinstance(cls, BrokenProbe) else
            ProbeKeys(cls.limit_keys(), [st.name for st in cls.settings]) for name, cls in load_probes().items()}


_REGISTRY: Any = object()  # default of ``known_probes``: validate against the probe registry


def load_gate_config(
    path: Path | None,
    start: Path,
    known_probes: Mapping[str, ProbeKeys] | None = _REGISTRY,
) -> GateConfig:
    """Load the gate config: ``path`` when given (``--config``), else the one found from ``start``.

    ``known_probes`` maps probe names to their limit and setting keys (default: the
    registered probes); unknown probe names and keys are errors. ``None`` skips those two
    checks. Raises :class:`~rmaudit.errors.RmauditInputError` naming the file and the key.
    """
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise input_error(path, None, None, "config file not found")
    else:
        path = find_config(start)
        if path is None:
            return GateConfig()
    return _parse(path, registered_probes() if known_probes is _REGISTRY else known_probes)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise input_error(path, None, None, f"not valid TOML: {exc}") from None
    except OSError as exc:
        raise input_error(path, None, None, f"cannot read: {exc.strerror}") from None


def _parse(path: Path, known_probes: Mapping[str, ProbeKeys] | None) -> GateConfig:
    data = _read_toml(path)
    prefix = ""
    if path.name == PYPROJECT:
        prefix = "tool.rmaudit."
        data = data.get("tool", {}).get("rmaudit")
        if data is None:
            raise input_error(path, None, None, "no [tool.rmaudit] table")
    table = {key.replace("_", "-"): (key, value) for key, value in data.items()}
    if len(table) != len(data):
        raise input_error(path, None, prefix.rstrip(".") or None, "a key is given twice (with '-' and with '_')")
    for key, (raw, _) in table.items():
        if key not in KNOWN_KEYS:
            raise input_error(path, None, prefix + raw, f"unknown key (known: {', '.join(KNOWN_KEYS)})")
    known = dict(known_probes) if known_probes is not None else None
    limits = _per_probe(path, prefix, table.get("limits"), known, "limits", number=True)
    settings = _per_probe(path, prefix, table.get("settings"), known, "settings", number=False)
    for probe, values in _per_probe(path, prefix, table.get("thresholds"), known, "thresholds", number=False).items():
        for key, value in values.items():
            is_limit = known is None or key in known[probe].limits
            (limits if is_limit else settings).setdefault(probe, {})[key] = value
    return GateConfig(
        probes=_probes(path, prefix, table.get("probes"), known),
        fail_on=_fail_on(path, prefix, table.get("fail-on")),
        consumer=_consumer(path, prefix, table.get("consumer")),
        require=_probes(path, prefix, table.get("require"), known, keep_all=True),
        limits=limits,
        settings=settings,
        source=path,
    )


def _probes(path: Path, prefix: str, entry: tuple[str, Any] | None, known: dict[str, ProbeKeys] | None,
            keep_all: bool = False) -> list[str] | None:
    if entry is None:
        return None
    key, value = entry
    if value == "all":
        return ["all"] if keep_all else None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise input_error(path, None, prefix + key, 'expected "all" or a list of probe names')
    for name in value:
        if known is not None and name not in known:
            raise input_error(path, None, prefix + key, f"unknown probe {name!r} (known: {', '.join(sorted(known))})")
    return value


def _fail_on(path: Path, prefix: str, entry: tuple[str, Any] | None) -> str:
    if entry is None:
        return "fail"
    key, value = entry
    if value not in FAIL_ON_CHOICES:
        raise input_error(path, None, prefix + key, f"expected 'warn' or 'fail', got {value!r}")
    return value


def _consumer(path: Path, prefix: str, entry: tuple[str, Any] | None) -> str | None:
    if entry is None:
        return None
    from rmaudit.options import Consumer

    key, value = entry
    known = [c.value for c in Consumer]
    if value not in known:
        raise input_error(path, None, prefix + key, f"expected one of {', '.join(known)}, got {value!r}")
    return value


def _per_probe(path: Path, prefix: str, entry: tuple[str, Any] | None, known: dict[str, ProbeKeys] | None,
               kind: str, number: bool) -> dict[str, dict[str, Any]]:
    """A ``[<kind>.<probe>]`` table of tables: probe names and keys checked against the registry."""
    if entry is None:
        return {}
    key, value = entry
    if not isinstance(value, dict):
        raise input_error(path, None, prefix + key, "expected a table of per-probe tables")
    out: dict[str, dict[str, Any]] = {}
    for probe, values in value.items():
        where = f"{prefix}{key}.{probe}"
        if known is not None and probe not in known:
            raise input_error(path, None, where, f"unknown probe (known: {', '.join(sorted(known))})")
        if not isinstance(values, dict):
            raise input_error(path, None, where, "expected a table of name = value")
        for name, item in values.items():
            allowed = _allowed(known[probe], kind) if known is not None else None
            if allowed is not None and name not in allowed:
                raise input_error(path, None, f"{where}.{name}", f"unknown {kind.rstrip('s')} "
                                  f"(known: {', '.join(sorted(allowed)) or 'none'})")
            numeric = number or (known is not None and name in known[probe].limits)
            if numeric and (isinstance(item, bool) or not isinstance(item, (int, float))):
                raise input_error(path, None, f"{where}.{name}", f"expected a number, got {item!r}")
        out[probe] = {name: float(item) if number else item for name, item in values.items()}
    return out


def _allowed(keys: ProbeKeys, kind: str) -> list[str]:
    return {"limits": keys.limits, "settings": keys.settings}.get(kind, keys.limits + keys.settings)
