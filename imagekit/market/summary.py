"""What a registry says about one stored endorsement, declared once for both sides.

``EntryColumns`` are the terms a registry derives from a verified entry and indexes; the
server stores them (``NewEntry``, ``StoredEntry``), serves them as JSON and the client
reads them back as an ``EntrySummary``. A new column is one field here (and its database
column in ``marketplace_server.models``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..entry import Entry, format_date


@dataclasses.dataclass(frozen=True, kw_only=True)
class EntryColumns:
    identifier: str
    email: str
    created: str
    sha1: str
    bytes: int
    valid: str | None = None
    deprecated: str | None = None
    os: str | None = None
    os_version: str | None = None
    arch: str | None = None
    kind: str | None = None
    tag: str | None = None
    title: str | None = None
    description: str | None = None
    locations: tuple[str, ...] = ()

    @staticmethod
    def of(entry: Entry, *, email: str, created: datetime) -> dict[str, Any]:
        """The columns of a verified entry, as keyword arguments for a subclass."""

        def text(value: object) -> str | None:  # enum members as their values
            return None if value is None else str(getattr(value, "value", value))

        return {
            "identifier": entry.identifier,
            "email": email,
            "created": format_date(created),
            "sha1": entry.sha1,
            "bytes": entry.bytes,
            "valid": None if entry.valid is None else format_date(entry.valid),
            "deprecated": entry.deprecated,
            "os": text(entry.os),
            "os_version": text(entry.os_version),
            "arch": text(entry.os_arch),
            "kind": text(entry.kind),
            "tag": text(entry.tag),
            "title": entry.title,
            "description": entry.description,
            "locations": tuple(entry.locations),
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class EntrySummary(EntryColumns):
    """The registry's summary of one stored endorsement, as its JSON API serves it
    (unverified on the client: ``imagekit launch`` verifies the signed XML itself)."""

    latest: bool
    status: str
    etag: str
    uploaded: str
    path: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EntrySummary:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["locations"] = tuple(values.get("locations") or ())
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["locations"] = list(self.locations)
        return out
