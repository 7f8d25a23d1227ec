"""Checksums of image bytes: MD5, SHA-1, SHA-256, SHA-512 and the size, in one read.

The data is read once, in big chunks, and hashed by worker threads (hashlib releases the
GIL on large buffers, so the digests run on several cores at once). A hash is sequential,
but its state belongs to no thread: each worker takes the free hash object that is furthest
behind and feeds it its next chunk. This list schedule balances itself whatever the
relative speeds of the algorithms on the machine (no cost table to go stale), keeps the
slowest digest busy all the time, and keeps the hashes within a few chunks of each other,
which bounds memory to a small pool of reused buffers.

``MultiHasher`` is the incremental form (a download feeds it chunks); ``compute_digests``
reads a file object; ``digest_file`` opens a path and, when the file is compressed,
decompresses in the reading thread (pipelined with the hashing) so that the digests are of
the uncompressed bytes, as metadata requires.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import types
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from ..errors import InputError
from ..progress import Progress
from .compression import Compression, Decompressor
from .identifier import sha1_to_id

__all__ = [
    "ALL_ALGORITHMS",
    "DigestAlgorithm",
    "Digests",
    "MultiHasher",
    "compute_digests",
    "digest_file",
]

# What compute_digests reads: a binary file object (readinto is used when it has one).
Readable = BinaryIO | io.RawIOBase | io.BufferedIOBase

# Bytes per chunk handed to the hashes: large enough that hashlib releases the GIL and the
# per-chunk locking is noise, small enough that a chunk is still in cache for the next hash.
CHUNK_SIZE = 2 << 20
# Chunks in flight at most (read but not yet seen by every hash): bounds memory.
_MAX_PENDING = 8
# bytes objects at least this big are hashed in place; smaller ones are gathered first.
_MIN_DIRECT = 256 << 10


class DigestAlgorithm(StrEnum):
    """A checksum algorithm, valued by its name in metadata (``slreq:algorithm``)."""

    MD5 = "MD5"
    SHA1 = "SHA-1"
    SHA256 = "SHA-256"
    SHA512 = "SHA-512"

    @classmethod
    def parse(cls, text: str) -> DigestAlgorithm:
        """The algorithm named by ``text``: case, ``-`` and ``_`` do not matter (sha1, SHA-1).

        Raises InputError for an unknown name, listing the known ones.
        """
        key = str(text).strip().upper().replace("-", "").replace("_", "")
        for algorithm in cls:
            if algorithm.value.replace("-", "") == key:
                return algorithm
        raise InputError(
            f"unknown checksum algorithm {text!r}; known: {', '.join(a.value for a in cls)}"
        )

    @property
    def strength(self) -> int:
        """Orders algorithms from weakest (MD5 = 0) to strongest (SHA-512 = 3)."""
        return _STRENGTH[self]

    @property
    def hashlib_name(self) -> str:
        return self.value.replace("-", "").lower()

    @property
    def hex_length(self) -> int:
        return _HEX_LENGTH[self]

    def new(self) -> Any:
        """A fresh hashlib object for this algorithm."""
        # usedforsecurity=False: MD5/SHA-1 stay available on FIPS builds for interop values.
        return hashlib.new(self.hashlib_name, usedforsecurity=False)


_STRENGTH = {
    DigestAlgorithm.MD5: 0,
    DigestAlgorithm.SHA1: 1,
    DigestAlgorithm.SHA256: 2,
    DigestAlgorithm.SHA512: 3,
}
_HEX_LENGTH = {
    DigestAlgorithm.MD5: 32,
    DigestAlgorithm.SHA1: 40,
    DigestAlgorithm.SHA256: 64,
    DigestAlgorithm.SHA512: 128,
}
ALL_ALGORITHMS: tuple[DigestAlgorithm, ...] = tuple(DigestAlgorithm)
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Digests:
    """The size and hex digests of some bytes (the uncompressed image)."""

    size: int
    values: Mapping[DigestAlgorithm, str]

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 0:
            raise ValueError(f"size must be a non-negative int, not {self.size!r}")
        values: dict[DigestAlgorithm, str] = {}
        for key, value in self.values.items():
            algorithm = DigestAlgorithm.parse(key)
            if len(value) != algorithm.hex_length or not set(value) <= _HEX:
                raise ValueError(f"{algorithm} value {value!r} is not lower-case hex")
            values[algorithm] = value
        object.__setattr__(self, "values", types.MappingProxyType(values))

    def __hash__(self) -> int:
        return hash((self.size, tuple(sorted(self.values.items()))))

    def __getitem__(self, algorithm: DigestAlgorithm | str) -> str:
        return self.values[DigestAlgorithm.parse(algorithm)]

    def get(self, algorithm: DigestAlgorithm | str) -> str | None:
        return self.values.get(DigestAlgorithm.parse(algorithm))

    @property
    def sha1(self) -> str:
        """The SHA-1 hex; KeyError if it was not computed."""
        return self.values[DigestAlgorithm.SHA1]

    @property
    def identifier(self) -> str:
        """The Marketplace ID (from the SHA-1; KeyError if it was not computed)."""
        return sha1_to_id(self.sha1)

    def to_dict(self) -> dict[str, Any]:
        """``{"bytes": size, "MD5": ..., ...}`` in algorithm order, for JSON output."""
        out: dict[str, Any] = {"bytes": self.size}
        out.update((a.value, self.values[a]) for a in DigestAlgorithm if a in self.values)
        return out


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class _Hash(Protocol):
    def update(self, data: Any, /) -> None: ...
    def hexdigest(self) -> str: ...


class _Chunk:
    __slots__ = ("data", "release", "remaining")

    def __init__(self, data: Any, remaining: int, release: Callable[[], None] | None) -> None:
        self.data = data
        self.remaining = remaining
        self.release = release


class _Pipeline:
    """Chunks in order, hashed by worker threads; each hash sees every chunk in order."""

    def __init__(self, hashes: list[_Hash], threads: int, chunk_size: int) -> None:
        self._hashes = hashes
        self._nthreads = max(1, min(threads, len(hashes)))
        self._chunk_size = chunk_size
        self._cond = threading.Condition()
        self._chunks: dict[int, _Chunk] = {}
        self._produced = 0
        self._position = [0] * len(hashes)  # next chunk each hash needs
        self._busy = [False] * len(hashes)
        self._free: list[bytearray] = []
        self._allocated = 0
        self._closed = False
        self._aborted = False
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []

    # -- producer side (one thread) ------------------------------------------------------

    def take_buffer(self) -> bytearray:
        """A chunk-sized buffer to fill, waiting while all are in flight."""
        with self._cond:
            while True:
                self._check()
                if self._free:
                    return self._free.pop()
                if self._allocated < _MAX_PENDING:
                    self._allocated += 1
                    return bytearray(self._chunk_size)
                self._cond.wait()

    def give_back(self, buffer: bytearray) -> None:
        with self._cond:
            self._free.append(buffer)

    def submit(self, data: Any, buffer: bytearray | None = None) -> None:
        """Queue ``data`` (bytes, or a view of ``buffer``, returned to the pool once hashed)."""
        with self._cond:
            while len(self._chunks) >= _MAX_PENDING:
                self._check()
                self._cond.wait()
            self._check()
            release = None if buffer is None else (lambda: self._free.append(buffer))
            self._chunks[self._produced] = _Chunk(data, len(self._hashes), release)
            self._produced += 1
            self._cond.notify_all()
        if not self._threads:
            self._start()

    def close(self) -> None:
        """No more data: wait for the hashes to finish; re-raise a worker's error."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._join()
        with self._cond:
            self._check()

    def abort(self) -> None:
        """Stop the workers after their current chunk and wait for them."""
        self.stop()
        self._join()

    def stop(self) -> None:
        """Tell the workers to stop after their current chunk, without waiting."""
        with self._cond:
            self._aborted = True
            self._cond.notify_all()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self._aborted:
            raise RuntimeError("digest computation aborted")

    def _start(self) -> None:
        for n in range(self._nthreads):
            thread = threading.Thread(target=self._work, name=f"imagekit-digest-{n}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _join(self) -> None:
        for thread in self._threads:
            thread.join()
        self._threads = []

    # -- workers -----------------------------------------------------------------------

    def _next_task(self) -> int | None:
        """Under the lock: the hash to advance next, or None when there is nothing left."""
        while True:
            if self._aborted or self._error is not None:
                return None
            best = None
            for i, position in enumerate(self._position):
                free = not self._busy[i] and position < self._produced
                if free and (best is None or position < self._position[best]):
                    best = i
            if best is not None:
                return best
            if self._closed and all(p == self._produced for p in self._position):
                return None
            self._cond.wait()

    def _work(self) -> None:
        with self._cond:
            index = self._next_task()
            while index is not None:
                self._busy[index] = True
                seq = self._position[index]
                chunk = self._chunks[seq]
                self._cond.release()
                try:
                    # Big buffers: hashlib drops the GIL, the other workers run meanwhile.
                    self._hashes[index].update(chunk.data)
                except BaseException as e:
                    self._cond.acquire()
                    self._error = e
                    self._cond.notify_all()
                    return
                self._cond.acquire()
                self._busy[index] = False
                self._position[index] = seq + 1
                chunk.remaining -= 1
                if chunk.remaining == 0:
                    del self._chunks[seq]
                    if chunk.release is not None:
                        chunk.release()
                self._cond.notify_all()
                index = self._next_task()


class MultiHasher:
    """Several digests and the byte count of data given in pieces, hashed in parallel.

    ``update`` may be called with pieces of any size (it gathers small ones); hashing runs
    on up to one thread per algorithm (at most the usable cores), started on the first full
    chunk, so tiny inputs never start a thread. ``finish`` returns the ``Digests``. Use it
    as a context manager (or call ``close``) so that an abandoned hasher stops its threads.
    ``update`` raises the error of a failed worker; a stopped hasher refuses more data.
    """

    def __init__(
        self,
        algorithms: Iterable[DigestAlgorithm | str] = ALL_ALGORITHMS,
        *,
        threads: int | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.algorithms: tuple[DigestAlgorithm, ...] = tuple(
            dict.fromkeys(DigestAlgorithm.parse(a) for a in algorithms)
        )
        if not self.algorithms:
            raise InputError("no checksum algorithm chosen")
        self._hashes: list[_Hash] = [a.new() for a in self.algorithms]
        self._pipeline = _Pipeline(
            self._hashes, threads if threads is not None else _usable_cores(), chunk_size
        )
        self._chunk_size = chunk_size
        self._staging: bytearray | None = None
        self._staged = 0
        self._dispatched = False
        self._result: Digests | None = None
        self._closed = False
        self.size = 0
        # A hasher dropped without close() must not leave its threads parked forever. Only a
        # signal to stop: the collector may run this in any thread, even a worker.
        weakref.finalize(self, self._pipeline.stop)

    def __enter__(self) -> MultiHasher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Add the next piece of data. May block while the hashes catch up (back-pressure)."""
        if self._closed:
            raise ValueError("MultiHasher is finished or closed")
        view = memoryview(data).cast("B")
        n = len(view)
        if not n:
            return
        try:
            self.size += n
            if isinstance(data, bytes) and n >= _MIN_DIRECT:
                # Immutable and big: hash it in place, no copy.
                self._flush_staging()
                self._dispatched = True
                self._pipeline.submit(data)
                return
            while view:
                if self._staging is None:
                    self._staging = self._pipeline.take_buffer()
                    self._staged = 0
                room = len(self._staging) - self._staged
                take = min(room, len(view))
                self._staging[self._staged : self._staged + take] = view[:take]
                self._staged += take
                view = view[take:]
                if self._staged == len(self._staging):
                    self._flush_staging()
        except BaseException:
            self.close()
            raise

    def read_from(self, fp: Readable, *, progress: Progress | None = None) -> None:
        """Add everything ``fp`` yields, reading straight into the chunk buffers."""
        if self._closed:
            raise ValueError("MultiHasher is finished or closed")
        self._flush_staging()
        readinto = getattr(fp, "readinto", None)
        try:
            while True:
                buffer = self._pipeline.take_buffer()
                n = _fill(fp, buffer, readinto)
                if n:
                    self.size += n
                    if progress is not None:
                        progress(n)
                if n < len(buffer):
                    # End of file: a short last chunk goes through the staging path, so a
                    # file smaller than a chunk is hashed inline without starting threads.
                    self._staging, self._staged = buffer, n
                    return
                self._dispatched = True
                self._pipeline.submit(memoryview(buffer), buffer)
        except BaseException:
            self.close()
            raise

    def finish(self) -> Digests:
        """Wait for the hashes and return the digests (the same object on later calls)."""
        if self._result is not None:
            return self._result
        if self._closed:
            raise ValueError("MultiHasher was closed before finishing")
        try:
            if not self._dispatched and self._staging is not None:
                # Less than one chunk in all: not worth a thread.
                piece = memoryview(self._staging)[: self._staged]
                for h in self._hashes:
                    h.update(piece)
                piece.release()
                self._staging = None
            else:
                self._flush_staging()
            self._pipeline.close()
        except BaseException:
            self.close()
            raise
        self._closed = True
        self._result = Digests(
            self.size,
            {a: h.hexdigest() for a, h in zip(self.algorithms, self._hashes, strict=True)},
        )
        return self._result

    def close(self) -> None:
        """Stop the worker threads (after their current chunk); idempotent."""
        self._closed = True
        self._pipeline.abort()

    def _flush_staging(self) -> None:
        if self._staging is None:
            return
        buffer, staged = self._staging, self._staged
        self._staging = None
        if staged:
            self._dispatched = True
            self._pipeline.submit(memoryview(buffer)[:staged], buffer)
        else:
            self._pipeline.give_back(buffer)


def _fill(fp: Readable, buffer: bytearray, readinto: Callable[[Any], int] | None) -> int:
    """Read until ``buffer`` is full or the file ends; the number of bytes read."""
    view = memoryview(buffer)
    filled = 0
    with view:
        while filled < len(buffer):
            if readinto is not None:
                n = readinto(view[filled:])
                if n is None:  # non-blocking stream with nothing ready: not supported
                    raise InputError("cannot checksum a non-blocking stream")
            else:
                data = fp.read(len(buffer) - filled)
                n = len(data)
                view[filled : filled + n] = data
            if not n:
                break
            filled += n
    return filled


def compute_digests(
    fp: Readable,
    algorithms: Iterable[DigestAlgorithm | str] = ALL_ALGORITHMS,
    *,
    progress: Progress | None = None,
) -> Digests:
    """Digests and size of everything ``fp`` yields, read once.

    ``progress`` is called with the number of bytes of each read. Raises InputError for an
    unknown algorithm; lets the file object's errors (OSError, CorruptData...) through.
    KeyboardInterrupt stops the hashing threads before it propagates.
    """
    with MultiHasher(algorithms) as hasher:
        hasher.read_from(fp, progress=progress)
        return hasher.finish()


def digest_file(
    path: str | os.PathLike[str],
    algorithms: Iterable[DigestAlgorithm | str] = ALL_ALGORITHMS,
    *,
    compression: Compression | str | None = None,
    progress: Progress | None = None,
) -> Digests:
    """Digests and size of the UNCOMPRESSED bytes of the file at ``path``, read once.

    ``compression`` None means: from the file name's suffix. ``progress`` is called with
    the number of bytes read from the file (compressed bytes for a compressed file, so that
    a bar's total is the file size). Raises NotFound if the file does not exist, InputError
    for an unreadable path or unsupported compression, CorruptData (an InputError) for
    damaged compressed data.
    """
    path = Path(path)
    resolved = (
        Compression.from_suffix(path) if compression is None else Compression.parse(compression)
    )
    try:
        fp = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below
    except FileNotFoundError as e:
        from ..errors import NotFound

        raise NotFound(f"{path}: no such file") from e
    except OSError as e:
        raise InputError(f"{path}: {e.strerror}") from e
    with fp:
        if hasattr(os, "posix_fadvise"):
            # One sequential pass: ask for aggressive read-ahead.
            os.posix_fadvise(fp.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        if resolved is Compression.NONE:
            return compute_digests(fp, algorithms, progress=progress)
        with MultiHasher(algorithms) as hasher:
            for piece in _decompressed_pieces(fp, resolved, progress):
                hasher.update(piece)
            return hasher.finish()


def _decompressed_pieces(
    fp: io.RawIOBase, compression: Compression, progress: Progress | None
) -> Iterator[bytes]:
    """Decompress in the calling thread, yielding pieces the hashing threads take over."""
    decompressor = Decompressor(compression)
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    while True:
        n = fp.readinto(view)
        if not n:
            break
        if progress is not None:
            progress(n)
        # The pieces are new bytes objects: the read buffer is free again once they are out.
        yield from decompressor.feed_pieces(view[:n], piece=CHUNK_SIZE)
    decompressor.flush()
