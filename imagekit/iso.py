"""ISO 9660 data disks: write (Rock Ridge 1.09 + Joliet, interchange level 3), list, extract.

Writing walks a directory in sorted (byte) order and streams every file from its path
(pycdlib opens it only while mastering), so memory stays flat however large the data is.
Files of 4 GiB and more become multi-extent records (interchange level 3).

Names: Rock Ridge carries the exact Linux name (any bytes but ``/`` and NUL), mode and
symlink target. The ISO 9660 and Joliet names are derived, unique per directory and
deterministic: ISO 9660 names upper-cased, characters outside ``A-Z0-9_`` become ``_``,
truncated to 30 characters (31 for directories), clashes get ``_<n>`` suffixes; Joliet
names keep the name where UCS-2 allows (forbidden ``*/:;?\\`` and non-BMP characters
become ``_``), truncated to 64, clashes (case-insensitive) get ``_<n>``. Directories deeper
than ISO 9660's 8 levels are relocated by pycdlib into ``/rr_moved`` (Rock Ridge CL/PL
links, as genisoimage does; kernels and xorriso show the empty ``rr_moved``, imagekit's own
listing hides it).

Reproducible: every date on the image (volume descriptors, directory records, Rock Ridge
time stamps) is ``SOURCE_DATE_EPOCH`` when set, else :data:`DEFAULT_EPOCH`, in UTC; owners
are 0. The same tree and options give the same bytes, whatever the files' mtimes and the
order they were created in.

Labels: ISO 9660 volume identifiers are d-characters. :func:`check_label` upper-cases
``a-z`` and refuses anything else outside ``A-Z0-9_`` (a hyphen or a space is an error, not
silently rewritten); at most 16 characters with Joliet (its label is UCS-2 in 32 bytes), 32
without. Context media need the exact lower-case labels their consumers look for
(``cidata``, ``config-2``); they call the writer with ``exact_label=True``.

Reading (``list_iso``, ``extract_iso``) is user-space (pycdlib), since this host has no
iso9660 in its kernel. Extraction refuses names that are empty, ``.``, ``..`` or contain
``/``, symlinks that are absolute or point outside the destination, duplicates, and never
follows a symlink while creating files (every component is opened with ``O_NOFOLLOW``).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import stat
import threading
import time as _time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO

import pycdlib
from pycdlib import inode
from pycdlib import utils as pycdlib_utils
from pycdlib.pycdlibexception import PyCdlibException

from ._atomic import atomic_open
from .errors import InputError
from .progress import Progress

DEFAULT_EPOCH = 946684800  # 2000-01-01T00:00:00Z: a fixed date when SOURCE_DATE_EPOCH is unset
ISO_SECTOR = 2048
PVD_OFFSET = 16 * ISO_SECTOR  # the primary volume descriptor; its label is at +40, 32 bytes

_D_CHARS = re.compile(r"[A-Z0-9_]*")
_NOT_D_CHAR = re.compile(r"[^A-Z0-9_]")
_JOLIET_BAD = set('*/:;?\\"<>|')
_ISO_FILE_MAX = 30  # ECMA-119 10.2/10.3: name + extension
_ISO_DIR_MAX = 31
_JOLIET_MAX = 64


class IsoError(InputError):
    """An ISO could not be written or read as asked (bad tree, bad image, unsafe member)."""


# --- labels ------------------------------------------------------------------------------


def check_label(label: str, *, joliet: bool = True) -> str:
    """Return the volume label to write for ``label`` (upper-cased), or raise IsoError.

    Raises:
        IsoError: empty, too long (16 with Joliet, 32 without) or characters outside
            ``A-Za-z0-9_``.
    """
    limit = 16 if joliet else 32
    if not label:
        raise IsoError("empty volume label")
    upper = label.upper() if label.isascii() else label
    if not _D_CHARS.fullmatch(upper):
        bad = sorted(set(_NOT_D_CHAR.findall(upper)))
        raise IsoError(
            f"volume label {label!r}: only A-Z, 0-9 and _ are allowed in an ISO 9660 label "
            f"(not {' '.join(repr(c) for c in bad)})"
        )
    if len(upper) > limit:
        raise IsoError(
            f"volume label {label!r} is {len(upper)} characters; at most {limit} "
            + ("with Joliet (use --no-joliet for up to 32)" if joliet else "without Joliet")
        )
    return upper


def source_date_epoch() -> int:
    """The fixed time written on images: ``SOURCE_DATE_EPOCH`` or :data:`DEFAULT_EPOCH`."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return DEFAULT_EPOCH
    try:
        epoch = int(value)
    except ValueError as e:
        raise IsoError(f"SOURCE_DATE_EPOCH={value!r} is not an integer") from e
    if not 0 <= epoch < 2**31:
        raise IsoError(f"SOURCE_DATE_EPOCH={value!r} is out of range")
    return epoch


