"""From what the user typed to one verified, acceptable entry.

A reference is a Marketplace ID, a unique ID prefix, or ``endorser:tag``; an ID may be
narrowed to one endorser's entries (``Reference.parse(text, endorser=...)``, ``launch
--endorser``). The marketplace is asked for the candidates (each endorser's current
endorsement of the ID, or the endorser's newest entry with the tag), and every candidate is
then verified HERE, against the configured trust store (the server is not trusted),
checked against the rollback memory and the site policy. The newest acceptable endorsement
wins, unless acceptable entries of the ID disagree on a digest stronger than SHA-1: the ID
names the bytes by their SHA-1, so two endorsers listing different SHA-256 values for one
ID describe different bytes (a SHA-1 collision, or one of them lying), and the resolver
refuses with ``DigestConflict``, naming the endorsers, until the user names one.

Rollback memory: the newest endorsement ``created`` seen per (ID, endorser), and per
(endorser, tag), persisted atomically under ``state_dir``. A server that later serves an
older endorsement (hiding a deprecation, say) is refused with ``Rollback``. Only entries
that passed the signature, trust and the policy are remembered, so a refused entry cannot
lock out genuine ones; the policy's rules on expiry and deprecation do not count here (an
endorser's signed deprecation is exactly what must be remembered), the others do. Dates
beyond the verifier's clock skew never get this far (``FutureDated``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._files import atomic_write, locked
from ..entry import format_date
from ..errors import (
    Ambiguous,
    Deprecated,
    DigestConflict,
    Expired,
    ImagekitError,
    InputError,
    NotFound,
    PolicyRefused,
    Rollback,
    SignatureInvalid,
    VerificationError,
)
from ..image.digests import DigestAlgorithm
from ..image.identifier import is_identifier
from ..policy.rules import Policy
from ..signing.trust import TrustStore
from ..signing.verify import VerifiedEntry, verify_entry


@dataclasses.dataclass(frozen=True)
class Reference:
    """A parsed image reference: an ID (or prefix), optionally by one endorser, or an
    endorser's tag."""

    identifier: str | None = None
    endorser: str | None = None
    tag: str | None = None

    @classmethod
    def parse(cls, text: str, *, endorser: str | None = None) -> Reference:
        """``ID``, ``ID-prefix`` or ``endorser@example.org:tag``; ``endorser`` narrows an ID
        to that endorser's entries. Raises InputError."""
        text = text.strip()
        if ":" in text and "@" in text.split(":", 1)[0]:
            email, tag = text.split(":", 1)
            if not tag:
                raise InputError(f"{text!r}: empty tag (use endorser@example.org:tag)")
            if endorser is not None and endorser.strip().lower() != email.lower():
                raise InputError(f"{text!r} is a tag of {email}, not of {endorser}")
            return cls(endorser=email.lower(), tag=tag)
        if not text or len(text) > 27 or not all(c.isalnum() or c in "-_" for c in text):
            raise InputError(f"{text!r} is neither a Marketplace ID (or prefix) nor endorser:tag")
        if endorser is not None and "@" not in endorser:
            raise InputError(f"endorser {endorser!r} is not an e-mail address")
        return cls(identifier=text, endorser=endorser.strip().lower() if endorser else None)

    def __str__(self) -> str:
        if self.identifier is not None:
            return self.identifier + (f" by {self.endorser}" if self.endorser else "")
        return f"{self.endorser}:{self.tag}"

    def matches(self, entry: Any) -> bool:
        """Whether a verified entry is what was asked for (the server may substitute)."""
        if self.identifier is not None:
            return bool(entry.identifier.startswith(self.identifier))
        return (entry.endorser_email or "").lower() == self.endorser and entry.tag == self.tag

    def names_endorser_of(self, entry: Any) -> bool:
        """Whether ``entry`` is by the endorser this reference names (or names none)."""
        return self.endorser is None or (entry.endorser_email or "").lower() == self.endorser


@dataclasses.dataclass(frozen=True)
class Candidate:
    xml: bytes
    verified: VerifiedEntry | None = None
    error: ImagekitError | None = None

    @property
    def accepted(self) -> bool:
        return self.verified is not None and self.error is None


# --- rollback memory --------------------------------------------------------------------


