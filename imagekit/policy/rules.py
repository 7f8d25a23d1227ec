"""Site policy: small rules that compose, deciding which verified entries may run.

A rule looks at a verified entry (its parsed ``entry`` and the signing ``certificate``) and
either returns or raises a VerificationError naming the reason: ``Expired``, ``Deprecated``
or ``PolicyRefused``. ``AllOf`` combines rules; an empty ``AllOf`` refuses everything (a
policy that says nothing must not mean "anything goes"). Rules that weaken the checks are
named ``Unsafe...`` and log a warning when built.

Filters never mutate the list they walk: StratusLab's policy removed rejected entries from
the list it was iterating and so skipped the entry after each removal.

Formats: imagekit's own TOML (see ``parse_policy_toml``) and StratusLab's ``policy.cfg``
(INI, one value per continuation line; ``parse_stratuslab_policy``). Both add the rules
StratusLab lacked (not expired, not deprecated, SHA-256 or stronger checked on the bytes)
unless the file opts out under ``[unsafe]``.
"""

from __future__ import annotations

import configparser
import dataclasses
import enum
import hashlib
import logging
import tomllib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509

from ..entry import format_date
from ..errors import Deprecated, Expired, InputError, PolicyRefused, VerificationError
from ..image.digests import DigestAlgorithm
from ..image.identifier import id_to_sha1
from ..signing.certs import NormalizedDN, find_dn, normalize_name

log = logging.getLogger(__name__)


class Subject(Protocol):
    """What a rule inspects: ``imagekit.signing.verify.VerifiedEntry`` satisfies it."""

    @property
    def entry(self) -> Any: ...

    @property
    def certificate(self) -> Any: ...


class Rule(Protocol):
    def check(self, subject: Subject, *, now: datetime) -> None:
        """Return if ``subject`` is acceptable; raise a VerificationError naming why not."""

    def describe(self) -> str: ...


# --- small accessors, so rules read entries one way --------------------------------------


def _email_key(email: str) -> str:
    return email.strip().lower()


@dataclasses.dataclass(frozen=True)
class EndorserNames:
    """Endorsers named in a policy: e-mail addresses (compared case-insensitively) and
    subject DNs (compared by meaning, ``imagekit.signing.certs``: ``CN = Hacker,O=Evil``,
    ``2.5.4.3=Hacker,O=Evil`` and the ``#hex`` form all name ``CN=Hacker,O=Evil``)."""

    emails: frozenset[str]
    dns: frozenset[NormalizedDN]
    written: tuple[str, ...] = ()  # as the policy wrote them, for describe()

    @classmethod
    def parse(cls, names: Iterable[str]) -> EndorserNames:
        """A name with ``=`` is a DN, any other an e-mail. Raises InputError for a bad DN."""
        emails: set[str] = set()
        dns: set[NormalizedDN] = set()
        written: list[str] = []
        for name in names:
            name = name.strip()
            if not name:
                continue
            written.append(name)
            if "=" in name:
                parsed = find_dn(name)
                if parsed is None or not parsed:
                    raise InputError(f"policy: {name!r} is not a distinguished name (RFC 4514)")
                dns.add(parsed)
            else:
                emails.add(_email_key(name))
        return cls(frozenset(emails), frozenset(dns), tuple(sorted(set(written))))

    def __bool__(self) -> bool:
        return bool(self.emails or self.dns)

    def matches(self, subject: Subject) -> bool:
        """Whether the endorser of ``subject`` (its e-mail, or its certificate's subject)
        is one of these names."""
        entry = subject.entry
        email = getattr(entry, "endorser_email", None)
        if email and _email_key(str(email)) in self.emails:
            return True
        if not self.dns:
            return False
        cert = subject.certificate
        if isinstance(cert, x509.Certificate) and normalize_name(cert.subject) in self.dns:
            return True
        endorser = getattr(getattr(entry, "endorsement", None), "endorser", None)
        text = getattr(endorser, "subject", None)
        return bool(text) and find_dn(str(text)) in self.dns

    def describe(self) -> list[str]:
        return list(self.written)