# --- a fixed clock for pycdlib -----------------------------------------------------------


class _FixedClock:
    """Stands in for the ``time`` module inside pycdlib: now is ``epoch``, local is UTC."""

    def __init__(self, epoch: float) -> None:
        self._epoch = float(epoch)

    def time(self) -> float:
        return self._epoch

    def localtime(self, secs: float | None = None) -> _time.struct_time:
        return _time.gmtime(self._epoch if secs is None else secs)

    def gmtime(self, secs: float | None = None) -> _time.struct_time:
        return _time.gmtime(self._epoch if secs is None else secs)

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


# pycdlib calls time.time() and time.localtime() while building records; we swap its
# modules' ``time`` for a fixed UTC clock during a build, so dates never depend on the
# wall clock or TZ. A lock keeps two builds in one process from interleaving the swap.
_CLOCK_MODULES = ("pycdlib.pycdlib", "pycdlib.headervd", "pycdlib.dates", "pycdlib.utils")
_clock_lock = threading.RLock()


@contextlib.contextmanager
def _fixed_clock(epoch: int) -> Iterator[None]:
    mods = [importlib.import_module(m) for m in _CLOCK_MODULES]
    with _clock_lock:
        saved = [(m, m.time) for m in mods]  # type: ignore[attr-defined]
        clock = _FixedClock(epoch)
        try:
            for m in mods:
                m.time = clock  # type: ignore[attr-defined]
            yield
        finally:
            for m, t in saved:
                m.time = t  # type: ignore[attr-defined]


# --- the tree to write -------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    parts: tuple[str, ...]  # the real (Rock Ridge) path components, fs-decoded
    kind: str  # "dir" | "file" | "symlink"
    mode: int  # permission bits
    size: int = 0
    source: Path | bytes | None = None  # file contents: a path (streamed) or bytes
    target: str = ""  # symlink target


class _RawName(str):
    """A Rock Ridge name that encodes back to the original file-system bytes.

    pycdlib encodes names with UTF-8; Linux names may be any bytes (Python holds the
    undecodable ones as surrogate escapes), so this str gives pycdlib the real bytes.
    """

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return os.fsencode(str(self))


def _sort_key(name: str) -> bytes:
    return os.fsencode(name)


def _walk(root: Path) -> list[_Node]:
    """Every entry under ``root``, parents before children, siblings in byte order."""
    nodes: list[_Node] = []

    def visit(directory: Path, parts: tuple[str, ...]) -> None:
        try:
            names = sorted(os.listdir(directory), key=_sort_key)
        except OSError as e:
            raise IsoError(f"cannot read directory {directory}: {e.strerror}") from e
        for name in names:
            path = directory / name
            st = path.lstat()
            here = (*parts, name)
            if stat.S_ISDIR(st.st_mode):
                nodes.append(_Node(here, "dir", stat.S_IMODE(st.st_mode)))
                visit(path, here)
            elif stat.S_ISREG(st.st_mode):
                if not os.access(path, os.R_OK):
                    raise IsoError(f"cannot read {path}: permission denied")
                nodes.append(_Node(here, "file", stat.S_IMODE(st.st_mode), st.st_size, path))
            elif stat.S_ISLNK(st.st_mode):
                nodes.append(_Node(here, "symlink", 0o777, target=os.readlink(path)))
            else:
                raise IsoError(f"cannot store special file {path} (device, socket or FIFO)")

    if not root.is_dir():
        raise IsoError(f"{root} is not a directory")
    visit(root, ())
    return nodes


