"""The probe registry: every probe is an entry point in the ``rmaudit.probes`` group.

rmaudit's own probes register in its ``pyproject.toml`` exactly as a third-party package
does in its own::

    [project.entry-points."rmaudit.probes"]
    my_probe = "my_package.my_probe:MyProbe"

Nothing is imported until a probe is asked for, so ``rmaudit --help`` stays fast. Probes
defined at run time (a notebook, a test) can be added with :func:`register_probe`. A
registered probe that fails to import is kept as a :class:`BrokenProbe` entry: selecting it
makes the audit report an error (the gate fails) instead of silently checking less.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Sequence

from rmaudit.errors import RmauditInputError

if TYPE_CHECKING:
    from rmaudit.probes.base import Probe

ENTRY_POINT_GROUP = "rmaudit.probes"

_RUNTIME: dict[str, type["Probe"]] = {}


@dataclass
class BrokenProbe:
    """A registered probe whose module could not be imported (its error, for the report)."""

    name: str
    target: str
    error: str


def register_probe(cls: type["Probe"]) -> type["Probe"]:
    """Class decorator: make a probe defined at run time available to ``--probes``."""
    if cls.name in _RUNTIME or cls.name in _entry_points():
        raise ValueError(f"probe {cls.name!r} registered twice")
    _RUNTIME[cls.name] = cls
    return cls


def unregister_probe(name: str) -> None:
    """Remove a probe added with :func:`register_probe` (tests use this to clean up)."""
    _RUNTIME.pop(name, None)


def _entry_points() -> dict[str, metadata.EntryPoint]:
    found: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found and found[ep.name].value != ep.value:
            raise RmauditInputError(f"probe {ep.name!r} is registered twice ({found[ep.name].value} and {ep.value}); "
                                    "uninstall one of the packages")
        found[ep.name] = ep
    return found


def load_probes() -> dict[str, "type[Probe] | BrokenProbe"]:
    """Every registered probe by name, in report order (``order``, then name)."""
    loaded: dict[str, type[Probe] | BrokenProbe] = {}
    for name, ep in _entry_points().items():
        try:
            cls = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, never hidden
            loaded[name] = BrokenProbe(name, ep.value, f"{type(exc).__name__}: {exc}")
            continue
        if getattr(cls, "name", None) != name:
            loaded[name] = BrokenProbe(name, ep.value, f"entry point {name!r} loads a class named "
                                       f"{getattr(cls, 'name', None)!r}")
            continue
        loaded[name] = cls
    loaded.update(_RUNTIME)
    if not loaded:
        raise RmauditInputError("no probes are registered: install rmaudit as a package (pip install -e .) "
                                f"so its {ENTRY_POINT_GROUP!r} entry points exist")

    def key(item: tuple[str, object]) -> tuple[int, str]:
        return (getattr(item[1], "order", 10_000), item[0])

    return dict(sorted(loaded.items(), key=key))


def probe_names() -> list[str]:
    """Registered probe names in report order."""
    return list(load_probes())


def get_probe(name: str) -> "type[Probe] | BrokenProbe":
    probes = load_probes()
    if name not in probes:
        raise RmauditInputError(f"unknown probe {name!r} (valid: {', '.join(probes)})")
    return probes[name]


def select_probes(selection: "str | Sequence[str] | None", flag: str = "--probes") -> list[str]:
    """Probe names to run, in report order for 'all'; unknown names are an input error."""
    if selection is None:
        selection = "all"
    if isinstance(selection, str):
        names = [n.strip() for n in selection.split(",") if n.strip()]
    else:
        names = [str(n).strip() for n in selection]
    known = probe_names()
    if not names or names == ["all"]:
        return known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise RmauditInputError(
            f"{flag}: unknown probe {', '.join(map(repr, unknown))} (valid: all, {', '.join(known)})")
    return list(dict.fromkeys(names))