class RollbackMemory:
    """Newest endorsement ``created`` seen per key, in ``state_dir/rollback.json``."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "rollback.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, str]]:
        with locked(self.path.with_suffix(".lock")):
            data: dict[str, str] = {}
            with contextlib.suppress(FileNotFoundError):
                data = json.loads(self.path.read_text())
            before = dict(data)
            yield data
            if data != before:
                atomic_write(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")

    @staticmethod
    def keys(entry: Any) -> list[str]:
        email = (entry.endorser_email or "").lower()
        keys = [f"id|{entry.identifier}|{email}"]
        if entry.tag:
            keys.append(f"tag|{email}|{entry.tag}")
        return keys

    @staticmethod
    def _created(entry: Any) -> datetime:
        created: datetime | None = entry.endorsement_created
        if created is None:
            raise SignatureInvalid(f"entry {entry.identifier} has no endorsement date")
        return created

    def check(self, entry: Any) -> None:
        """Raise Rollback if an endorsement newer than ``entry``'s was seen before for
        the same (ID, endorser) or (endorser, tag). Remembers nothing (``record`` does)."""
        created = self._created(entry)
        with self._locked() as data:
            for key in self.keys(entry):
                seen = data.get(key)
                if seen and datetime.fromisoformat(seen) > created:
                    what = key.split("|", 1)[1].replace("|", " by ", 1)
                    raise Rollback(
                        f"{what}: the marketplace offers an endorsement of "
                        f"{format_date(created)}, older than {seen} already seen"
                    )

    def record(self, entry: Any) -> None:
        """Remember ``entry``'s endorsement date (for an entry that passed every check)."""
        created = self._created(entry)
        with self._locked() as data:
            for key in self.keys(entry):
                seen = data.get(key)
                if not seen or datetime.fromisoformat(seen) < created:
                    data[key] = created.isoformat()


# --- the resolver -----------------------------------------------------------------------


class Resolver:
    """Resolve references with ``client`` (a ``MarketplaceClient``), ``trust`` and ``policy``."""

    def __init__(
        self,
        client: Any,
        trust: TrustStore,
        policy: Policy,
        *,
        state_dir: Path,
        now: datetime | None = None,
    ) -> None:
        self.client = client
        self.trust = trust
        self.policy = policy
        self.memory = RollbackMemory(state_dir)
        self.now = now

    def fetch_candidates(self, ref: Reference) -> list[bytes]:
        """The signed XML the marketplace offers for ``ref`` (unverified).

        Raises NotFound, Ambiguous, NetworkError.
        """
        if ref.identifier is not None:
            if len(ref.identifier) < 27 or not is_identifier(ref.identifier):
                summaries = self.client.current(ref.identifier)
                ids = {s.identifier for s in summaries}
                if len(ids) > 1:
                    raise Ambiguous(f"{ref} matches several images: {', '.join(sorted(ids))}")
                return [self.client.get_path(s.path) for s in summaries]
            return list(self.client.current_entries(ref.identifier))
        assert ref.endorser is not None and ref.tag is not None
        return [self.client.by_tag(ref.endorser, ref.tag)]

    def assess(self, ref: Reference | None, xmls: Sequence[bytes]) -> list[Candidate]:
        """Verify, match, rollback-check and policy-check each candidate (new list); the
        rollback memory records those that pass (see the module docstring). ``ref`` None:
        entries the user handed over (a file), nothing to match."""
        now = self.now or datetime.now(UTC)
        out: list[Candidate] = []
        for xml in tuple(xmls):
            try:
                verified = verify_entry(
                    xml,
                    self.trust,
                    now=now,
                    allow_sha1=self.policy.allow_sha1_signatures,
                    # expiry is the policy's call (NotExpired), so it is reported as such
                    allow_expired=True,
                )
            except ImagekitError as e:
                out.append(Candidate(xml, None, e))
                continue
            try:
                if ref is not None and not ref.matches(verified.entry):
                    raise SignatureInvalid(
                        f"the marketplace answered {ref} with a different entry "
                        f"({verified.entry.identifier} by {verified.entry.endorser_email})"
                    )
                if ref is not None and not ref.names_endorser_of(verified.entry):
                    raise PolicyRefused(
                        f"endorsed by {verified.entry.endorser_email}, not {ref.endorser}"
                    )
                self.memory.check(verified.entry)
                self._check_policy(verified, now)
            except VerificationError as e:
                out.append(Candidate(xml, verified, e))
                continue
            out.append(Candidate(xml, verified, None))
        return out

    def _check_policy(self, verified: VerifiedEntry, now: datetime) -> None:
        """The policy; the rollback memory records the entry if the policy accepts it, or
        refuses it only for its age (expired, deprecated)."""
        try:
            self.policy.check(verified, now=now)
        except (Expired, Deprecated):
            if self.policy.is_allowed(verified, now=now, lifecycle=False):
                self.memory.record(verified.entry)
            raise
        self.memory.record(verified.entry)

    def candidates(self, text: str | Reference) -> list[Candidate]:
        ref = text if isinstance(text, Reference) else Reference.parse(text)
        xmls = self.fetch_candidates(ref)
        if not xmls:
            raise NotFound(f"the marketplace has no entry for {ref}")
        return self.assess(ref, xmls)

    def resolve(self, text: str | Reference, *, endorser: str | None = None) -> VerifiedEntry:
        """The newest acceptable verified entry for ``text`` (by ``endorser``, if given).

        Raises DigestConflict (endorsers of the ID disagree on its bytes), the refusal of
        the newest candidate when none is acceptable (SignatureInvalid, Untrusted, Expired,
        Deprecated, PolicyRefused, Rollback, ...), NotFound, Ambiguous, NetworkError.
        """
        ref = text if isinstance(text, Reference) else Reference.parse(text, endorser=endorser)
        cands = self.candidates(ref)
        return pick(ref, cands)

    def resolve_entry_bytes(self, xml: bytes, *, source: str) -> VerifiedEntry:
        """A signed entry the user holds (``launch --entry FILE``), through the same checks
        as a marketplace candidate: signature, trust, rollback memory, policy.

        Raises what ``resolve`` raises for a refused candidate.
        """
        return pick(source, self.assess(None, [xml]))


