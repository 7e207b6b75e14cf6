"""Atomic file writes: a reader sees the old file or the complete new one, never half.

Used for reports, manifests, configs, split files and the training metrics log; ``replace_dir``
puts whole checkpoint folders in place the same way."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` via a temp file in the same folder and ``os.replace``.

    The parent folder is created when missing. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes 0600 files; these files are meant to be shared
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def replace_dir(new: Path, target: Path) -> Path:
    """Put the complete folder ``new`` at ``target``. An existing ``target`` is renamed aside
    first and removed only after ``new`` is in place, so a crash leaves the old folder (or its
    aside copy, ``.<name>.old-*``) and never half of either."""
    new, target = Path(new), Path(target)
    share_tree(new)
    if not target.exists():
        new.rename(target)
        return target
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    aside.rmdir()
    target.rename(aside)
    new.rename(target)
    shutil.rmtree(aside, ignore_errors=True)
    return target


def share_tree(folder: Path) -> None:
    """Give a folder built under mkdtemp/mkstemp (0700/0600) the modes a plain ``mkdir`` and
    ``open`` would have had (0777/0666 less the umask): checkpoints and reports are shared."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)
