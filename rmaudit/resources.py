"""Locate the data files that ship with rmaudit (the repo's `probes/` folder)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def probe_data_dir() -> Path:
    """The folder holding canonical pair suites and known chat templates.

    Installed wheels carry it as the `rmaudit.probe_data` package; an editable or
    source checkout reads the repo's `probes/` folder directly.
    """
    source_tree = Path(__file__).resolve().parent.parent / "probes"
    if source_tree.is_dir():
        return source_tree
    return Path(str(resources.files("rmaudit.probe_data")))
