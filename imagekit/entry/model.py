"""The typed model of a StratusLab metadata entry (DESIGN 4.1).

An ``Entry`` is a frozen value, validated when built: whatever holds one holds an entry that
breaks no rule of the profile. Its XML form is read by ``parse_entry`` (every rule checked,
each failure an ``InvalidMetadata`` naming its rule) and written by ``entry_to_bytes``
(unsigned, fixed head order, stable layout); the XML code lives in ``_entry_xml``.

Conventions of the model:

* a single-valued text term that is absent or empty is ``None`` (the writer emits an empty
  element for the terms older clients require, ``None`` otherwise), except ``deprecated``,
  where an empty element still means "deprecated" and reads as ``""``;
* repeated terms (locations, ports, ICMP types, checksums) are tuples, in document order;
* dates are aware UTC datetimes with whole seconds (the XML has no fraction);
* checksum values are kept as written (leading zeros may be stripped or added: values are
  compared as numbers); ``Checksum.hex`` gives the canonical fixed-length form;
* elements in other namespaces are kept in ``extra`` as canonical XML fragments (exclusive
  C14N) and written back after the known terms;
* an empty endorsement (``Endorsement()``) is a signable draft;
* free texts have length limits (``TEXT_LIMITS``; a title of a megabyte is an attack on
  every page and index that shows it, not a title) and locations are ``http``, ``https``,
  ``s3`` or ``file`` URLs (``check_location``): these rules are the client's and the
  server's alike, so they live here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..errors import InvalidMetadata
from ..image.compression import Compression
from ..image.digests import DigestAlgorithm
from ..image.formats import DiskFormat
from ..image.identifier import id_to_sha1, is_identifier
from .vocab import TEXT_TERMS, canonical_fragment

__all__ = [
    "Checksum",
    "Endorsement",
    "Endorser",
    "Entry",
    "Kind",
    "LocationScheme",
    "check_location",
    "entry_from_dict",
    "entry_to_dict",
    "format_date",
    "parse_date",
]

# The XML Schema of the profile, shipped as package data (documentation and other tools'
# validation; imagekit's own reader checks more than a schema can say).
SCHEMA_FILE = Path(__file__).resolve().parent / "schema" / "stratuslab-entry.xsd"
MAX_PORT = 65535
MAX_ICMP = 255
#: Longest accepted text of a term, by Python field; every other text term: MAX_SHORT_TEXT
#: (what the registry indexes in bounded columns).
MAX_SHORT_TEXT = 200
TEXT_LIMITS: Mapping[str, int] = {"description": 8192, "deprecated": 1024}
MAX_LOCATION = 2048
MAX_EMAIL = 320  # RFC 3696's 64 + 1 + 255
MAX_DN = 1024
#: Most values of a repeated term (locations, ports, ICMP types).
MAX_REPEATED = {"locations": 64, "inbound_ports": 1024, "outbound_ports": 1024, "icmp": 256}

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_HEX_RE = re.compile(r"[0-9a-f]+")
# Practical address syntax: a dot-atom local part, '@', dot-separated domain labels.
_EMAIL_RE = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
# Characters XML 1.0 cannot carry (lxml refuses to write them).
_XML_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class Kind(StrEnum):
    """``slterms:kind``: a bootable machine image or a data disk."""

    MACHINE = "machine"
    DISK = "disk"


class LocationScheme(StrEnum):
    """The URL schemes a ``slterms:location`` may use (``file`` only for local setups: a
    registry accepts it only when told to)."""

    HTTP = "http"
    HTTPS = "https"
    S3 = "s3"
    FILE = "file"


def check_location(url: str) -> LocationScheme:
    """The scheme of a valid location URL.

    Raises InvalidMetadata("bad-location") for anything else: another scheme
    (``javascript:``, ``data:``, ``ftp:``), an upper-case scheme, whitespace or control
    characters, credentials in the URL, a missing host (http, https), bucket or key (s3), a
    host other than ``localhost`` (file), a bad port, or more than MAX_LOCATION characters.
    """
    if not url or len(url) > MAX_LOCATION:
        raise InvalidMetadata(
            "bad-location", f"slterms:location is empty or longer than {MAX_LOCATION} characters"
        )
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise InvalidMetadata(
            "bad-location", f"location {url!r} contains whitespace or a control character"
        )
    parts = urllib.parse.urlsplit(url)
    try:
        scheme = LocationScheme(url.split(":", 1)[0]) if ":" in url else None
    except ValueError:
        scheme = None
    if scheme is None:
        allowed = ", ".join(s.value for s in LocationScheme)
        raise InvalidMetadata(
            "bad-location", f"location {url[:80]!r} is not a URL of scheme {allowed}"
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidMetadata("bad-location", f"location {url!r} carries credentials")
    try:
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError as e:
        raise InvalidMetadata("bad-location", f"location {url!r}: {e}") from None
    if scheme in (LocationScheme.HTTP, LocationScheme.HTTPS) and not parts.hostname:
        raise InvalidMetadata("bad-location", f"location {url!r} has no host")
    if scheme is LocationScheme.S3 and not (parts.netloc and parts.path.strip("/")):
        raise InvalidMetadata("bad-location", f"location {url!r} is not s3://bucket/key")
    if scheme is LocationScheme.FILE and (
        parts.netloc not in ("", "localhost") or not parts.path.startswith("/")
    ):
        raise InvalidMetadata("bad-location", f"location {url!r} is not file:///absolute/path")
    return scheme


# --- dates ----------------------------------------------------------------------------


def parse_date(text: str, *, term: str = "date") -> datetime:
    """Read ``yyyy-MM-ddTHH:mm:ssZ`` (UTC, no fraction) as an aware datetime.

    Raises InvalidMetadata("bad-date") naming ``term`` for any other form or an impossible
    date (hour 99, February 30).
    """
    value = text.strip()
    if not _DATE_RE.fullmatch(value):
        raise InvalidMetadata("bad-date", f"{term} {text!r} is not yyyy-MM-ddTHH:mm:ssZ")
    try:
        return datetime.strptime(value, _DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError as e:
        raise InvalidMetadata("bad-date", f"{term} {text!r} is not a valid date") from e


def format_date(dt: datetime) -> str:
    """Write ``dt`` as ``yyyy-MM-ddTHH:mm:ssZ`` in UTC (a naive datetime is taken as UTC)."""
    return _utc_seconds(dt).strftime(_DATE_FORMAT)


def _utc_seconds(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).replace(microsecond=0)


# --- small validators (shared with the XML reader) -----------------------------------------


def is_email(text: str) -> bool:
    """True if ``text`` is an e-mail address of the form the profile accepts."""
    return _EMAIL_RE.fullmatch(text) is not None


def _check_text(term: str, value: str | None, limit: int | None = None) -> None:
    if value is not None and _XML_BAD_CHARS.search(value):
        raise InvalidMetadata("bad-text", f"{term} contains a character XML cannot carry")
    if value is not None and limit is not None and len(value) > limit:
        raise InvalidMetadata("too-long", f"{term} is longer than {limit} characters")


def _coerce_enum(enum: type[Any], value: Any, rule: str, term: str) -> Any:
    if value is None or isinstance(value, enum):
        return value
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum)
        raise InvalidMetadata(rule, f"{term} {value!r} is not one of {allowed}") from None


def _set(obj: object, name: str, value: Any) -> None:
    # Normalising fields of a frozen dataclass in __post_init__.
    object.__setattr__(obj, name, value)


# --- the values -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Checksum:
    """One ``slreq:checksum``: an algorithm and its hex value, as written.

    Raises InvalidMetadata("bad-algorithm" | "bad-checksum-value") when built with an unknown
    algorithm or a value that is not lower-case hex of at most the digest's size (leading
    zeros stripped or added are fine: values are compared as numbers).
    """

    algorithm: DigestAlgorithm
    value: str

    def __post_init__(self) -> None:
        algorithm = _coerce_enum(DigestAlgorithm, self.algorithm, "bad-algorithm", "algorithm")
        _set(self, "algorithm", algorithm)
        value = self.value
        if not isinstance(value, str) or not _HEX_RE.fullmatch(value):
            raise InvalidMetadata(
                "bad-checksum-value", f"{algorithm} value {value!r} is not lower-case hex"
            )
        width = algorithm.hex_length
        if int(value, 16).bit_length() > width * 4:
            raise InvalidMetadata(
                "bad-checksum-value", f"{algorithm} value {value!r} is longer than {width} digits"
            )

    @property
    def hex(self) -> str:
        """The value as exactly the digest's number of lower-case hex digits."""
        return format(int(self.value, 16), f"0{self.algorithm.hex_length}x")

    def matches(self, hex_value: str) -> bool:
        """True if ``hex_value`` (any case, any leading zeros) is the same number."""
        try:
            return int(hex_value, 16) == int(self.value, 16)
        except ValueError:
            return False