def _sha1(entry: Any) -> int:
    """The SHA-1 the ID encodes: the one the downloaded bytes are checked against (an
    entry's own SHA-1 value is held equal to it, compared numerically: StratusLab entries
    may strip leading zeros)."""
    return int(id_to_sha1(entry.identifier), 16)


def _cert_fingerprint(cert: Any) -> str:
    """SHA-256 of the DER certificate; accepts cryptography certificates, DER or PEM bytes."""
    if cert is None:
        return ""
    if hasattr(cert, "public_bytes"):
        from cryptography.hazmat.primitives.serialization import Encoding

        der = cert.public_bytes(Encoding.DER)
    elif isinstance(cert, bytes) and cert.lstrip().startswith(b"-----BEGIN"):
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        der = x509.load_pem_x509_certificate(cert).public_bytes(Encoding.DER)
    else:
        der = bytes(cert)
    return hashlib.sha256(der).hexdigest()


# --- rules ------------------------------------------------------------------------------


class ListKind(enum.Enum):
    """What a white or black list names, how its values are read and how an entry is
    matched against them (the three lists StratusLab's policy had, one rule for all)."""

    ENDORSERS = "endorser"
    IMAGES = "image"
    SHA1 = "SHA-1"

    def parse(self, values: Iterable[str]) -> Any:
        """The list's values, parsed once. Raises InputError for a bad DN or SHA-1."""
        if self is ListKind.ENDORSERS:
            return EndorserNames.parse(values)
        if self is ListKind.IMAGES:
            return frozenset(v.strip() for v in values if v.strip())
        return _parse_sha1s(values)

    def matches(self, values: Any, subject: Subject) -> bool:
        if self is ListKind.ENDORSERS:
            return bool(values.matches(subject))
        if self is ListKind.IMAGES:
            return subject.entry.identifier in values
        return _sha1(subject.entry) in values

    def name_of(self, subject: Subject) -> str:
        """How refusals name the entry."""
        entry = subject.entry
        if self is ListKind.ENDORSERS:
            return f"endorser {entry.endorser_email or '(none)'}"
        if self is ListKind.IMAGES:
            return f"image {entry.identifier}"
        return f"SHA-1 {_sha1(entry):040x}"

    def written(self, values: Any) -> list[str]:
        if self is ListKind.ENDORSERS:
            return list(values.describe())
        if self is ListKind.IMAGES:
            return sorted(values)
        return sorted(f"{v:040x}" for v in values)


@dataclasses.dataclass(frozen=True)
class Listed:
    """A white list (``allow``: only these) or a black list (only not these)."""

    kind: ListKind
    allow: bool
    values: Any

    @classmethod
    def of(cls, kind: ListKind, values: Iterable[str], *, allow: bool) -> Listed:
        return cls(kind, allow, kind.parse(values))

    def check(self, subject: Subject, *, now: datetime) -> None:
        listed = self.kind.matches(self.values, subject)
        if self.allow and not listed:
            raise PolicyRefused(f"{self.kind.name_of(subject)} is not on the allowed list")
        if not self.allow and listed:
            raise PolicyRefused(f"{self.kind.name_of(subject)} is denied")

    def describe(self) -> str:
        where = "in" if self.allow else "not in"
        return f"{self.kind.value} {where} {self.kind.written(self.values)}"


def _parse_sha1s(values: Iterable[str]) -> frozenset[int]:
    out = set()
    for v in values:
        v = v.strip()
        if not v:
            continue
        try:
            out.add(int(v, 16))
        except ValueError as e:
            raise InputError(f"policy: {v!r} is not a hexadecimal SHA-1") from e
    return frozenset(out)


