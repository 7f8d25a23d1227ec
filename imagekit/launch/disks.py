"""Disk files on the host: every ``qemu-img`` question and change a launch makes.

What qemu calls an entry's format, whether an image would make qemu open other host files,
what a disk file holds, and turning a fresh overlay into the root disk an instance needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .._run import find_tool, run
from ..entry import Entry
from ..errors import InputError
from ..image.formats import DiskFormat
from . import qemu as q


def qemu_format(entry: Entry) -> str:
    """The name qemu uses for the entry's format (raw when the entry names none)."""
    return (entry.format or DiskFormat.RAW).qemu_name


def check_image_safe(path: Path, fmt: str) -> None:
    """Refuse images that would make qemu open other host files (a backing file or an
    external data file inside a qcow2/vmdk). Raises InputError."""
    if fmt == "raw":
        return
    out = run(
        [find_tool(q.QEMU_IMG), "info", "--output=json", "-f", fmt, str(path)], timeout=60
    ).stdout
    info = json.loads(out)
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise InputError(f"image {path.name} names a backing file: refused")
    specific = (info.get("format-specific") or {}).get("data") or {}
    if specific.get("data-file") or (
        specific.get("extents")
        and fmt == "vmdk"
        and any(e.get("filename") != str(path) for e in specific.get("extents", []))
    ):
        raise InputError(f"image {path.name} refers to external data files: refused")


def disk_info(path: Path) -> dict[str, Any]:
    """``qemu-img info`` of ``path`` as a dict (``-U``: readable while qemu holds it)."""
    out = run([find_tool(q.QEMU_IMG), "info", "-U", "--output=json", str(path)], timeout=60).stdout
    info: dict[str, Any] = json.loads(out)
    return info


def prepare_root_disk(path: Path, *, persistent: bool, size_mib: int | None = None) -> None:
    """Turn a fresh root overlay into what the instance needs.

    ``persistent``: copy every cluster of the backing image in and drop the backing file
    (the disk then stands alone, independent of the cache). ``size_mib``: grow the virtual
    disk to that size. Raises InputError if ``size_mib`` is smaller than the image.
    """
    qemu_img = find_tool(q.QEMU_IMG)
    if size_mib is not None:
        current = int(disk_info(path)["virtual-size"])
        if size_mib * 1024 * 1024 < current:
            raise InputError(
                f"disk size {size_mib} MiB is smaller than the image "
                f"({current // (1024 * 1024)} MiB): disks only grow"
            )
    if persistent:
        # safe mode rebase onto nothing: the data the base provides is copied in
        run([qemu_img, "rebase", "-q", "-f", "qcow2", "-b", "", str(path)], timeout=3600)
    if size_mib is not None:
        run([qemu_img, "resize", "-q", "-f", "qcow2", str(path), f"{size_mib}M"], timeout=60)
