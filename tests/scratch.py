"""Folders for the tests' cached fixtures, removed when the test process exits.

Fixtures cached across tests (``functools.cache``, hypothesis examples) cannot use pytest's
``tmp_path``; a bare ``tempfile.mkdtemp`` left about 10 MB in /tmp per run (a trained tiny
run, a tiny base, SmolLM2's tokenizer). Everything here lives under one root per process.
:func:`full_temporary_folder` makes the temporary folder a full one, for the tests of what a
full ``TMPDIR`` does.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

import pytest


@functools.cache
def _root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="rmaudit-tests-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


def scratch_dir(prefix: str = "") -> Path:
    """A new empty folder that is removed when the test process exits."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=_root()))


def full_temporary_folder(monkeypatch, folder: Path) -> None:
    """``folder`` becomes the temporary folder, and rmaudit's stores' temporary files are
    /dev/full, where every write fails with the kernel's own ENOSPC (skips without it)."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (Linux) for a real 'No space left on device'")
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setattr("rmaudit.data.spill.tempfile.TemporaryFile", lambda **_: open("/dev/full", "w+b"))