# The lists of both file formats: (kind, allow, TOML table, TOML key, StratusLab key).
# StratusLab's section is the TOML table's name.
LISTS: tuple[tuple[ListKind, bool, str, str, str], ...] = (
    (ListKind.ENDORSERS, True, "endorsers", "allow", "whitelistendorsers"),
    (ListKind.ENDORSERS, False, "endorsers", "deny", "blacklistendorsers"),
    (ListKind.IMAGES, True, "images", "allow", "whitelistimages"),
    (ListKind.IMAGES, False, "images", "deny", "blacklistimages"),
    (ListKind.SHA1, True, "checksums", "allow-sha1", "whitelistchecksums"),
    (ListKind.SHA1, False, "checksums", "deny-sha1", "blacklistchecksums"),
)


@dataclasses.dataclass(frozen=True)
class NotExpired:
    def check(self, subject: Subject, *, now: datetime) -> None:
        entry = subject.entry
        if entry.is_expired(now):
            raise Expired(f"entry {entry.identifier} expired on {format_date(entry.valid)}")

    def describe(self) -> str:
        return "not expired"


@dataclasses.dataclass(frozen=True)
class NotDeprecated:
    def check(self, subject: Subject, *, now: datetime) -> None:
        reason = getattr(subject.entry, "deprecated", None)
        if reason is not None:
            raise Deprecated(f"entry {subject.entry.identifier} is deprecated: {reason}")

    def describe(self) -> str:
        return "not deprecated"


@dataclasses.dataclass(frozen=True)
class MinDigest:
    """The entry must carry a checksum at least this strong; ``digest_algorithms`` names the
    ones the launcher computes on the downloaded bytes and compares."""

    algorithm: DigestAlgorithm

    def __init__(self, algorithm: str | DigestAlgorithm = "SHA-256") -> None:
        object.__setattr__(self, "algorithm", DigestAlgorithm.parse(str(algorithm)))

    def strong_enough(self, entry: Any) -> list[DigestAlgorithm]:
        floor = self.algorithm.strength
        return sorted(
            {c.algorithm for c in entry.checksums if c.algorithm.strength >= floor},
            key=lambda a: a.strength,
        )

    def check(self, subject: Subject, *, now: datetime) -> None:
        if not self.strong_enough(subject.entry):
            have = ", ".join(str(c.algorithm) for c in subject.entry.checksums)
            raise PolicyRefused(
                f"entry {subject.entry.identifier} has no {self.algorithm} or stronger "
                f"checksum (has {have})"
            )

    def describe(self) -> str:
        return f"{self.algorithm} or stronger, checked on the bytes"


@dataclasses.dataclass(frozen=True)
class TrustedCertFor:
    """Entries endorsed by ``endorser`` must be signed with one of these certificates.

    Entries of other endorsers pass: combine with EndorserAllowed to restrict who may sign.
    """

    endorser: str
    fingerprints: frozenset[str]
    names: EndorserNames

    def __init__(self, endorser: str, certificates: Iterable[Any]) -> None:
        fps = frozenset(_cert_fingerprint(c) for c in certificates)
        if not fps:
            raise InputError(f"policy: no certificate given for endorser {endorser}")
        object.__setattr__(self, "endorser", endorser.strip())
        object.__setattr__(self, "fingerprints", fps)
        object.__setattr__(self, "names", EndorserNames.parse([endorser]))

    def check(self, subject: Subject, *, now: datetime) -> None:
        if not self.names.matches(subject):
            return
        if _cert_fingerprint(subject.certificate) not in self.fingerprints:
            raise PolicyRefused(
                f"entry endorsed by {self.endorser} is not signed with a certificate "
                "the policy trusts for that endorser"
            )

    def describe(self) -> str:
        return f"{self.endorser} signs with one of {len(self.fingerprints)} pinned certificate(s)"


@dataclasses.dataclass(frozen=True)
class UnsafeAcceptAll:
    """Accepts everything. Only for tests and deliberate opt-outs; warns when built."""

    def __post_init__(self) -> None:
        log.warning("policy: UnsafeAcceptAll accepts every verified entry")

    def check(self, subject: Subject, *, now: datetime) -> None:
        return None

    def describe(self) -> str:
        return "UNSAFE: accept everything"


