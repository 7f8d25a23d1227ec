"""Disk image formats (``dcterms:format``), told apart by their magic bytes.

``detect_format(head)`` looks only at the first bytes of the (uncompressed) image; give it
at least ``HEAD_SIZE`` bytes, since an ISO 9660 volume descriptor starts at 32 KiB.
``detect_file_format(path)`` reads that head itself, through decompression when the file is
compressed, and for an uncompressed file also looks at the tail, where a fixed-size VHD
keeps its only footer. Anything unrecognised is raw.
"""

from __future__ import annotations

import os
import struct
from enum import StrEnum

from ..errors import InputError, NotFound
from .compression import Compression, open_decompressed

__all__ = ["HEAD_SIZE", "DiskFormat", "detect_file_format", "detect_format"]

# Enough for every magic below: the ISO primary volume descriptor sits at 0x8000.
HEAD_SIZE = 64 << 10

_QCOW_MAGIC = b"QFI\xfb"
_VMDK_SPARSE = b"KDMV"  # hosted sparse extent (also streamOptimized)
_VMDK_COWD = b"COWD"  # ESX sparse extent
_VMDK_DESCRIPTOR = b"# Disk DescriptorFile"
_VDI_SIGNATURE_OFFSET = 0x40
_VDI_SIGNATURE = struct.pack("<I", 0xBEDA107F)
_VHD_COOKIE = b"conectix"
_VHDX_MAGIC = b"vhdxfile"
_ISO_OFFSET = 0x8001
_ISO_MAGIC = b"CD001"
_VHD_FOOTER = 512


class DiskFormat(StrEnum):
    """Disk image formats, valued by their qemu-img names."""

    RAW = "raw"
    QCOW2 = "qcow2"
    VMDK = "vmdk"
    VDI = "vdi"
    VHD = "vhd"  # qemu-img calls it "vpc"; metadata has always said vhd
    VHDX = "vhdx"
    ISO = "iso"

    @classmethod
    def parse(cls, text: str) -> DiskFormat:
        """The format named by ``text`` (case-insensitive; qemu's ``vpc`` means vhd).

        Raises InputError for an unknown name, listing the known ones.
        """
        key = text.strip().lower()
        if key == "vpc":
            return cls.VHD
        try:
            return cls(key)
        except ValueError:
            raise InputError(
                f"unknown disk format {text!r}; known: {', '.join(f.value for f in cls)}"
            ) from None

    @property
    def qemu_name(self) -> str:
        """The name qemu and qemu-img use (``-f``/``format=``); ISOs are raw to qemu."""
        return {DiskFormat.VHD: "vpc", DiskFormat.ISO: "raw"}.get(self, self.value)


def detect_format(head: bytes) -> DiskFormat:
    """The format of an image whose first bytes are ``head`` (RAW if nothing matches).

    An ISO is only seen with at least 32,774 bytes of head; a fixed-size VHD, whose footer
    is at the end of the file, not at all (``detect_file_format`` checks the tail).
    """
    if head.startswith(_QCOW_MAGIC):
        return DiskFormat.QCOW2
    if head.startswith((_VMDK_SPARSE, _VMDK_COWD, _VMDK_DESCRIPTOR)):
        return DiskFormat.VMDK
    if head[_VDI_SIGNATURE_OFFSET : _VDI_SIGNATURE_OFFSET + 4] == _VDI_SIGNATURE:
        return DiskFormat.VDI
    if head.startswith(_VHDX_MAGIC):
        return DiskFormat.VHDX
    if head.startswith(_VHD_COOKIE):
        # Dynamic and differencing VHDs copy their footer to offset 0.
        return DiskFormat.VHD
    if head[_ISO_OFFSET : _ISO_OFFSET + len(_ISO_MAGIC)] == _ISO_MAGIC:
        return DiskFormat.ISO
    return DiskFormat.RAW


def detect_file_format(
    path: str | os.PathLike[str], *, compression: Compression | str | None = None
) -> DiskFormat:
    """The format of the image in the file at ``path``, uncompressing its head if needed.

    ``compression`` None means: from the suffix. Raises NotFound for a missing file,
    InputError for an unreadable one or an unsupported compression, CorruptData for a
    damaged compressed head.
    """
    resolved = (
        Compression.from_suffix(path) if compression is None else Compression.parse(compression)
    )
    try:
        with open(path, "rb") as fp:
            head = _read_head(open_decompressed(fp, resolved))
            found = detect_format(head)
            if found is DiskFormat.RAW and resolved is Compression.NONE:
                # A fixed VHD is raw data plus a 512-byte footer at the very end.
                size = os.fstat(fp.fileno()).st_size
                if size >= _VHD_FOOTER and size % _VHD_FOOTER == 0:
                    fp.seek(size - _VHD_FOOTER)
                    if fp.read(len(_VHD_COOKIE)) == _VHD_COOKIE:
                        return DiskFormat.VHD
            return found
    except FileNotFoundError as e:
        raise NotFound(f"{os.fspath(path)}: no such file") from e
    except IsADirectoryError as e:
        raise InputError(f"{os.fspath(path)}: is a directory") from e
    except PermissionError as e:
        raise InputError(f"{os.fspath(path)}: permission denied") from e


def _read_head(fp: object) -> bytes:
    read = fp.read  # type: ignore[attr-defined]
    parts: list[bytes] = []
    wanted = HEAD_SIZE
    while wanted > 0:
        data = read(wanted)
        if not data:
            break
        parts.append(data)
        wanted -= len(data)
    return b"".join(parts)