@dataclasses.dataclass(frozen=True)
class Endorser:
    """``slreq:endorser``: the e-mail and the certificate's subject and issuer (RFC 2253).

    Raises InvalidMetadata("bad-email") for a malformed address and
    ("incomplete-endorser") when a field is empty.
    """

    email: str
    subject: str
    issuer: str

    def __post_init__(self) -> None:
        for name in ("email", "subject", "issuer"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise InvalidMetadata("incomplete-endorser", f"endorser {name} is empty")
            _check_text(f"endorser {name}", value, MAX_EMAIL if name == "email" else MAX_DN)
            _set(self, name, value.strip())
        if not is_email(self.email):
            raise InvalidMetadata("bad-email", f"{self.email!r} is not an e-mail address")


@dataclasses.dataclass(frozen=True)
class Endorsement:
    """``slreq:endorsement``: when and by whom; both empty is a draft awaiting signature.

    Raises InvalidMetadata("missing-endorser") for a date without an endorser and
    ("missing-endorsement-created") for an endorser without a date.
    """

    created: datetime | None = None
    endorser: Endorser | None = None

    def __post_init__(self) -> None:
        if self.created is not None:
            _set(self, "created", _utc_seconds(self.created))
        if self.created is not None and self.endorser is None:
            raise InvalidMetadata("missing-endorser", "endorsement has a date but no endorser")
        if self.endorser is not None and self.created is None:
            raise InvalidMetadata(
                "missing-endorsement-created", "endorsement has an endorser but no dcterms:created"
            )

    @property
    def is_empty(self) -> bool:
        """True for a draft's empty endorsement (signing fills it)."""
        return self.created is None and self.endorser is None


@dataclasses.dataclass(frozen=True)
class Entry:
    """One image's metadata: every term of DESIGN 4.1, validated when built.

    The head (``identifier``, ``bytes``, ``checksums``, ``endorsement``) is mandatory.
    ``bytes`` and the checksums describe the uncompressed image; exactly one checksum is
    SHA-1 and it equals the identifier. Building an Entry with a value that breaks a rule
    raises InvalidMetadata naming the rule (e.g. "checksum-id-mismatch",
    "port-out-of-range", "bad-kind").
    """

    identifier: str
    bytes: int
    checksums: tuple[Checksum, ...]
    endorsement: Endorsement = Endorsement()
    type: str | None = None
    kind: Kind | None = None
    valid: datetime | None = None
    title: str | None = None
    alternative: str | None = None
    description: str | None = None
    creator: str | None = None
    created: datetime | None = None
    publisher: str | None = None
    format: DiskFormat | None = None
    compression: Compression = Compression.NONE
    replaces: str | None = None
    is_replaced_by: str | None = None
    locations: tuple[str, ...] = ()
    version: str | None = None
    serial_number: int | None = None
    hypervisor: str | None = None
    disks_bus: str | None = None
    inbound_ports: tuple[int, ...] = ()
    outbound_ports: tuple[int, ...] = ()
    icmp: tuple[int, ...] = ()
    os: str | None = None
    os_version: str | None = None
    os_arch: str | None = None
    deprecated: str | None = None
    extra: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not is_identifier(self.identifier):
            raise InvalidMetadata(
                "bad-identifier", f"{self.identifier!r} is not a 27-character Marketplace ID"
            )
        if isinstance(self.bytes, bool) or not isinstance(self.bytes, int) or self.bytes < 0:
            raise InvalidMetadata("bad-bytes", f"bytes {self.bytes!r} is not a whole number")
        self._normalise()
        self._check_checksums()
        for name, term, limit, rule in (
            ("inbound_ports", "inbound-port", MAX_PORT, "port-out-of-range"),
            ("outbound_ports", "outbound-port", MAX_PORT, "port-out-of-range"),
            ("icmp", "icmp", MAX_ICMP, "icmp-out-of-range"),
        ):
            for value in getattr(self, name):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise InvalidMetadata(rule, f"{term} {value!r} is not a whole number")
                if not 0 <= value <= limit:
                    raise InvalidMetadata(rule, f"{term} {value} is not in 0-{limit}")
        if self.serial_number is not None and (
            isinstance(self.serial_number, bool)
            or not isinstance(self.serial_number, int)
            or self.serial_number < 0
        ):
            raise InvalidMetadata(
                "bad-serial-number", f"serial number {self.serial_number!r} is not a whole number"
            )

    def _normalise(self) -> None:
        for name in ("checksums", "locations", "inbound_ports", "outbound_ports", "icmp", "extra"):
            value = getattr(self, name)
            if isinstance(value, str | bytes):
                raise TypeError(f"Entry.{name} must be a sequence, not a single value")
            _set(self, name, tuple(value))
        if self.extra:
            _set(self, "extra", tuple(canonical_fragment(x) for x in self.extra))
        for name, (ns, local) in TEXT_TERMS.items():
            value = getattr(self, name)
            if value == "" and name != "deprecated":
                _set(self, name, None)
            value = getattr(self, name)
            _check_text(name, value)
            limit = TEXT_LIMITS.get(name, MAX_SHORT_TEXT)
            if value is not None and len(value) > limit:
                raise InvalidMetadata("too-long", f"{ns}:{local} is longer than {limit} characters")
        for name, most in MAX_REPEATED.items():
            if len(getattr(self, name)) > most:
                raise InvalidMetadata("too-many", f"more than {most} values of {name}")
        for location in self.locations:
            if not location or not location.strip():
                raise InvalidMetadata("bad-location", "slterms:location is empty")
            _check_text("location", location)
            check_location(location)
        for name in ("valid", "created"):
            value = getattr(self, name)
            if value is not None:
                _set(self, name, _utc_seconds(value))
        _set(self, "kind", _coerce_enum(Kind, self.kind, "bad-kind", "kind"))
        _set(self, "format", _coerce_enum(DiskFormat, self.format, "bad-format", "format"))
        compression = Compression.NONE if self.compression is None else self.compression
        _set(
            self,
            "compression",
            _coerce_enum(Compression, compression, "bad-compression", "compression"),
        )

    def _check_checksums(self) -> None:
        if not self.checksums:
            raise InvalidMetadata("missing-checksum", "an entry needs at least one checksum")
        seen: set[DigestAlgorithm] = set()
        for checksum in self.checksums:
            if not isinstance(checksum, Checksum):
                raise TypeError("Entry.checksums must hold Checksum values")
            if checksum.algorithm in seen:
                raise InvalidMetadata(
                    "duplicate-algorithm", f"more than one {checksum.algorithm} checksum"
                )
            seen.add(checksum.algorithm)
        sha1 = self.checksum(DigestAlgorithm("SHA-1"))
        if sha1 is None:
            raise InvalidMetadata("missing-sha1", "exactly one SHA-1 checksum is required")
        expected = id_to_sha1(self.identifier)
        if not sha1.matches(expected):
            raise InvalidMetadata(
                "checksum-id-mismatch",
                f"SHA-1 {sha1.value} does not match identifier {self.identifier} ({expected})",
            )

    # --- reading ------------------------------------------------------------------------

    def checksum(self, algorithm: DigestAlgorithm | str) -> Checksum | None:
        """The checksum for ``algorithm`` (an enum member or its XML name), or None."""
        wanted = str(algorithm)
        for checksum in self.checksums:
            if str(checksum.algorithm) == wanted:
                return checksum
        return None

    @property
    def digests(self) -> dict[DigestAlgorithm, str]:
        """Every checksum as canonical fixed-length lower-case hex, by algorithm."""
        return {c.algorithm: c.hex for c in self.checksums}

    @property
    def sha1(self) -> str:
        """The SHA-1 of the uncompressed image: 40 lower-case hex digits."""
        checksum = self.checksum("SHA-1")
        assert checksum is not None  # guaranteed by __post_init__
        return checksum.hex

    @property
    def tag(self) -> str | None:
        """``dcterms:alternative``: the name people follow across rebuilds."""
        return self.alternative

    @property
    def endorser_email(self) -> str | None:
        endorser = self.endorsement.endorser
        return endorser.email if endorser is not None else None

    @property
    def endorsement_created(self) -> datetime | None:
        return self.endorsement.created

    @property
    def is_draft(self) -> bool:
        """True while the endorsement is empty (not yet signed)."""
        return self.endorsement.is_empty

    @property
    def is_deprecated(self) -> bool:
        """True if the entry carries ``slterms:deprecated`` (even with an empty reason)."""
        return self.deprecated is not None

    def is_expired(self, now: datetime) -> bool:
        """True if ``dcterms:valid`` is at or before ``now``; an entry without one never
        expires (a site policy may refuse such entries)."""
        return self.valid is not None and _utc_seconds(now) >= self.valid

    def replace(self, **changes: Any) -> Entry:
        """A copy with ``changes`` applied (validated like any new Entry)."""
        return dataclasses.replace(self, **changes)


# --- the dict form (JSON) ---------------------------------------------------------------


def entry_to_dict(entry: Entry) -> dict[str, Any]:
    """The entry as JSON-ready data: field names as keys, dates in the XML form, enums as
    their values, absent optional terms as null, repeated terms as lists."""
    result: dict[str, Any] = {}
    for field in dataclasses.fields(entry):
        value = getattr(entry, field.name)
        if field.name == "checksums":
            value = [{"algorithm": str(c.algorithm), "value": c.value} for c in value]
        elif field.name == "endorsement":
            endorser = value.endorser
            value = {
                "created": format_date(value.created) if value.created else None,
                "endorser": dataclasses.asdict(endorser) if endorser else None,
            }
        elif isinstance(value, datetime):
            value = format_date(value)
        elif isinstance(value, StrEnum):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        result[field.name] = value
    return result


def entry_from_dict(data: Mapping[str, Any]) -> Entry:
    """The inverse of ``entry_to_dict``. Raises InvalidMetadata for bad values and for
    unknown keys ("unknown-field")."""
    names = {f.name for f in dataclasses.fields(Entry)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InvalidMetadata("unknown-field", f"unknown entry fields: {', '.join(unknown)}")
    values = dict(data)
    try:
        values["checksums"] = tuple(
            Checksum(c["algorithm"], c["value"]) for c in data.get("checksums") or ()
        )
        endorsement = data.get("endorsement") or {}
        endorser = endorsement.get("endorser")
        created = endorsement.get("created")
        values["endorsement"] = Endorsement(
            created=parse_date(created, term="endorsement created") if created else None,
            endorser=Endorser(**endorser) if endorser else None,
        )
        for name in ("valid", "created"):
            if values.get(name):
                values[name] = parse_date(values[name], term=name)
        return Entry(**values)
    except (KeyError, TypeError) as e:
        raise InvalidMetadata("bad-entry-data", f"malformed entry data: {e}") from e