@dataclasses.dataclass(frozen=True)
class AllOf:
    """Every rule must accept. No rules at all refuses: silence is not consent."""

    rules: tuple[Rule, ...]

    def __init__(self, *rules: Rule) -> None:
        object.__setattr__(self, "rules", tuple(rules))

    def check(self, subject: Subject, *, now: datetime) -> None:
        if not self.rules:
            raise PolicyRefused("the policy has no rules (an empty policy refuses everything)")
        for rule in self.rules:
            rule.check(subject, now=now)

    def describe(self) -> str:
        return " AND ".join(r.describe() for r in self.rules) or "(refuse everything)"


# --- the policy object ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rejected:
    subject: Any
    reason: VerificationError


@dataclasses.dataclass(frozen=True)
class Policy:
    """A site policy: a rule plus the verification switches it implies.

    ``allow_sha1_signatures`` is passed to the verifier (StratusLab's RSA-SHA1 signatures).
    """

    rule: Rule
    allow_sha1_signatures: bool = False
    source: str = "(built in)"

    def check(
        self, subject: Subject, *, now: datetime | None = None, lifecycle: bool = True
    ) -> None:
        """Raise Expired, Deprecated or PolicyRefused if ``subject`` may not run.

        ``lifecycle=False`` leaves out the rules about the entry's age (NotExpired,
        NotDeprecated): whether the policy accepts who endorsed what, whatever its age.
        """
        when = now or datetime.now(UTC)
        if lifecycle:
            self.rule.check(subject, now=when)
            return
        for rule in _walk(self.rule):
            if isinstance(rule, AllOf):
                if not rule.rules:
                    rule.check(subject, now=when)  # refuses: an empty AllOf says no
            elif not isinstance(rule, NotExpired | NotDeprecated):
                rule.check(subject, now=when)

    def is_allowed(
        self, subject: Subject, *, now: datetime | None = None, lifecycle: bool = True
    ) -> bool:
        try:
            self.check(subject, now=now, lifecycle=lifecycle)
        except VerificationError:
            return False
        return True

    def partition(
        self, subjects: Sequence[Any], *, now: datetime | None = None
    ) -> tuple[list[Any], list[Rejected]]:
        """Split into (accepted, rejected-with-reason): new lists, the input is untouched."""
        now = now or datetime.now(UTC)
        accepted: list[Any] = []
        rejected: list[Rejected] = []
        for subject in tuple(subjects):
            try:
                self.rule.check(subject, now=now)
            except VerificationError as e:
                rejected.append(Rejected(subject, e))
            else:
                accepted.append(subject)
        return accepted, rejected

    def filter(self, subjects: Sequence[Any], *, now: datetime | None = None) -> list[Any]:
        """The acceptable subjects, as a new list (the input is not modified)."""
        return self.partition(subjects, now=now)[0]

    def digest_algorithms(self, entry: Any) -> list[DigestAlgorithm]:
        """Algorithms to compute on the downloaded bytes and compare with ``entry``, besides
        the SHA-1 the download always checks against the ID (``imagekit.fetch.download``).

        One is enough: the weakest of the entry's checksums that meets the MinDigest floor
        (a signed SHA-256 binds the bytes; hashing SHA-512 as well would double the cost
        and add nothing). Several MinDigest rules: each contributes its own. Without a
        MinDigest rule, the strongest checksum the entry carries.
        """
        chosen: list[DigestAlgorithm] = []
        for rule in _walk(self.rule):
            if isinstance(rule, MinDigest):
                algs = rule.strong_enough(entry)
                if algs and algs[0] not in chosen:
                    chosen.append(algs[0])
        if chosen:
            return chosen
        strongest = max((c.algorithm for c in entry.checksums), key=lambda a: a.strength)
        return [strongest]

    def describe(self) -> str:
        return self.rule.describe()


