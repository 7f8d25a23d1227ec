"""ISO 9660 data disks: write (Rock Ridge 1.09 + Joliet, interchange level 3), list, extract.

Writing walks a directory in sorted (byte) order and streams every file from its path
(pycdlib opens it only while mastering), so memory stays flat however large the data is;
into a file, the kernel copies the data (``copy_file_range``), not Python.
Files of 4 GiB and more become multi-extent records (interchange level 3).

Names: Rock Ridge carries the exact Linux name (any bytes but ``/`` and NUL), mode and
symlink target. The ISO 9660 and Joliet names are derived, unique per directory and
deterministic: ISO 9660 names upper-cased, characters outside ``A-Z0-9_`` become ``_``,
truncated to 30 characters (31 for directories), clashes get ``_<n>`` suffixes; Joliet
names keep the name where UCS-2 allows (forbidden ``*/:;?\\`` and non-BMP characters
become ``_``), truncated to 64 bytes of UTF-8 (pycdlib's limit), clashes (case-insensitive)
get ``_<n>``; symlinks exist only in Rock Ridge (Joliet has none). Directories deeper
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

Reading (``list_iso``, ``extract_iso``) is :mod:`imagekit.isofs.reader`; ``imagekit.isofs``
exports both.
"""

from __future__ import annotations

import gc
import io
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO

import pycdlib
import pycdlib.utils
from pycdlib.pycdlibexception import PyCdlibException

from .._files import atomic_open
from ..errors import InternalError, IsoError
from ..progress import Progress
from ._pycdlib import add_file_fast, child_record, fixed_clock, kernel_copies

DEFAULT_EPOCH = 946684800  # 2000-01-01T00:00:00Z: a fixed date when SOURCE_DATE_EPOCH is unset

_D_CHARS = re.compile(r"[A-Z0-9_]*")
_NOT_D_CHAR = re.compile(r"[^A-Z0-9_]")
_JOLIET_BAD_RE = re.compile('[*/:;?\\\\"<>|\x00-\x1f\ud800-\udfff\U00010000-\U0010ffff]')
_ISO_FILE_MAX = 30  # ECMA-119 10.2/10.3: name + extension
_ISO_DIR_MAX = 31
_JOLIET_MAX = 64


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


# --- the tree to write -------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    parts: tuple[str, ...]  # the real (Rock Ridge) path components, fs-decoded
    kind: str  # "dir" | "file" | "symlink"
    mode: int  # permission bits
    size: int = 0
    source: str | bytes | None = None  # file contents: a path (str, streamed) or bytes
    target: str = ""  # symlink target


class _RawName(str):
    """A Rock Ridge name that encodes back to the original file-system bytes.

    pycdlib encodes names with UTF-8; Linux names may be any bytes (Python holds the
    undecodable ones as surrogate escapes), so this str gives pycdlib the real bytes.
    """

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return str.encode(self, "utf-8", "surrogateescape")


def _sort_key(name: str) -> bytes:
    return os.fsencode(name)


def _walk(root: Path) -> list[_Node]:
    """Every entry under ``root``, parents before children, siblings in byte order."""
    nodes: list[_Node] = []

    def visit(directory: str, parts: tuple[str, ...]) -> None:
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: _sort_key(e.name))
        except OSError as e:
            raise IsoError(f"cannot read directory {directory}: {e.strerror}") from e
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            here = (*parts, entry.name)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                nodes.append(_Node(here, "dir", stat.S_IMODE(mode)))
                visit(entry.path, here)
            elif stat.S_ISREG(mode):
                nodes.append(_Node(here, "file", stat.S_IMODE(mode), st.st_size, entry.path))
            elif stat.S_ISLNK(mode):
                nodes.append(_Node(here, "symlink", 0o777, target=os.readlink(entry.path)))
            else:
                raise IsoError(f"cannot store special file {entry.path} (device, socket or FIFO)")

    if not root.is_dir():
        raise IsoError(f"{root} is not a directory")
    visit(str(root), ())
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
    clean = _JOLIET_BAD_RE.sub("_", name)
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
            jident = _unique(
                jbase,
                jext,
                jol_used.setdefault(parent, set()),
                _JOLIET_MAX,
                str.casefold,
                _utf8_len,
            )
            jpath = f"{jol_dir[parent]}/{jident}"
        if is_dir:
            iso_dir[node.parts] = iso_path
            jol_dir[node.parts] = jpath or ""
            placed.append(_Placed(node, iso_path, jpath))
        else:
            placed.append(_Placed(node, iso_path + ";1", jpath))
    return placed


# --- writing -----------------------------------------------------------------------------

