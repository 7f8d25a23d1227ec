"""Files on disk: atomic writes and the one lock.

Write files atomically: a temporary file beside the target, fsync, then os.replace.

A failure or an interrupt leaves the target as it was and removes the temporary file, so no
half-written output ever stands at the path the user asked for.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_open(path: Path | str, *, mode: int = 0o644) -> Iterator[IO[bytes]]:
    """Yield a binary file object; on clean exit it replaces ``path``, else it vanishes."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as fp:
            yield fp
            fp.flush()
            os.fchmod(fp.fileno(), mode)
            os.fsync(fp.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: Path | str, data: bytes | str, *, mode: int = 0o644) -> None:
    with atomic_open(path, mode=mode) as fp:
        fp.write(data.encode() if isinstance(data, str) else data)


@contextlib.contextmanager
def locked(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (made, with its directory, if missing).
    Advisory, per open file: every writer of the state it guards takes it."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+b") as fp:
        fcntl.flock(fp, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fp, fcntl.LOCK_UN)