def _walk(rule: Rule) -> Iterable[Rule]:
    yield rule
    if isinstance(rule, AllOf):
        for r in rule.rules:
            yield from _walk(r)


def default_rules() -> list[Rule]:
    """What every policy gets unless it opts out under ``[unsafe]``."""
    return [NotExpired(), NotDeprecated(), MinDigest(DigestAlgorithm.SHA256)]


def default_policy() -> Policy:
    return Policy(AllOf(*default_rules()))


# --- TOML -------------------------------------------------------------------------------

_TOML_KEYS: dict[str, set[str] | None] = {
    **{table: {k for _, _, tb, k, _ in LISTS if tb == table} for _, _, table, _, _ in LISTS},
    "digests": {"minimum"},
    "trusted-certificates": None,  # table: endorser -> [paths]
    "unsafe": {
        "allow-expired",
        "allow-deprecated",
        "allow-sha1-signatures",
        "no-digest-minimum",
        "accept-all",
    },
}

EXAMPLE_TOML = """\
# imagekit site policy
[endorsers]
allow = ["jane.tester@example.org", "CN=Jim Tester,O=Example"]   # e-mails or subject DNs
deny  = ["hackers@example.org"]

[images]
allow = []                  # empty: any ID
deny  = ["GOaxJFdoEXvqAm9ArJgnZ0_GGG"]

[checksums]
deny-sha1 = ["639ac4915da045efa809bd02b2609d9d3f932e85"]

[digests]
minimum = "SHA-256"         # computed on the downloaded bytes and compared

[trusted-certificates]      # endorser -> certificates that must have signed its entries
"jane.tester@example.org" = ["certs/jane.pem"]

# [unsafe]                  # every switch here weakens the checks and is logged
# allow-expired = true
# allow-deprecated = true
# allow-sha1-signatures = true    # verify StratusLab's RSA-SHA1 signatures
"""


def _strings(doc: dict[str, Any], table: str, key: str, source: str) -> list[str]:
    value = doc.get(table, {}).get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f"policy {source}: [{table}] {key} must be a list of strings")
    return value