def _nodes_from_files(files: Mapping[str, bytes], modes: Mapping[str, int] | None) -> list[_Node]:
    """Nodes for an in-memory tree {"a/b.txt": data}; parent directories are implied."""
    modes = modes or {}
    dirs: set[tuple[str, ...]] = set()
    nodes: list[_Node] = []
    for rel, data in files.items():
        parts = PurePosixPath(rel).parts
        if not parts or any(p in ("", ".", "..", "/") for p in parts):
            raise IsoError(f"bad path in image: {rel!r}")
        for i in range(1, len(parts)):
            dirs.add(parts[:i])
        nodes.append(_Node(parts, "file", modes.get(rel, 0o644), len(data), data))
    nodes += [_Node(d, "dir", 0o755) for d in dirs]
    nodes.sort(key=lambda n: [_sort_key(p) for p in n.parts])
    return nodes


# --- name mapping ------------------------------------------------------------------------


def _iso_candidate(name: str, is_dir: bool) -> tuple[str, str]:
    """ISO 9660 (base, extension) for ``name``: d-characters, upper case, within limits."""
    if is_dir:
        return _NOT_D_CHAR.sub("_", name.upper())[:_ISO_DIR_MAX] or "_", ""
    base, dot, ext = name.rpartition(".")
    if not dot:
        base, ext = ext, ""
    base = _NOT_D_CHAR.sub("_", base.upper())
    ext = _NOT_D_CHAR.sub("_", ext.upper())[:8]
    base = base[: _ISO_FILE_MAX - 1 - len(ext)]
    if not base and not ext:
        base = "_"
    return base, ext


def _utf8_len(s: str) -> int:
    return len(s.encode("utf-8"))


def _trim(s: str, limit: int, measure: Callable[[str], int]) -> str:
    while measure(s) > limit:
        s = s[:-1]
    return s


def _unique(
    base: str,
    ext: str,
    used: set[str],
    limit: int,
    fold: Callable[[str], str],
    measure: Callable[[str], int] = len,
) -> str:
    """``base[.ext]`` made unique in ``used`` (compared after ``fold``) with ``_<n>`` suffixes,
    within ``limit`` as counted by ``measure``."""

    def join(b: str) -> str:
        return f"{b}.{ext}" if ext else b

    candidate = join(base)
    n = 1
    while fold(candidate) in used:
        suffix = f"_{n}"
        room = limit - measure(suffix) - (measure(ext) + 1 if ext else 0)
        candidate = join(_trim(base, max(room, 0), measure) + suffix)
        n += 1
    used.add(fold(candidate))
    return candidate


def _joliet_candidate(name: str) -> tuple[str, str]:
    """Joliet (base, extension): UCS-2 only, no forbidden characters, at most 64 bytes of
    UTF-8 (the limit pycdlib checks)."""
    chars = []
    for c in name:
        if c in _JOLIET_BAD or ord(c) < 0x20 or ord(c) > 0xFFFF or 0xD800 <= ord(c) <= 0xDFFF:
            chars.append("_")
        else:
            chars.append(c)
    clean = "".join(chars)
    if _utf8_len(clean) <= _JOLIET_MAX:
        return clean, ""
    base, dot, ext = clean.rpartition(".")
    if dot and 0 < len(ext) <= 8 and _utf8_len(ext) <= 16:
        return _trim(base, _JOLIET_MAX - 1 - _utf8_len(ext), _utf8_len), ext
    return _trim(clean, _JOLIET_MAX, _utf8_len), ""


