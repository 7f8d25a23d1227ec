"""Whole-file compression of images: gzip, bzip2, xz (``dcterms:compression``).

``Compression`` names the format (the suffix, as written in metadata); ``Decompressor``
undoes it incrementally (a download feeds it chunks) with an optional cap on the output
(decompression bombs); ``open_decompressed`` gives a streaming file object over it.
Concatenated streams (pigz, pbzip2, pixz output) are read through to the end, like the
command-line tools do.
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import zlib
from collections.abc import Iterator
from enum import StrEnum
from typing import BinaryIO, Protocol

from ..errors import InputError, SizeMismatch

__all__ = [
    "Compression",
    "CorruptData",
    "Decompressor",
    "open_decompressed",
]

# Decompressed pieces handed out at a time: bounds memory whatever the compression ratio.
_PIECE = 4 << 20
# Compressed bytes read per step by open_decompressed.
_READ = 1 << 20


class CorruptData(InputError):
    """Compressed data that does not decompress (truncated, wrong format, damaged)."""


class Compression(StrEnum):
    GZ = "gz"
    BZ2 = "bz2"
    XZ = "xz"
    NONE = ""

    @classmethod
    def parse(cls, text: str | None) -> Compression:
        """The compression named by ``text``: gz/gzip, bz2/bzip2, xz, or ""/none.

        Raises InputError for anything else (zstd, zip, ...), listing what is supported.
        """
        key = (text or "").strip().lower().lstrip(".")
        try:
            return _NAMES[key]
        except KeyError:
            raise InputError(
                f"unsupported compression {text!r}; supported: gz, bz2, xz or none"
            ) from None

    @classmethod
    def from_suffix(cls, path: str | os.PathLike[str]) -> Compression:
        """The compression a file name announces (``disk.qcow2.gz`` -> GZ; no suffix -> NONE).

        Raises InputError for the suffix of a compression imagekit cannot read (``.zst``,
        ``.zip``, ...), rather than treating such a file as an uncompressed image.
        """
        name = os.fspath(path).lower()
        _, dot, suffix = name.rpartition(".")
        if not dot:
            return cls.NONE
        if suffix in _SUFFIXES:
            return _SUFFIXES[suffix]
        if suffix in _UNSUPPORTED_SUFFIXES:
            raise InputError(
                f"{os.fspath(path)}: {_UNSUPPORTED_SUFFIXES[suffix]} compression is not supported",
                hint="recompress with gzip, bzip2 or xz",
            )
        return cls.NONE

    @classmethod
    def from_magic(cls, head: bytes) -> Compression:
        """The compression of data starting with ``head`` (NONE if it looks uncompressed).

        Raises InputError if ``head`` starts with the magic of an unsupported compressor.
        """
        for magic, compression in _MAGIC:
            if head.startswith(magic):
                return compression
        for magic, name in _UNSUPPORTED_MAGIC:
            if head.startswith(magic):
                raise InputError(f"{name} compressed data is not supported")
        return cls.NONE

    @property
    def suffix(self) -> str:
        """The file-name suffix with its dot (``.gz``), or "" for NONE."""
        return f".{self.value}" if self.value else ""

    def check_magic(self, head: bytes, *, name: str = "data") -> None:
        """Raise CorruptData if ``head`` does not start like this compression's data."""
        if self is Compression.NONE or not head:
            return
        expected = next(magic for magic, c in _MAGIC if c is self)
        if not head.startswith(expected):
            raise CorruptData(f"{name}: not {_LONG_NAMES[self]} data (wrong magic bytes)")


_NAMES = {
    "": Compression.NONE,
    "none": Compression.NONE,
    "gz": Compression.GZ,
    "gzip": Compression.GZ,
    "bz2": Compression.BZ2,
    "bzip2": Compression.BZ2,
    "xz": Compression.XZ,
}
_SUFFIXES = {"gz": Compression.GZ, "bz2": Compression.BZ2, "xz": Compression.XZ}
_UNSUPPORTED_SUFFIXES = {
    "zst": "zstd",
    "zstd": "zstd",
    "lz4": "lz4",
    "lzma": "lzma (legacy)",
    "lz": "lzip",
    "z": "compress (.Z)",
    "zip": "zip",
    "7z": "7-zip",
    "rar": "rar",
}
_MAGIC = (
    (b"\x1f\x8b", Compression.GZ),
    (b"BZh", Compression.BZ2),
    (b"\xfd7zXZ\x00", Compression.XZ),
)
_UNSUPPORTED_MAGIC = (
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"LZIP", "lzip"),
    (b"7z\xbc\xaf\x27\x1c", "7-zip"),
)
_LONG_NAMES = {Compression.GZ: "gzip", Compression.BZ2: "bzip2", Compression.XZ: "xz"}