def parse_policy_toml(text: str, *, base_dir: Path | None = None, source: str = "") -> Policy:
    """Build a Policy from imagekit's TOML format (``EXAMPLE_TOML``).

    Raises InputError on unknown tables or keys, wrong types, unreadable certificates.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"policy {source}: {e}") from e
    for table, value in doc.items():
        if table not in _TOML_KEYS or not isinstance(value, dict):
            raise InputError(f"policy {source}: unknown table [{table}]")
        allowed = _TOML_KEYS[table]
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    raise InputError(f"policy {source}: unknown key {key!r} in [{table}]")
    unsafe = doc.get("unsafe", {})
    for key, val in unsafe.items():
        if not isinstance(val, bool):
            raise InputError(f"policy {source}: [unsafe] {key} must be true or false")
        if val:
            log.warning("policy %s: UNSAFE %s", source, key)

    rules: list[Rule] = []
    if unsafe.get("accept-all"):
        rules.append(UnsafeAcceptAll())
    for kind, allow, table, key, _ini in LISTS:
        if values := _strings(doc, table, key, source):
            rules.append(Listed.of(kind, values, allow=allow))
    for endorser, paths in doc.get("trusted-certificates", {}).items():
        if not isinstance(paths, list) or not paths:
            raise InputError(f"policy {source}: [trusted-certificates] {endorser!r}: list paths")
        certs = []
        for p in paths:
            path = Path(p) if base_dir is None else base_dir / p
            try:
                certs.append(path.read_bytes())
            except OSError as e:
                raise InputError(f"policy {source}: certificate {path}: {e.strerror}") from e
        try:
            rules.append(TrustedCertFor(endorser, certs))
        except ValueError as e:
            raise InputError(f"policy {source}: certificate for {endorser}: {e}") from e
    if not unsafe.get("allow-expired"):
        rules.append(NotExpired())
    if not unsafe.get("allow-deprecated"):
        rules.append(NotDeprecated())
    if not unsafe.get("no-digest-minimum"):
        minimum = doc.get("digests", {}).get("minimum", "SHA-256")
        try:
            rule = MinDigest(minimum)
        except ValueError as e:
            raise InputError(f"policy {source}: [digests] minimum: {e}") from e
        if rule.algorithm.strength < DigestAlgorithm.SHA256.strength:
            raise InputError(
                f"policy {source}: [digests] minimum {rule.algorithm} is weaker than SHA-256",
                hint="set [unsafe] no-digest-minimum = true to opt out deliberately",
            )
        rules.append(rule)
    return Policy(
        AllOf(*rules),
        allow_sha1_signatures=bool(unsafe.get("allow-sha1-signatures")),
        source=source or "(toml)",
    )


# --- StratusLab policy.cfg --------------------------------------------------------------


def _ini_list(cp: configparser.ConfigParser, section: str, key: str) -> list[str]:
    if not cp.has_option(section, key):
        return []
    return [line.strip() for line in cp.get(section, key).splitlines() if line.strip()]


def parse_stratuslab_policy(text: str, *, source: str = "policy.cfg") -> Policy:
    """Import StratusLab's INI policy (whitelist/blacklist of endorsers, images, checksums).

    An empty whitelist means "no restriction", as in StratusLab. imagekit's rules are added
    (not expired, not deprecated, SHA-256 or stronger), and since StratusLab signed with
    RSA-SHA1, SHA-1 signatures are accepted (``allow_sha1_signatures``).
    """
    cp = configparser.ConfigParser(interpolation=None, strict=True)
    try:
        cp.read_string(text, source=source)
    except configparser.Error as e:
        raise InputError(f"policy {source}: {e}") from e
    rules: list[Rule] = []
    for kind, allow, table, _key, ini in LISTS:
        if values := _ini_list(cp, table, ini):
            rules.append(Listed.of(kind, values, allow=allow))
    rules.extend(default_rules())
    return Policy(AllOf(*rules), allow_sha1_signatures=True, source=source)


def stratuslab_to_toml(text: str, *, source: str = "policy.cfg") -> str:
    """Convert StratusLab's ``policy.cfg`` into imagekit's TOML (same decisions: see
    ``parse_stratuslab_policy``). Raises InputError for a file that is not INI."""
    import json

    cp = configparser.ConfigParser(interpolation=None, strict=True)
    try:
        cp.read_string(text, source=source)
    except configparser.Error as e:
        raise InputError(f"policy {source}: {e}") from e

    def line(key: str, values: list[str]) -> str:
        return f"{key} = [" + ", ".join(json.dumps(v) for v in values) + "]"

    out = [f"# imagekit site policy, imported from StratusLab {source}", ""]
    for table in dict.fromkeys(table for _, _, table, _, _ in LISTS):
        out.append(f"[{table}]")
        out += [line(key, _ini_list(cp, tb, ini)) for _, _, tb, key, ini in LISTS if tb == table]
        out.append("")
    out += [
        "[digests]",
        'minimum = "SHA-256"',
        "",
        "[unsafe]",
        "# StratusLab signed with RSA-SHA1: keep accepting those signatures",
        "allow-sha1-signatures = true",
        "",
    ]
    return "\n".join(out)


def load_policy(path: Path | None) -> Policy:
    """The policy at ``path`` (``.toml``, else StratusLab INI), or the default policy.

    Raises InputError if the file cannot be read or parsed.
    """
    if path is None:
        return default_policy()
    try:
        text = path.read_text()
    except OSError as e:
        raise InputError(f"policy {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise InputError(f"policy {path}: not text") from e
    if path.suffix == ".toml":
        return parse_policy_toml(text, base_dir=path.parent, source=str(path))
    return parse_stratuslab_policy(text, source=str(path))