@dataclass(frozen=True)
class _Placed:
    node: _Node
    iso_path: str
    joliet_path: str | None


def _place(nodes: list[_Node], *, joliet: bool) -> list[_Placed]:
    """Assign unique ISO 9660 and Joliet paths; ``nodes`` has parents before children."""
    iso_dir: dict[tuple[str, ...], str] = {(): ""}
    jol_dir: dict[tuple[str, ...], str] = {(): ""}
    # RR_MOVED is where pycdlib relocates directories deeper than 8 levels
    iso_used: dict[tuple[str, ...], set[str]] = {(): {"RR_MOVED"}}
    jol_used: dict[tuple[str, ...], set[str]] = {}
    placed = []
    for node in nodes:
        parent, name = node.parts[:-1], node.parts[-1]
        is_dir = node.kind == "dir"
        base, ext = _iso_candidate(name, is_dir)
        limit = _ISO_DIR_MAX if is_dir else _ISO_FILE_MAX
        ident = _unique(base, ext, iso_used.setdefault(parent, set()), limit, lambda s: s)
        if not is_dir and "." not in ident:
            ident += "."
        iso_path = f"{iso_dir[parent]}/{ident}"
        jpath = None
        if joliet and node.kind != "symlink":
            jbase, jext = _joliet_candidate(name)
            jident = _unique(jbase, jext, jol_used.setdefault(parent, set()), _JOLIET_MAX,
                             str.casefold, _utf8_len)
            jpath = f"{jol_dir[parent]}/{jident}"
        if is_dir:
            iso_dir[node.parts] = iso_path
            jol_dir[node.parts] = jpath or ""
            placed.append(_Placed(node, iso_path, jpath))
        else:
            placed.append(_Placed(node, iso_path + ";1", jpath))
    return placed


# --- writing -----------------------------------------------------------------------------


def _master(
    nodes: list[_Node],
    fp: IO[bytes],
    *,
    label: str,
    joliet: bool,
    epoch: int | None,
    progress: Progress | None,
) -> None:
    epoch = source_date_epoch() if epoch is None else epoch
    placed = _place(nodes, joliet=joliet)
    iso = pycdlib.PyCdlib()
    keep: list[BinaryIO] = []
    try:
        with _fixed_clock(epoch):
            iso.new(
                interchange_level=3,  # level 3: files of 4 GiB and more as multi-extent
                vol_ident=label,
                rock_ridge="1.09",
                joliet=3 if joliet else None,
            )
            for p in placed:
                node = p.node
                rr_name = _RawName(node.parts[-1])
                if node.kind == "dir":
                    iso.add_directory(
                        iso_path=p.iso_path, rr_name=rr_name, joliet_path=p.joliet_path,
                        file_mode=stat.S_IFDIR | node.mode,
                    )
                elif node.kind == "symlink":
                    iso.add_symlink(
                        symlink_path=p.iso_path, rr_symlink_name=rr_name,
                        rr_path=_RawName(node.target),
                    )
                elif isinstance(node.source, Path):
                    # A path: pycdlib opens it only while mastering and streams it.
                    iso.add_file(
                        str(node.source), iso_path=p.iso_path, rr_name=rr_name,
                        joliet_path=p.joliet_path, file_mode=stat.S_IFREG | node.mode,
                    )
                else:
                    data = io.BytesIO(node.source or b"")
                    keep.append(data)
                    iso.add_fp(
                        data, node.size, iso_path=p.iso_path, rr_name=rr_name,
                        joliet_path=p.joliet_path, file_mode=stat.S_IFREG | node.mode,
                    )
            done = 0

            def report(now: int, _total: int, _opaque: object) -> None:
                nonlocal done
                if progress is not None and now > done:
                    progress(now - done)
                done = max(done, now)

            iso.write_fp(fp, progress_cb=report if progress else None)
    except PyCdlibException as e:
        raise IsoError(f"cannot write ISO: {e}") from e
    except FileNotFoundError as e:
        raise IsoError(f"file vanished while writing the ISO: {e.filename}") from e
    finally:
        iso.close()


