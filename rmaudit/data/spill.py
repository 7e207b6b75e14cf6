"""`SpillFile`: an unlinked temporary file that records are appended to, then read back by offset.

The audit's pair store and the trainer's token store keep their data here rather than in
memory (issue 13). The file lives in the temporary folder (``TMPDIR``), which may be small, or
full: an hh pair costs about 1 KB there, a training token 4 bytes. The file is unlinked, so an
error on it would name no file; a full or read-only temporary folder is reported instead as an
``OSError`` naming the folder and ``TMPDIR``, which the CLI prints as one line with exit code 2.
"""

from __future__ import annotations

import errno
import tempfile
from contextlib import contextmanager
from typing import Iterator

# The temporary folder cannot take the data: the user's environment, not a bug.
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


@contextmanager
def _in_temporary_folder(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno not in _NO_ROOM:
            raise
        folder = tempfile.gettempdir()
        raise OSError(exc.errno, f"{exc.strerror or exc} while writing rmaudit's temporary {what}; "
                                 f"set TMPDIR to a folder with room", folder) from exc


class SpillFile:
    """Append-only bytes in an unlinked temporary file (gone when closed or at exit); ``what``
    names the data in errors ("pair store", "token store")."""

    def __init__(self, what: str):
        self._what = what
        with _in_temporary_folder(what):
            self._file = tempfile.TemporaryFile(prefix=f"rmaudit-{what.replace(' ', '-')}-")
        self._end = 0
        self._reading = False

    def __len__(self) -> int:
        """Bytes appended so far."""
        return self._end

    def append(self, data: bytes) -> int:
        """Append ``data``; returns the offset it starts at."""
        if self._reading:
            self._file.seek(self._end)
            self._reading = False
        with _in_temporary_folder(self._what):
            self._file.write(data)
        start, self._end = self._end, self._end + len(data)
        return start

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes from ``offset``, through the file's read buffer: a pass in order makes
        few system calls (one ``os.pread`` a record was 20% slower over an hh file)."""
        if not self._reading:
            with _in_temporary_folder(self._what):
                self._file.flush()
            self._reading = True
        self._file.seek(offset)
        return self._file.read(size)