_ONE_EXTENT = 0xFFFFF800  # the largest file one directory record can describe
_FAST_PATH = True  # tests turn it off to check both paths write the same bytes


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
    # pycdlib makes a few objects per record and none of them is garbage until the end:
    # the cyclic collector would rescan the growing heap again and again (about a third
    # of the time for 50,000 files), so it is paused for the build.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with fixed_clock(epoch), kernel_copies():
            iso.new(
                interchange_level=3,  # level 3: files of 4 GiB and more as multi-extent
                vol_ident=label,
                rock_ridge="1.09",
                joliet=3 if joliet else None,
            )
            # directory records by real path, for the fast path (directories that pycdlib
            # relocates, 8 levels deep and more, take pycdlib's own path)
            iso_dirs: dict[tuple[str, ...], Any] = {(): iso.pvd.root_directory_record()}
            jol_dirs: dict[tuple[str, ...], Any] = {}
            if joliet and iso.joliet_vd is not None:
                jol_dirs[()] = iso.joliet_vd.root_directory_record()
            for p in placed:
                node = p.node
                rr_name = _RawName(node.parts[-1])
                parent = node.parts[:-1]
                if node.kind == "dir":
                    iso.add_directory(
                        iso_path=p.iso_path,
                        rr_name=rr_name,
                        joliet_path=p.joliet_path,
                        file_mode=stat.S_IFDIR | node.mode,
                    )
                    # (get_record would re-lay out the whole image on every call)
                    if _FAST_PATH and len(node.parts) < 8 and parent in iso_dirs:
                        iso_dirs[node.parts] = child_record(
                            iso_dirs[parent], p.iso_path.rsplit("/", 1)[1].encode("ascii")
                        )
                        if p.joliet_path is not None and parent in jol_dirs:
                            jol_dirs[node.parts] = child_record(
                                jol_dirs[parent],
                                p.joliet_path.rsplit("/", 1)[1].encode("utf-16-be"),
                            )
                elif (
                    node.kind == "file"
                    and parent in iso_dirs
                    and node.size < _ONE_EXTENT
                    and (p.joliet_path is None or parent in jol_dirs)
                ):
                    source: str | BinaryIO
                    if isinstance(node.source, str):
                        source = node.source
                    else:
                        source = io.BytesIO(node.source or b"")
                        keep.append(source)
                    add_file_fast(
                        iso,
                        source,
                        node.size,
                        iso_name=p.iso_path.rsplit("/", 1)[1].encode("ascii"),
                        iso_parent=iso_dirs[parent],
                        rr_name=rr_name.encode(),
                        joliet_name=None
                        if p.joliet_path is None
                        else p.joliet_path.rsplit("/", 1)[1].encode("utf-16-be"),
                        joliet_parent=jol_dirs.get(parent),
                        file_mode=stat.S_IFREG | node.mode,
                        now=float(epoch),
                    )
                elif node.kind == "symlink":
                    iso.add_symlink(
                        symlink_path=p.iso_path,
                        rr_symlink_name=rr_name,
                        rr_path=_RawName(node.target),
                    )
                elif isinstance(node.source, str):
                    # A path: pycdlib opens it only while mastering and streams it.
                    iso.add_file(
                        node.source,
                        iso_path=p.iso_path,
                        rr_name=rr_name,
                        joliet_path=p.joliet_path,
                        file_mode=stat.S_IFREG | node.mode,
                    )
                else:
                    data = io.BytesIO(node.source or b"")
                    keep.append(data)
                    iso.add_fp(
                        data,
                        node.size,
                        iso_path=p.iso_path,
                        rr_name=rr_name,
                        joliet_path=p.joliet_path,
                        file_mode=stat.S_IFREG | node.mode,
                    )
            done = 0

            def report(now: int, _total: int, _opaque: object) -> None:
                nonlocal done
                if progress is not None and now > done:
                    progress(now - done)
                done = max(done, now)

            iso.write_fp(
                fp,  # type: ignore[arg-type]
                blocksize=1 << 20,
                progress_cb=report if progress else None,
            )
    except PyCdlibException as e:
        # every name, label and size was checked above: pycdlib refusing now is our bug
        raise InternalError(f"pycdlib refused the prepared ISO: {e}") from e
    except FileNotFoundError as e:
        raise IsoError(f"file vanished while writing the ISO: {e.filename}") from e
    finally:
        iso.close()
        if gc_was_enabled:
            gc.enable()


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
    _master(
        _nodes_from_files(files, modes), fp, label=label, joliet=joliet, epoch=epoch, progress=None
    )


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
        if not isinstance(data, bytes):
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
