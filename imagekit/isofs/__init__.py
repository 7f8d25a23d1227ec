"""ISO 9660 file systems: the writer (pycdlib, its internals in ``_pycdlib``) and the
user-space reader (this host's kernel has no iso9660)."""

from ..errors import IsoError
from .reader import IsoMember, extract_iso, extract_iso_fp, list_iso, list_iso_fp, read_label
from .writer import (
    DEFAULT_EPOCH,
    check_label,
    make_iso,
    source_date_epoch,
    write_iso,
    write_iso_files,
)

__all__ = [
    "DEFAULT_EPOCH",
    "IsoError",
    "IsoMember",
    "check_label",
    "extract_iso",
    "extract_iso_fp",
    "list_iso",
    "list_iso_fp",
    "make_iso",
    "read_label",
    "source_date_epoch",
    "write_iso",
    "write_iso_files",
]