def _created(c: Candidate) -> datetime:
    if c.verified is not None and c.verified.entry.endorsement_created is not None:
        created: datetime = c.verified.entry.endorsement_created
        return created
    return datetime.min.replace(tzinfo=UTC)


def _strong_digests(entry: Any) -> dict[DigestAlgorithm, int]:
    return {
        c.algorithm: int(c.value, 16)
        for c in entry.checksums
        if c.algorithm.strength > DigestAlgorithm.SHA1.strength
    }


def check_agreement(ref: Reference | str, verified: Sequence[VerifiedEntry]) -> None:
    """Raise DigestConflict if entries of one ID disagree on its size or on a digest
    stronger than SHA-1 (they then describe different bytes under one ID)."""
    by_id: dict[str, list[VerifiedEntry]] = {}
    for v in verified:
        by_id.setdefault(v.entry.identifier, []).append(v)
    for identifier, group in by_id.items():
        first = group[0].entry
        for other in group[1:]:
            entry = other.entry
            theirs, ours = _strong_digests(entry), _strong_digests(first)
            differ = [str(a) for a in ours.keys() & theirs.keys() if ours[a] != theirs[a]]
            if entry.bytes != first.bytes:
                differ.insert(0, "size")
            if differ:
                names = sorted({(v.entry.endorser_email or "?") for v in group})
                raise DigestConflict(
                    f"{identifier}: its endorsers {', '.join(names)} describe different bytes "
                    f"({', '.join(differ)} differ)",
                    hint="name the endorser you trust: --endorser EMAIL",
                )


def pick(ref: Reference | str, cands: Sequence[Candidate]) -> VerifiedEntry:
    """The newest accepted candidate. Raises DigestConflict (accepted entries of one ID
    disagree on its bytes), else the refusal of the newest candidate when none is accepted
    (others' reasons appended), NotFound when there is none."""
    accepted = [c for c in cands if c.accepted]
    if accepted:
        check_agreement(ref, [c.verified for c in accepted if c.verified is not None])
        best = max(accepted, key=_created)
        assert best.verified is not None
        return best.verified
    refused = sorted(cands, key=_created, reverse=True)
    if not refused:
        raise NotFound(f"the marketplace has no entry for {ref}")
    first = refused[0].error
    assert first is not None
    if len(refused) > 1:
        others = "; ".join(str(c.error) for c in refused[1:])
        first.args = (f"{first} (other candidates refused too: {others})",)
    raise first