def write_iso(
    src: Path,
    fp: IO[bytes],
    *,
    label: str,
    joliet: bool = True,
    epoch: int | None = None,
    progress: Progress | None = None,
) -> None:
    """Write the tree under ``src`` as an ISO 9660 image to the seekable ``fp``.

    ``progress`` gets the number of bytes written since its last call.

    Raises:
        IsoError: bad label, unreadable or special files, or pycdlib refuses the tree.
    """
    label = check_label(label, joliet=joliet)
    _master(_walk(Path(src)), fp, label=label, joliet=joliet, epoch=epoch, progress=progress)


def write_iso_files(
    files: Mapping[str, bytes],
    fp: IO[bytes],
    *,
    label: str,
    joliet: bool = True,
    exact_label: bool = False,
    modes: Mapping[str, int] | None = None,
    epoch: int | None = None,
) -> None:
    """Write an in-memory tree (``{"dir/name": data}``) as an ISO; for small media (context).

    ``exact_label`` writes the label as given (context consumers look for ``cidata``,
    ``config-2`` exactly); it must still be printable ASCII within the length limit.

    Raises:
        IsoError: bad label or path.
    """
    if exact_label:
        limit = 16 if joliet else 32
        if not label or len(label) > limit or not label.isascii() or not label.isprintable():
            raise IsoError(f"bad volume label {label!r}")
    else:
        label = check_label(label, joliet=joliet)
    _master(_nodes_from_files(files, modes), fp, label=label, joliet=joliet, epoch=epoch,
            progress=None)


def make_iso(
    src: Path,
    out: Path,
    *,
    label: str,
    joliet: bool = True,
    epoch: int | None = None,
    progress: Progress | None = None,
    sink: Callable[[bytes], None] | None = None,
) -> Path:
    """Write ``src`` as an ISO at ``out`` atomically (nothing at ``out`` on failure).

    ``sink``, if given, receives every byte of the image in order as it is written (e.g. a
    hasher's ``update``), so the image need not be read again.

    Raises:
        IsoError: see :func:`write_iso`.
    """
    label = check_label(label, joliet=joliet)
    nodes = _walk(Path(src))  # walk (and fail) before creating the output
    with atomic_open(out) as raw:
        target: IO[bytes] = _SinkWriter(raw, sink) if sink else raw  # type: ignore[assignment]
        _master(nodes, target, label=label, joliet=joliet, epoch=epoch, progress=progress)
        if sink:
            target.finish()  # type: ignore[attr-defined]
    return out


