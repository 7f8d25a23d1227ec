"""JSON of one stored entry: the index columns plus every term, from the library's parser."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from imagekit.entry import entry_to_dict, parse_entry_bytes

from .storage import StoredEntry


def entry_dict(entry: StoredEntry, now: datetime) -> dict[str, Any]:
    assert entry.xml is not None
    out = entry.to_dict(now)
    # The bytes were verified at ingest; parsing them again only reads the terms.
    out["entry"] = entry_to_dict(parse_entry_bytes(entry.xml))
    return out


def entry_json(entry: StoredEntry, now: datetime) -> str:
    return json.dumps(entry_dict(entry, now), indent=2, sort_keys=True)
