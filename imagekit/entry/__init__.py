"""The metadata entry: the typed model, its RDF/XML form, safe parsing, drafts from images.

The names most callers need, from the modules that define them: ``model`` (the frozen
``Entry`` and its parts, validated when built) and ``rdfxml`` (reading every rule of the
profile, writing the canonical layout).
"""

from .model import (
    SCHEMA_FILE,
    Checksum,
    Endorsement,
    Endorser,
    Entry,
    Kind,
    entry_from_dict,
    entry_to_dict,
    format_date,
    parse_date,
)
from .rdfxml import entry_to_bytes, parse_entry, parse_entry_bytes

__all__ = [
    "SCHEMA_FILE",
    "Checksum",
    "Endorsement",
    "Endorser",
    "Entry",
    "Kind",
    "entry_from_dict",
    "entry_to_bytes",
    "entry_to_dict",
    "format_date",
    "parse_date",
    "parse_entry",
    "parse_entry_bytes",
]
