"""Every use of pycdlib's internals and every patch imagekit applies to it, in one place.

pycdlib's public API gives neither reproducible dates (it reads the wall clock and the
local zone), nor a kernel-side data copy, nor a fast way to add a file below a directory
whose record is already known. Each of those is here, small and tested against pycdlib's
own path for identical bytes, so a pycdlib upgrade has one file to check.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import io
import itertools
import os
import threading
import time as _time
from collections.abc import Generator, Iterator
from typing import IO, Any, BinaryIO

import pycdlib
import pycdlib.utils
from pycdlib import dr, inode

from ..errors import InternalError, IsoError

# --- a fixed clock for pycdlib -----------------------------------------------------------


class _FixedClock:
    """Stands in for the ``time`` module inside pycdlib: now is ``epoch``, local is UTC.

    pycdlib asks for the time and converts it several times per record (250,000 calls for
    50,000 files), so these are C callables rather than Python methods. pycdlib always
    passes a time to ``localtime``/``gmtime``.
    """

    def __init__(self, epoch: float) -> None:
        self.time = itertools.repeat(float(epoch)).__next__
        self.localtime = _time.gmtime
        self.gmtime = _time.gmtime

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


# pycdlib calls time.time() and time.localtime() while building records; we swap its
# modules' ``time`` for a fixed UTC clock during a build, so dates never depend on the
# wall clock or TZ. A lock keeps two builds in one process from interleaving the swaps
# (this one and the data copy's below).
_CLOCK_MODULES = ("pycdlib.pycdlib", "pycdlib.headervd", "pycdlib.dates", "pycdlib.utils")
_patch_lock = threading.RLock()


@contextlib.contextmanager
def fixed_clock(epoch: int) -> Iterator[None]:
    mods = [importlib.import_module(m) for m in _CLOCK_MODULES]
    with _patch_lock:
        saved = [(m, m.time) for m in mods]  # type: ignore[attr-defined]
        clock = _FixedClock(epoch)
        try:
            for m in mods:
                m.time = clock  # type: ignore[attr-defined]
            yield
        finally:
            for m, t in saved:
                m.time = t  # type: ignore[attr-defined]


# --- file data: copied by the kernel -------------------------------------------------------

_pycdlib_copy = pycdlib.utils.copy_data_yield


def kernel_copy(
    data_length: int, blocksize: int, infp: BinaryIO, outfp: IO[Any]
) -> Generator[int, None, None]:
    """pycdlib's copy loop for a file's data, done by ``copy_file_range`` when both ends are
    files: the bytes never pass through Python (half the CPU time for large files). A file
    that shrank while the ISO was written is an error (pycdlib would pad it silently)."""
    try:
        in_fd, out_fd = infp.fileno(), outfp.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        yield from _pycdlib_copy(data_length, blocksize, infp, outfp)
        return
    outfp.flush()
    in_off, out_off = infp.tell(), outfp.tell()
    left = data_length
    while left > 0:
        try:
            n = os.copy_file_range(in_fd, out_fd, min(left, blocksize), in_off, out_off)
        except OSError as e:
            if left != data_length or e.errno not in (
                errno.EXDEV,
                errno.EINVAL,
                errno.ENOSYS,
                errno.EOPNOTSUPP,
            ):
                raise
            infp.seek(in_off)
            yield from _pycdlib_copy(data_length, blocksize, infp, outfp)
            return
        if n == 0:
            raise IsoError(f"{getattr(infp, 'name', 'a file')} shrank while the ISO was written")
        in_off += n
        out_off += n
        left -= n
        yield n
    infp.seek(in_off)
    outfp.seek(out_off)


@contextlib.contextmanager
def kernel_copies() -> Iterator[None]:
    with _patch_lock:
        pycdlib.utils.copy_data_yield = kernel_copy
        try:
            yield
        finally:
            pycdlib.utils.copy_data_yield = _pycdlib_copy


# --- adding a file below a known directory record ------------------------------------


def child_record(parent: Any, ident: bytes) -> Any:
    """The directory record named ``ident`` among ``parent``'s children."""
    for rec in parent.children:
        if rec is not None and rec.file_ident == ident:
            return rec
    raise InternalError(f"directory {ident!r} not found after adding it")


def add_file_fast(
    iso: pycdlib.PyCdlib,
    source: str | BinaryIO,
    length: int,
    *,
    iso_name: bytes,
    iso_parent: Any,
    rr_name: bytes,
    joliet_name: bytes | None,
    joliet_parent: Any,
    file_mode: int,
    now: float,
) -> None:
    """What ``PyCdlib.add_file`` does for a single-extent file, given the parent records.

    pycdlib's own path re-parses and re-checks both paths and walks down from the root
    to find the parents, for every file; here the names are legal by construction and the
    parents known, which makes adding 50,000 files about twice as fast. The result is
    byte-identical (tests compare the two paths).
    """
    ino = inode.Inode()
    ino.new(length, source, isinstance(source, str), 0)
    added = length
    views: list[tuple[Any, bytes, Any, str, bytes, bool]] = [
        (iso.pvd, iso_name, iso_parent, iso.rock_ridge, rr_name, iso.xa)
    ]
    if joliet_name is not None:
        views.append((iso.joliet_vd, joliet_name, joliet_parent, "", b"", False))
    for vd, name, parent, rr, rr_bytes, xa in views:
        rec = dr.DirectoryRecord()
        rec.new_file(
            vd, length, name, parent, vd.sequence_number(), rr, rr_bytes, xa, file_mode, now, None
        )
        rec.data_extent_offset = 0
        added += iso._add_child_to_dr(rec)
        added += iso._update_rr_ce_entry(rec)
        ino.linked_records.append((rec, vd is iso.pvd))
        rec.inode = ino
    iso.inodes.append(ino)
    iso._finish_add(0, added)
