"""Where a report set goes, checked before any work and written so that nothing is mixed or stale.

* ``--out`` and ``--json`` are checked writable before the model loads (not after the audit);
* one run at a time per ``--out``: a lock file next to it (``.<name>.rmaudit.lock``, held with
  ``flock``, so a killed run never leaves it held) makes a second run fail fast;
* the report set is written into a fresh temporary folder beside ``--out`` and swapped in
  whole at the end, so a reader sees the old set or the new one, never a mix;
* a run that fails after taking the lock moves the previous report set aside to
  ``<name>.previous/`` (nothing is deleted): ``--out`` never holds a report that looks current
  when the last run did not write it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from rmaudit.atomic import replace_dir
from rmaudit.errors import RmauditInputError, input_error

from rmaudit.report import REPORT_FILES

# Files rmaudit writes into a report folder; anything else there is the user's and is never swapped away.
REPORT_SET = set(REPORT_FILES.values())


def check_report_dir(out: Path) -> None:
    """``out`` can become a report folder: absent or a folder of rmaudit reports, in a writable place."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise input_error(out, None, None, "--out is a file; it must be a folder (it will hold the report set)")
    if out.is_dir():
        ours = report_set_files(out)
        foreign = sorted(p.name for p in out.iterdir() if p.name not in ours)
        if foreign:
            raise input_error(out, None, None, f"--out holds files rmaudit did not write ({', '.join(foreign[:5])}); "
                              "choose an empty folder or an earlier report folder")
    _check_writable_parent(out, "--out")


def report_set_files(out: Path) -> set[str]:
    """The names an earlier report set in ``out`` is made of: the report files, and the files its
    probes wrote beside them (``rollouts.jsonl``, ...), which its report.json lists; without a
    readable report.json, the report files only."""
    names = set(REPORT_SET)
    try:
        report = json.loads((out / REPORT_FILES["json"]).read_text(encoding="utf-8"))
        names.update(name for probe in report["probes"] for name in probe.get("files", []) if isinstance(name, str))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return names


def check_json_path(path: Path) -> None:
    path = Path(path)
    if path.is_dir():
        raise input_error(path, None, None, "--json is a folder; it must name a file")
    _check_writable_parent(path, "--json")


def _check_writable_parent(path: Path, flag: str) -> None:
    parent = path.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise input_error(parent, None, None, f"{flag}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise input_error(path, None, None, f"{flag}: cannot write in {parent} (permission denied or read-only)")


@contextlib.contextmanager
def report_lock(out: Path) -> Iterator[None]:
    """Hold ``out``'s lock for the run; a second run on the same folder gets a one-line error."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out.parent / f".{out.name}.rmaudit.lock"
    handle = open(lock_path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise RmauditInputError(f"{out}: another rmaudit run (pid {holder}) is writing this report folder; "
                                    "wait for it or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock; the file stays (unlinking it would race the next run)


def move_aside(out: Path) -> Path | None:
    """After a failed run: the previous report set goes to ``<name>.previous/`` (replacing an older one)."""
    out = Path(out)
    if not out.is_dir() or not any(out.iterdir()):
        return None
    aside = out.with_name(out.name + ".previous")
    if aside.exists():
        shutil.rmtree(aside)
    out.rename(aside)
    return aside


def staging_dir(out: Path) -> Path:
    """A fresh temporary folder beside ``out`` (same file system, so the swap is a rename)."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.rmaudit-new-", dir=out.parent))


def swap_in(staged: Path, out: Path) -> Path:
    return replace_dir(staged, Path(out))