class _Engine(Protocol):
    @property
    def eof(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    @property
    def needs_input(self) -> bool: ...

    def decompress(self, data: bytes | memoryview, max_length: int = -1) -> bytes: ...


def _new_engine(compression: Compression) -> _Engine:
    if compression is Compression.GZ:
        # wbits 16+15: gzip header and trailer (CRC-32, length) checked by zlib.
        return _ZlibEngine(zlib.decompressobj(16 + zlib.MAX_WBITS))
    if compression is Compression.BZ2:
        return bz2.BZ2Decompressor()
    if compression is Compression.XZ:
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    raise ValueError(f"no decompressor for {compression!r}")


class _ZlibEngine:
    """zlib's decompressobj behind the bz2/lzma interface (``max_length``, ``needs_input``)."""

    def __init__(self, obj: zlib._Decompress) -> None:
        self._obj = obj
        self._full = False  # the last call filled max_length: more output may be pending

    @property
    def eof(self) -> bool:
        return self._obj.eof

    @property
    def unused_data(self) -> bytes:
        return self._obj.unused_data

    @property
    def needs_input(self) -> bool:
        return not self._obj.unconsumed_tail and not self._full

    def decompress(self, data: bytes | memoryview, max_length: int = -1) -> bytes:
        if not data:
            data = self._obj.unconsumed_tail
        out = self._obj.decompress(data, max(max_length, 0))
        self._full = max_length > 0 and len(out) == max_length
        return out


class Decompressor:
    """Incremental decompression: ``feed(chunk) -> bytes`` then ``flush() -> bytes``.

    With ``max_output`` set, raises SizeMismatch as soon as the output would pass it, having
    produced at most ``max_output + 1`` bytes (a decompression bomb never fills memory).
    Corrupt or truncated input raises CorruptData. ``Compression.NONE`` passes data through.
    """

    def __init__(self, compression: Compression | str, max_output: int | None = None) -> None:
        self.compression = Compression.parse(compression)
        self.max_output = max_output
        self.output_size = 0
        self._engine: _Engine | None = None
        self._finished = False

    def feed(self, chunk: bytes | bytearray | memoryview) -> bytes:
        """Decompress ``chunk``; returns what it yields (possibly b"")."""
        return b"".join(self.feed_pieces(chunk))

    def feed_pieces(
        self, chunk: bytes | bytearray | memoryview, *, piece: int = _PIECE
    ) -> Iterator[bytes]:
        """Like ``feed`` but yields the output in pieces of at most ``piece`` bytes.

        The chunk must stay unchanged until the iterator is exhausted.
        """
        if self._finished:
            raise ValueError("Decompressor already flushed")
        if self.compression is Compression.NONE:
            view = memoryview(chunk).cast("B")
            for start in range(0, len(view), piece):
                yield self._count(bytes(view[start : start + piece]))
            return
        data: bytes | memoryview = memoryview(chunk).cast("B") if chunk else b""
        while data:
            if self._engine is None or self._engine.eof:
                # A stream starts here (the first, or one concatenated after the last).
                # Zero bytes between or after streams are padding (xz stream padding, tape
                # blocks); no format's magic starts with zero.
                data = bytes(data).lstrip(b"\0") if self._engine is not None else data
                if not data:
                    break
                self._engine = _new_engine(self.compression)
            engine = self._engine
            try:
                out = engine.decompress(data, self._limit(piece))
                while True:
                    if out:
                        yield self._count(out)
                    if engine.eof or engine.needs_input:
                        break
                    out = engine.decompress(b"", self._limit(piece))
            except (zlib.error, OSError, EOFError, lzma.LZMAError) as e:
                raise CorruptData(f"corrupt {_LONG_NAMES[self.compression]} data: {e}") from e
            data = engine.unused_data if engine.eof else b""

    def _limit(self, piece: int) -> int:
        if self.max_output is None:
            return piece
        # One byte more than allowed, so that passing the cap is seen, never more.
        return max(1, min(piece, self.max_output - self.output_size + 1))

    def flush(self) -> bytes:
        """End of input: raises CorruptData if the last stream is incomplete."""
        self._finished = True
        if self.compression is Compression.NONE:
            return b""
        if self._engine is None:
            raise CorruptData(f"empty input: no {_LONG_NAMES[self.compression]} stream")
        if not self._engine.eof:
            raise CorruptData(f"truncated {_LONG_NAMES[self.compression]} data")
        return b""

    def _count(self, out: bytes) -> bytes:
        self.output_size += len(out)
        if self.max_output is not None and self.output_size > self.max_output:
            raise SizeMismatch(f"decompressed data exceeds the expected {self.max_output} bytes")
        return out


class _DecompressedReader(io.RawIOBase):
    def __init__(self, fp: BinaryIO, decompressor: Decompressor) -> None:
        self._fp = fp
        self._dec = decompressor
        self._pieces: Iterator[bytes] = iter(())
        self._pending = memoryview(b"")
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        target = memoryview(buffer).cast("B")
        while not self._pending:
            piece = next(self._pieces, None)
            if piece is not None:
                self._pending = memoryview(piece)
                break
            if self._eof:
                return 0
            chunk = self._fp.read(_READ)
            if not chunk:
                self._eof = True
                self._dec.flush()
                return 0
            self._pieces = self._dec.feed_pieces(chunk, piece=max(len(target), 64 << 10))
        n = min(len(target), len(self._pending))
        target[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def open_decompressed(
    fp: BinaryIO, compression: Compression | str, *, max_output: int | None = None
) -> BinaryIO:
    """A readable, streaming file object of ``fp``'s decompressed bytes.

    ``fp`` itself for NONE. Reading raises CorruptData on damaged or truncated input and
    SizeMismatch past ``max_output`` bytes. Closing the result does not close ``fp``.
    """
    compression = Compression.parse(compression)
    if compression is Compression.NONE and max_output is None:
        return fp
    raw = _DecompressedReader(fp, Decompressor(compression, max_output))
    return io.BufferedReader(raw, buffer_size=_READ)  # type: ignore[return-value]
