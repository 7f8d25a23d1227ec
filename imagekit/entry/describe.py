"""Describe an image file as an unsigned metadata entry (the draft ``imagekit sign`` fills).

One pass over the image computes the size and every digest of the uncompressed bytes
(``digests.digest_file``); the format comes from the magic bytes of the uncompressed head,
the compression from the file name. The terms older StratusLab clients require are always
present (DESIGN 4.1), with defaults when the caller gives none.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..errors import InputError, InvalidMetadata, NotFound
from ..image.compression import Compression
from ..image.digests import DigestAlgorithm, digest_file
from ..image.formats import DiskFormat, detect_file_format
from ..image.identifier import sha1_to_id
from ..progress import Progress
from .model import Checksum, Endorsement, Entry, Kind

__all__ = ["DEFAULT_ALGORITHMS", "DEFAULT_VALID_DAYS", "describe_image"]

# What StratusLab wrote: every algorithm of the profile. SHA-1 is always added (the ID).
DEFAULT_ALGORITHMS: tuple[DigestAlgorithm, ...] = tuple(DigestAlgorithm)
# An entry expires a year after it is described unless told otherwise; a rebuild or a
# re-signature publishes a fresh one.
DEFAULT_VALID_DAYS = 365
DEFAULT_VERSION = "1.0"

# Fields the caller may set; the head and the measured terms are computed here.
_COMPUTED = {"identifier", "bytes", "checksums", "endorsement"}
_SETTABLE = {f.name for f in dataclasses.fields(Entry)} - _COMPUTED


def describe_image(
    path: str | os.PathLike[str],
    *,
    algorithms: Iterable[DigestAlgorithm | str] = DEFAULT_ALGORITHMS,
    compression: Compression | str | None = None,
    format: DiskFormat | str | None = None,
    kind: Kind | str | None = None,
    now: datetime | None = None,
    valid_days: int = DEFAULT_VALID_DAYS,
    progress: Progress | None = None,
    **fields: Any,
) -> Entry:
    """An unsigned draft Entry (empty endorsement) for the image at ``path``.

    ``compression`` None: from the suffix (``.gz``, ``.bz2``, ``.xz``); ``bytes`` and the
    checksums always describe the uncompressed image. ``format`` None: from the magic
    bytes. ``now`` (default: the current time) gives ``dcterms:created`` and, plus
    ``valid_days``, ``dcterms:valid`` unless ``valid`` is given. ``fields`` are any other
    Entry fields (``os``, ``os_version``, ``title``, ``alternative`` or its alias ``tag``,
    ``locations``, ``inbound_ports``, ...). Defaults for the terms always written: type =
    the kind, os/os-version/os-arch = "none" for a disk and "unknown" for a machine,
    version "1.0", a description naming the file.

    Raises NotFound for a missing file, InputError for an unreadable one, an unsupported
    compression, an unknown algorithm or field, CorruptData for damaged compressed data,
    and InvalidMetadata for a field value that breaks a rule of the profile.
    """
    image = Path(path)
    if "tag" in fields:
        if "alternative" in fields:
            raise InputError("give either tag or alternative, not both")
        fields["alternative"] = fields.pop("tag")
    unknown = sorted(set(fields) - _SETTABLE)
    if unknown:
        raise InputError(f"unknown entry field(s): {', '.join(unknown)}")
    if not image.exists():
        raise NotFound(f"{image}: no such file")
    if not image.is_file():
        raise InputError(f"{image}: not a regular file")
    if isinstance(valid_days, bool) or not isinstance(valid_days, int) or valid_days < 1:
        raise InputError(f"valid_days must be a positive whole number, not {valid_days!r}")

    chosen: set[DigestAlgorithm] = {DigestAlgorithm.parse(a) for a in algorithms}
    chosen.add(DigestAlgorithm.SHA1)
    resolved = (
        Compression.from_suffix(image) if compression is None else Compression.parse(compression)
    )
    try:
        kind = Kind(kind) if kind is not None else Kind.MACHINE
    except ValueError:
        raise InvalidMetadata("bad-kind", f"kind {kind!r} is not machine or disk") from None
    if format is None:
        format = detect_file_format(image, compression=resolved)
    elif isinstance(format, str):
        format = DiskFormat.parse(format)
    # Check the caller's values before the long read: building an Entry validates them.
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    values = _with_defaults(image, kind, fields, now=now, valid_days=valid_days)
    values.update(format=format, compression=resolved, kind=kind)
    _check_fields(values)

    ordered = sorted(chosen, key=_order)
    digests = digest_file(image, ordered, compression=resolved, progress=progress)
    checksums = tuple(Checksum(a, digests.values[a]) for a in ordered)
    return Entry(
        identifier=sha1_to_id(digests.values[DigestAlgorithm.SHA1]),
        bytes=digests.size,
        checksums=checksums,
        endorsement=Endorsement(),
        **values,
    )


def _order(algorithm: DigestAlgorithm) -> int:
    # Weakest first, as StratusLab wrote them.
    return algorithm.strength


def _with_defaults(
    image: Path, kind: Kind, fields: dict[str, Any], *, now: datetime, valid_days: int
) -> dict[str, Any]:
    values = dict(fields)
    none = "none" if kind is Kind.DISK else "unknown"
    for name in ("os", "os_version", "os_arch"):
        if not values.get(name):
            values[name] = none
    if not values.get("type"):
        values["type"] = kind.value
    if not values.get("version"):
        values["version"] = DEFAULT_VERSION
    if not values.get("description"):
        values["description"] = f"{kind.value} image {image.name}"
    values.setdefault("created", now)
    if values.get("valid") is None:
        values["valid"] = now + timedelta(days=valid_days)
    return values


# A well-formed placeholder head, so field values can be validated before hashing.
_PLACEHOLDER_SHA1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709"


def _check_fields(values: dict[str, Any]) -> None:
    Entry(
        identifier=sha1_to_id(_PLACEHOLDER_SHA1),
        bytes=0,
        checksums=(Checksum(DigestAlgorithm.SHA1, _PLACEHOLDER_SHA1),),
        **values,
    )
