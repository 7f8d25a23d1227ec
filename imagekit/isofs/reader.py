"""Reading ISO 9660 images in user space (pycdlib): list and extract, safely.

This host's kernel has no iso9660, so images are read with pycdlib, walking the directory
records themselves (no path lookups, so any name works): Rock Ridge if present, else
Joliet, else plain ISO 9660; Rock Ridge relocations are shown where they belong and the
``rr_moved`` directory is hidden. Extraction refuses names that are empty, ``.``, ``..`` or
contain ``/``, symlinks that are absolute or may leave the destination, duplicates, and
never follows a symlink while creating files (every component opened with ``O_NOFOLLOW``).
Extracted modes keep only the permission bits a data disk needs: setuid, setgid, sticky and
world-writable bits are dropped (an ISO from a stranger must not plant a setuid binary or a
world-writable directory). Extraction stops before writing anything when the files would
take more than a bound (default: the ISO's own size, which honest files cannot exceed unless
they share data; many records pointing at one extent are the ISO form of a zip bomb).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import pycdlib
from pycdlib import inode
from pycdlib import utils as pycdlib_utils
from pycdlib.pycdlibexception import PyCdlibException

from ..errors import IsoError
from ..progress import Progress

ISO_SECTOR = 2048
#: Permission bits extraction keeps: no setuid/setgid/sticky (0o7000), no world-write (0o002).
EXTRACT_MODE_MASK = 0o775
PVD_OFFSET = 16 * ISO_SECTOR  # the primary volume descriptor; its label is at +40, 32 bytes


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
            "path": self.path,
            "type": self.kind,
            "size": self.size,
            "mode": f"{self.mode:04o}",
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
        iso.open_fp(fp)  # type: ignore[arg-type]
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
                        if (
                            cand.rock_ridge is not None
                            and cand.rock_ridge.name() == rr.name()
                            and cand.is_dir()
                            and not cand.is_dot()
                            and not cand.is_dotdot()
                        ):
                            child = cand
                            break
            yield child

    if vd is None:
        raise IsoError("the ISO has no primary volume descriptor")
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


def extract_iso_fp(
    fp: IO[bytes], dest: Path, *, progress: Progress | None = None, max_bytes: int | None = None
) -> list[IsoMember]:
    """Extract the ISO in ``fp`` into the directory ``dest`` (created; must be empty if it
    exists). Modes are applied after the contents, so read-only directories still fill, and
    masked with EXTRACT_MODE_MASK. ``max_bytes``: most file bytes to write (default: the
    size of the ISO), checked before anything is written.

    Raises:
        IsoError: not an ISO, unsafe names or symlinks, duplicates, too many bytes, or
        ``dest`` not empty.
    """
    dest = Path(dest)
    bound = max_bytes if max_bytes is not None else fp.seek(0, os.SEEK_END)
    fp.seek(0)
    iso = _open(fp)
    try:
        found = list(_iter_members(iso))
    except PyCdlibException as e:
        iso.close()
        raise IsoError(f"cannot read: {e}") from e
    total = sum(m.size for m, _ in found if m.kind == "file")
    if total > bound:
        iso.close()
        raise IsoError(
            f"the ISO's files would take {total} bytes, more than the bound of {bound} "
            "(records sharing data, or an ISO bomb)",
            hint="raise the bound (--max-bytes) if you trust this ISO",
        )
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        iso.close()
        raise IsoError(f"{dest} is not empty")
    members = []
    dir_modes: list[tuple[str, int]] = []
    root_fd = os.open(dest, _DIR_FLAGS)
    try:
        for member, rec in found:
            members.append(member)
            if member.kind == "symlink":
                _check_symlink(member.path, member.target)
            parent_fd, name = _open_parent(root_fd, member.path)
            try:
                if member.kind == "dir":
                    os.mkdir(name, 0o700, dir_fd=parent_fd)
                    dir_modes.append((member.path, member.mode & EXTRACT_MODE_MASK))
                elif member.kind == "symlink":
                    os.symlink(member.target, name, dir_fd=parent_fd)
                else:
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                    ffd = os.open(name, flags, 0o600, dir_fd=parent_fd)
                    with os.fdopen(ffd, "wb") as out:
                        _copy_record(iso, rec, out)
                        os.fchmod(out.fileno(), member.mode & EXTRACT_MODE_MASK)
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


def extract_iso(
    path: Path, dest: Path, *, progress: Progress | None = None, max_bytes: int | None = None
) -> list[IsoMember]:
    """Extract the ISO file at ``path`` into ``dest``; see :func:`extract_iso_fp`."""
    try:
        with open(path, "rb") as fp:
            return extract_iso_fp(fp, dest, progress=progress, max_bytes=max_bytes)
    except OSError as e:
        raise IsoError(f"cannot extract {path}: {e.strerror or e}") from e
