"""Folders for the tests' cached fixtures, removed when the test process exits.

Fixtures cached across tests (``functools.cache``, hypothesis examples) cannot use pytest's
``tmp_path``; a bare ``tempfile.mkdtemp`` left about 10 MB in /tmp per run (a trained tiny
run, a tiny base, SmolLM2's tokenizer). Everything here lives under one root per process.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path


@functools.cache
def _root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="rmaudit-tests-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


def scratch_dir(prefix: str = "") -> Path:
    """A new empty folder that is removed when the test process exits."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=_root()))