class _SinkWriter(io.RawIOBase):
    """Passes writes to ``fp`` and feeds ``sink`` the image bytes in order.

    pycdlib writes the directory area out of order (path tables, records, continuation
    areas), then the file data front to back, skipping padding with seeks. Writes are held
    (up to ``_HOLD`` bytes) and fed sorted, with unwritten gaps fed as zeros, so the image is
    hashed as it is written. Should a write ever land before what was already fed, the
    sink is fed by reading the finished image once instead.
    """

    _HOLD = 32 << 20

    def __init__(self, fp: IO[bytes], sink: Callable[[bytes], None]) -> None:
        super().__init__()
        self._fp = fp
        self._sink = sink
        self._pos = 0  # current write position
        self._fed = 0  # bytes fed to the sink so far (a prefix of the image)
        self._held: list[tuple[int, bytes]] = []
        self._held_bytes = 0
        self.in_order = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._pos = self._fp.seek(offset, whence)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def write(self, data: Any) -> int:
        data = bytes(data)
        offset = self._pos
        self._fp.write(data)
        self._pos += len(data)
        if self.in_order:
            if offset < self._fed:
                self._give_up()
            else:
                self._held.append((offset, data))
                self._held_bytes += len(data)
                if self._held_bytes > self._HOLD:
                    self._feed_held()
        return len(data)

    def _give_up(self) -> None:
        self.in_order = False
        self._held.clear()
        self._held_bytes = 0

    def _feed_zeros(self, count: int) -> None:
        zeros = bytes(min(count, 1 << 20))
        while count > 0:
            chunk = zeros[: min(count, len(zeros))]
            self._sink(chunk)
            count -= len(chunk)

    def _feed_held(self) -> None:
        held = sorted(self._held, key=lambda item: item[0])
        self._held.clear()
        self._held_bytes = 0
        for offset, data in held:
            if offset < self._fed:  # overlapping writes: order unknowable
                self._give_up()
                return
            self._feed_zeros(offset - self._fed)
            self._sink(data)
            self._fed = offset + len(data)

    def finish(self) -> None:
        """Feed the rest (or, if writes went backwards, the whole image read back)."""
        self._fp.flush()
        end = self._fp.seek(0, os.SEEK_END)
        if self.in_order:
            self._feed_held()
        if self.in_order:
            self._feed_zeros(end - self._fed)
            self._fed = end
            return
        with open(self._fp.fileno(), "rb", closefd=False) as reader:  # type: ignore[attr-defined]
            reader.seek(0)
            while chunk := reader.read(1 << 20):
                self._sink(chunk)


# --- reading -----------------------------------------------------------------------------


@dataclass(frozen=True)
class IsoMember:
    """One entry of an ISO as Rock Ridge (or Joliet, or plain ISO 9660) shows it."""

    path: str  # relative, "/"-separated; undecodable bytes as surrogate escapes
    kind: str  # "dir" | "file" | "symlink"
    size: int
    mode: int  # permission bits (0o555/0o444 without Rock Ridge)
    target: str = ""  # symlink target

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "path": self.path, "type": self.kind, "size": self.size, "mode": f"{self.mode:04o}",
        }
        if self.kind == "symlink":
            d["target"] = self.target
        return d


def read_label(fp: IO[bytes]) -> str:
    """The volume label of the ISO in ``fp`` (bytes 40-72 of the PVD, stripped)."""
    fp.seek(PVD_OFFSET)
    pvd = fp.read(ISO_SECTOR)
    if len(pvd) < 72 or pvd[1:6] != b"CD001":
        raise IsoError("not an ISO 9660 image (no CD001 volume descriptor)")
    return pvd[40:72].decode("ascii", errors="replace").rstrip(" \x00")


def _open(fp: IO[bytes]) -> pycdlib.PyCdlib:
    iso = pycdlib.PyCdlib()
    try:
        iso.open_fp(fp)
    except PyCdlibException as e:
        raise IsoError(f"not a readable ISO 9660 image: {e}") from e
    return iso


def _safe_name(raw: str, where: str) -> str:
    if raw in ("", ".", "..") or "/" in raw or "\x00" in raw:
        raise IsoError(f"unsafe name {raw!r} in /{where} on the ISO")
    return raw


def _record_size(rec: Any) -> int:
    """A file's size: the sum of its extents (several for files of 4 GiB and more)."""
    size = 0
    while rec is not None:
        size += rec.data_length
        rec = rec.data_continuation
    return size


def _copy_record(iso: pycdlib.PyCdlib, rec: Any, out: IO[bytes]) -> None:
    """Write a file record's data (every extent of a multi-extent file) to ``out``."""
    block = iso.logical_block_size
    while rec is not None and rec.inode is not None and rec.data_length > 0:
        with inode.InodeOpenData(rec.inode, block) as (data_fp, _):
            if rec.data_extent_offset:
                data_fp.seek(rec.data_extent_offset * block, os.SEEK_CUR)
            pycdlib_utils.copy_data(rec.data_length, 1 << 20, data_fp, out)
        rec = rec.data_continuation


def _is_rr_moved(rec: Any) -> bool:
    """Whether ``rec`` is the directory holding only relocated (deep) directories."""
    if not rec.is_dir():
        return False
    inner = [c for c in rec.children if c is not None and not c.is_dot() and not c.is_dotdot()]
    return bool(inner) and all(
        c.rock_ridge is not None and c.rock_ridge.relocated_record() for c in inner
    )


def _iter_members(iso: pycdlib.PyCdlib) -> Iterator[tuple[IsoMember, Any]]:
    """Every member with its directory record, parents first, straight from the records
    (no path lookups, so any name works). Rock Ridge if present, else Joliet, else ISO 9660;
    Rock Ridge relocations (``RR_MOVED``) are shown where they belong."""
    rock_ridge = iso.has_rock_ridge()
    joliet = not rock_ridge and iso.has_joliet()
    vd = iso.joliet_vd if joliet else iso.pvd

    def name_of(rec: Any) -> str:
        if rock_ridge and rec.rock_ridge is not None:
            return os.fsdecode(rec.rock_ridge.name())
        ident = rec.file_identifier()
        text = ident.decode("utf-16-be") if joliet else ident.decode("ascii", "replace")
        text = text.split(";", 1)[0]
        return text[:-1] if text.endswith(".") and not joliet else text

    def children(rec: Any) -> Iterator[Any]:
        last = None
        for child in rec.children:
            if child is None or child.is_dot() or child.is_dotdot():
                continue
            if child.file_ident == last:  # a further extent of a multi-extent file
                continue
            last = child.file_ident
            rr = child.rock_ridge if rock_ridge else None
            if rr is not None:
                if rr.relocated_record():
                    continue  # shown at the place its child link points from
                if rec.is_root and _is_rr_moved(child):
                    continue
                if rr.child_link_record_exists() and rr.cl_to_moved_dr is not None:
                    moved_parent = rr.cl_to_moved_dr.parent
                    for cand in moved_parent.children if moved_parent is not None else ():
                        if cand.rock_ridge is not None and cand.rock_ridge.name() == rr.name() \
                                and cand.is_dir() and not cand.is_dot() and not cand.is_dotdot():
                            child = cand
                            break
            yield child

    queue: list[tuple[str, Any]] = [("", vd.root_directory_record())]
    seen: set[str] = set()
    while queue:
        rel_dir, dir_rec = queue.pop(0)
        subdirs = []
        for rec in children(dir_rec):
            real = _safe_name(name_of(rec), rel_dir)
            rel = f"{rel_dir}/{real}" if rel_dir else real
            if rel in seen:
                raise IsoError(f"duplicate name {rel!r} on the ISO")
            seen.add(rel)
            rr = rec.rock_ridge if rock_ridge else None
            if rr is not None and rr.is_symlink():
                target = os.fsdecode(rr.symlink_path())
                yield IsoMember(rel, "symlink", len(os.fsencode(target)), 0o777, target), rec
            elif rec.is_dir():
                mode = stat.S_IMODE(rr.get_file_mode()) if rr is not None else 0o555
                yield IsoMember(rel, "dir", 0, mode), rec
                subdirs.append((rel, rec))
            else:
                mode = stat.S_IMODE(rr.get_file_mode()) if rr is not None else 0o444
                yield IsoMember(rel, "file", _record_size(rec), mode), rec
        queue[0:0] = subdirs


def list_iso_fp(fp: IO[bytes]) -> list[IsoMember]:
    """Every member of the ISO in ``fp``, parents before children.

    Raises:
        IsoError: not an ISO, or a member with an unsafe or duplicate name.
    """
    iso = _open(fp)
    try:
        return [m for m, _ in _iter_members(iso)]
    finally:
        iso.close()


def list_iso(path: Path) -> list[IsoMember]:
    try:
        with open(path, "rb") as fp:
            return list_iso_fp(fp)
    except OSError as e:
        raise IsoError(f"cannot read {path}: {e.strerror}") from e


def _check_symlink(rel: str, target: str) -> None:
    """Refuse a symlink that is absolute or may leave the extraction root.

    Allowed: leading ``..`` components (no more than the link's depth), then names only.
    A ``..`` after a name is refused, since that name may itself be a symlink (``a -> .``
    makes ``a/a/../..`` climb out although it looks balanced).
    """
    if not target or target.startswith("/"):
        raise IsoError(f"refusing symlink {rel!r} -> {target!r}: absolute target")
    depth = len(PurePosixPath(rel).parts) - 1
    parts = [p for p in target.split("/") if p not in ("", ".")]
    ups = 0
    while ups < len(parts) and parts[ups] == "..":
        ups += 1
    if ups > depth or ".." in parts[ups:]:
        raise IsoError(f"refusing symlink {rel!r} -> {target!r}: points outside")


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_parent(root_fd: int, rel: str) -> tuple[int, str]:
    """An fd for the parent directory of ``rel`` under ``root_fd`` (no symlinks followed)."""
    parts = rel.split("/")
    fd = os.dup(root_fd)
    try:
        for part in parts[:-1]:
            nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except OSError:
        os.close(fd)
        raise
    return fd, parts[-1]


def extract_iso_fp(fp: IO[bytes], dest: Path, *, progress: Progress | None = None
                   ) -> list[IsoMember]:
    """Extract the ISO in ``fp`` into the directory ``dest`` (created; must be empty if it
    exists). Modes are applied after the contents, so read-only directories still fill.

    Raises:
        IsoError: not an ISO, unsafe names or symlinks, duplicates, or ``dest`` not empty.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise IsoError(f"{dest} is not empty")
    iso = _open(fp)
    members = []
    dir_modes: list[tuple[str, int]] = []
    root_fd = os.open(dest, _DIR_FLAGS)
    try:
        for member, rec in _iter_members(iso):
            members.append(member)
            if member.kind == "symlink":
                _check_symlink(member.path, member.target)
            parent_fd, name = _open_parent(root_fd, member.path)
            try:
                if member.kind == "dir":
                    os.mkdir(name, 0o700, dir_fd=parent_fd)
                    dir_modes.append((member.path, member.mode))
                elif member.kind == "symlink":
                    os.symlink(member.target, name, dir_fd=parent_fd)
                else:
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                    ffd = os.open(name, flags, 0o600, dir_fd=parent_fd)
                    with os.fdopen(ffd, "wb") as out:
                        _copy_record(iso, rec, out)
                        os.fchmod(out.fileno(), member.mode)
                    if progress is not None:
                        progress(member.size)
            except FileExistsError as e:
                raise IsoError(f"duplicate member {member.path!r} on the ISO") from e
            finally:
                os.close(parent_fd)
        for rel, mode in reversed(dir_modes):
            parent_fd, name = _open_parent(root_fd, rel)
            try:
                dfd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
                os.fchmod(dfd, mode)
                os.close(dfd)
            finally:
                os.close(parent_fd)
    except PyCdlibException as e:
        raise IsoError(f"cannot extract: {e}") from e
    finally:
        os.close(root_fd)
        iso.close()
    return members


def extract_iso(path: Path, dest: Path, *, progress: Progress | None = None
                ) -> list[IsoMember]:
    """Extract the ISO file at ``path`` into ``dest``; see :func:`extract_iso_fp`."""
    try:
        with open(path, "rb") as fp:
            return extract_iso_fp(fp, dest, progress=progress)
    except OSError as e:
        raise IsoError(f"cannot extract {path}: {e.strerror or e}") from e
