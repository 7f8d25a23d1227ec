"""Resolving references: every candidate verified locally, policy, rollback memory.

The honest paths use a real marketplace server on loopback; a lying server (substituted
entries, tampered bytes, rolled-back endorsements) is a client that serves what we give it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imagekit.entry import Checksum, entry_to_bytes
from imagekit.errors import (
    Deprecated,
    DigestConflict,
    Expired,
    FutureDated,
    InputError,
    NotFound,
    PolicyRefused,
    Rollback,
    SignatureInvalid,
    Untrusted,
)
from imagekit.market.client import MarketplaceClient
from imagekit.market.resolve import Reference, Resolver
from imagekit.policy.rules import AllOf, Listed, ListKind, Policy, TrustedCertFor, default_policy
from imagekit.signing.trust import TrustStore

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


@pytest.fixture
def endorsers(make_signer):
    past = datetime.now(UTC) - timedelta(days=2)
    a = make_signer(email=f"a{os.getpid()}-{os.urandom(3).hex()}@example.org", now=past)
    b = make_signer(email=f"b{os.getpid()}-{os.urandom(3).hex()}@example.org", now=past)
    return a, b


@pytest.fixture
def trust(endorsers) -> TrustStore:
    return TrustStore.from_paths([e.cert_path for e in endorsers])


def signed(sign_xml, image_entry, data: bytes, signer, *, at: datetime, **fields) -> bytes:
    return sign_xml(entry_to_bytes(image_entry(data, **fields)), now=at, signer=signer)


@dataclasses.dataclass
class Summary:
    identifier: str
    path: str


class LyingClient:
    """Serves fixed XML whatever is asked: a compromised or stale marketplace."""

    def __init__(self, *xmls: bytes, identifier: str = "") -> None:
        self.xmls = list(xmls)
        self.identifier = identifier

    def current(self, prefix: str) -> list[Summary]:
        return [Summary(self.identifier, str(i)) for i in range(len(self.xmls))]

    def get_path(self, path: str) -> bytes:
        return self.xmls[int(path)]

    def current_entries(self, identifier: str) -> list[bytes]:
        return list(self.xmls)

    def by_tag(self, email: str, tag: str) -> bytes:
        return self.xmls[0]


def test_reference_parsing():
    full = "BtSKdXa2SvHlSVTvgFgivIYDq--"
    assert Reference.parse(full).identifier == full
    ref = Reference.parse("Jane@Example.org:debian-base")
    assert (ref.endorser, ref.tag) == ("jane@example.org", "debian-base")
    for bad in ("", "not an id!", "x" * 28, "a@b.c:"):
        with pytest.raises(InputError):
            Reference.parse(bad)


def test_resolve_by_id_prefix_and_tag_from_real_server(
    marketplace, endorsers, trust, sign_xml, image_entry, tmp_path: Path
):
    a, _ = endorsers
    data = os.urandom(256)
    xml = signed(sign_xml, image_entry, data, a, at=BASE, alternative="web")
    with MarketplaceClient(marketplace.url) as client:
        client.upload(xml)
        resolver = Resolver(client, trust, default_policy(), state_dir=tmp_path)
        ident = resolver.resolve(image_entry(data).identifier).entry.identifier
        assert ident == image_entry(data).identifier
        assert resolver.resolve(ident[:12]).entry.identifier == ident
        by_tag = resolver.resolve(f"{a.email}:web")
        assert by_tag.entry.identifier == ident
        assert by_tag.xml == xml
        with pytest.raises(NotFound):
            resolver.resolve(f"{a.email}:no-such-tag")


def test_newest_acceptable_endorsement_wins_and_policy_filters(
    marketplace, endorsers, trust, sign_xml, image_entry, tmp_path: Path
):
    a, b = endorsers
    data = os.urandom(300)
    with MarketplaceClient(marketplace.url) as client:
        client.upload(signed(sign_xml, image_entry, data, a, at=BASE))
        client.upload(signed(sign_xml, image_entry, data, b, at=BASE + timedelta(minutes=5)))
        ident = image_entry(data).identifier
        resolver = Resolver(client, trust, default_policy(), state_dir=tmp_path / "1")
        assert resolver.resolve(ident).entry.endorser_email == b.email
        no_b = Policy(
            AllOf(
                Listed.of(ListKind.ENDORSERS, [b.email], allow=False), *default_policy().rule.rules
            )
        )
        resolver = Resolver(client, trust, no_b, state_dir=tmp_path / "2")
        assert resolver.resolve(ident).entry.endorser_email == a.email
        only_b_denied_a = Policy(
            AllOf(Listed.of(ListKind.ENDORSERS, [a.email, b.email], allow=False))
        )
        resolver = Resolver(client, trust, only_b_denied_a, state_dir=tmp_path / "3")
        with pytest.raises(PolicyRefused, match="denied"):
            resolver.resolve(ident)


def test_untrusted_signer_refused(marketplace, endorsers, sign_xml, image_entry, tmp_path):
    a, b = endorsers
    data = os.urandom(200)
    with MarketplaceClient(marketplace.url) as client:
        client.upload(signed(sign_xml, image_entry, data, a, at=BASE))
        only_b = TrustStore.from_paths([b.cert_path])
        resolver = Resolver(client, only_b, default_policy(), state_dir=tmp_path)
        with pytest.raises(Untrusted):
            resolver.resolve(image_entry(data).identifier)


def test_tampered_entry_from_server_refused(endorsers, trust, sign_xml, image_entry, tmp_path):
    a, _ = endorsers
    data = os.urandom(100)
    xml = signed(sign_xml, image_entry, data, a, at=BASE, title="Original")
    entry = image_entry(data, title="Original")
    tampered = xml.replace(b"Original", b"Tampered")
    assert tampered != xml
    resolver = Resolver(
        LyingClient(tampered, identifier=entry.identifier),
        trust,
        default_policy(),
        state_dir=tmp_path,
    )
    with pytest.raises(SignatureInvalid):
        resolver.resolve(entry.identifier)


def test_server_substituting_another_entry_refused(
    endorsers, trust, sign_xml, image_entry, tmp_path
):
    a, _ = endorsers
    other = signed(sign_xml, image_entry, b"other image", a, at=BASE)
    wanted = image_entry(b"wanted image").identifier
    resolver = Resolver(
        LyingClient(other, identifier=wanted), trust, default_policy(), state_dir=tmp_path
    )
    with pytest.raises(SignatureInvalid, match="different entry"):
        resolver.resolve(wanted)
    with pytest.raises(SignatureInvalid, match="different entry"):
        resolver.resolve(f"{a.email}:some-tag")


def test_expired_and_deprecated_refused_with_reason(
    endorsers, trust, sign_xml, image_entry, tmp_path
):
    a, _ = endorsers
    data = os.urandom(50)
    ident = image_entry(data).identifier
    expired = signed(sign_xml, image_entry, data, a, at=BASE, valid=BASE + timedelta(minutes=1))
    with pytest.raises(Expired):
        Resolver(
            LyingClient(expired, identifier=ident),
            trust,
            default_policy(),
            state_dir=tmp_path / "e",
        ).resolve(ident)
    deprecated = signed(sign_xml, image_entry, data, a, at=BASE, deprecated="CVE-2026-0001")
    with pytest.raises(Deprecated, match="CVE-2026-0001"):
        Resolver(
            LyingClient(deprecated, identifier=ident),
            trust,
            default_policy(),
            state_dir=tmp_path / "d",
        ).resolve(ident)


def test_rollback_to_older_created_refused(endorsers, trust, sign_xml, image_entry, tmp_path):
    """A server hides a deprecation by serving the older, non-deprecated endorsement."""
    a, _ = endorsers
    data = os.urandom(64)
    ident = image_entry(data).identifier
    old = signed(sign_xml, image_entry, data, a, at=BASE)
    new = signed(
        sign_xml, image_entry, data, a, at=BASE + timedelta(minutes=10), deprecated="superseded"
    )
    state = tmp_path / "state"
    assert Resolver(
        LyingClient(old, identifier=ident), trust, default_policy(), state_dir=state
    ).resolve(ident)
    with pytest.raises(Deprecated):
        Resolver(
            LyingClient(new, identifier=ident), trust, default_policy(), state_dir=state
        ).resolve(ident)
    with pytest.raises(Rollback, match="older than"):
        Resolver(
            LyingClient(old, identifier=ident), trust, default_policy(), state_dir=state
        ).resolve(ident)
    # the memory is persisted: a fresh state directory knows nothing
    assert (state / "rollback.json").is_file()
    assert Resolver(
        LyingClient(old, identifier=ident), trust, default_policy(), state_dir=tmp_path / "fresh"
    ).resolve(ident)


def test_rollback_of_a_tag_to_an_older_image_refused(
    endorsers, trust, sign_xml, image_entry, tmp_path
):
    a, _ = endorsers
    v1 = signed(sign_xml, image_entry, b"v1", a, at=BASE, alternative="base")
    v2 = signed(sign_xml, image_entry, b"v2", a, at=BASE + timedelta(minutes=1), alternative="base")
    ref = f"{a.email}:base"
    assert Resolver(LyingClient(v2), trust, default_policy(), state_dir=tmp_path).resolve(ref)
    with pytest.raises(Rollback):
        Resolver(LyingClient(v1), trust, default_policy(), state_dir=tmp_path).resolve(ref)


# --- one ID, one set of bytes --------------------------------------------------------------


def _other_bytes_under(image_entry, data: bytes, other: bytes, **fields):
    """An entry under ``data``'s ID (its SHA-1, as the model demands) describing ``other``:
    its own size, SHA-256 and location."""
    genuine = image_entry(data, algorithms=("SHA-1", "SHA-256"), **fields)
    return dataclasses.replace(
        genuine,
        bytes=len(other),
        checksums=(
            genuine.checksum("SHA-1"),
            Checksum("SHA-256", hashlib.sha256(other).hexdigest()),
        ),
        locations=("http://192.0.2.1/other.img",),
    )


def test_second_endorser_with_other_bytes_under_the_same_id_refused(
    endorsers, trust, sign_xml, image_entry, tmp_path
):
    """B publishes under A's ID with its own SHA-256 and location, dated later: launching
    the ID must not boot B's bytes on the strength of B's newer endorsement."""
    a, b = endorsers
    data = os.urandom(64)
    ident = image_entry(data).identifier
    genuine = sign_xml(
        entry_to_bytes(image_entry(data, algorithms=("SHA-1", "SHA-256"))), now=BASE, signer=a
    )
    forged = sign_xml(
        entry_to_bytes(_other_bytes_under(image_entry, data, os.urandom(64))),
        now=BASE + timedelta(minutes=5),
        signer=b,
    )
    client = LyingClient(genuine, forged, identifier=ident)
    resolver = Resolver(client, trust, default_policy(), state_dir=tmp_path)
    with pytest.raises(DigestConflict) as e:
        resolver.resolve(ident)
    assert a.email in str(e.value) and b.email in str(e.value) and "SHA-256" in str(e.value)
    assert e.value.hint == "name the endorser you trust: --endorser EMAIL"
    # naming the endorser settles it, either way
    assert resolver.resolve(ident, endorser=a.email).entry.endorser_email == a.email
    assert resolver.resolve(ident, endorser=b.email.upper()).entry.endorser_email == b.email


def test_endorsers_agreeing_on_the_bytes_are_no_conflict(
    endorsers, trust, sign_xml, image_entry, tmp_path
):
    a, b = endorsers
    data = os.urandom(64)
    entry = image_entry(data)
    one = sign_xml(entry_to_bytes(entry), now=BASE, signer=a)
    two = sign_xml(
        entry_to_bytes(image_entry(data, algorithms=("SHA-1", "SHA-512"))),
        now=BASE + timedelta(minutes=1),
        signer=b,
    )
    resolver = Resolver(
        LyingClient(one, two, identifier=entry.identifier),
        trust,
        default_policy(),
        state_dir=tmp_path,
    )
    assert resolver.resolve(entry.identifier).entry.endorser_email == b.email


def test_policy_refused_entry_does_not_poison_rollback_memory(
    endorsers, make_signer, trust, sign_xml, image_entry, tmp_path
):
    """A trusted certificate claiming A's e-mail, but not the one the policy pins for A,
    publishes a later entry: refused by the policy, it must not lock A's genuine entries out."""
    a, b = endorsers
    impostor = make_signer(
        email=a.email, name="Impostor", now=datetime.now(UTC) - timedelta(days=2)
    )
    trusting = TrustStore.from_paths([a.cert_path, b.cert_path, impostor.cert_path])
    policy = Policy(
        AllOf(TrustedCertFor(a.email, [a.cert_path.read_bytes()]), *default_policy().rule.rules)
    )
    data = os.urandom(64)
    ident = image_entry(data).identifier
    bad = signed(sign_xml, image_entry, data, impostor, at=BASE + timedelta(minutes=30))
    good = signed(sign_xml, image_entry, data, a, at=BASE)
    with pytest.raises(PolicyRefused):
        Resolver(LyingClient(bad, identifier=ident), trusting, policy, state_dir=tmp_path).resolve(
            ident
        )
    verified = Resolver(
        LyingClient(good, identifier=ident), trusting, policy, state_dir=tmp_path
    ).resolve(ident)
    assert verified.certificate == a.certificate


def test_future_dated_entry_does_not_poison_rollback_memory(
    endorsers, trust, sign_xml, image_entry, tmp_path
):
    """One entry dated 30 days ahead would make every genuine entry a Rollback."""
    a, _ = endorsers
    data = os.urandom(64)
    ident = image_entry(data).identifier
    ahead = signed(sign_xml, image_entry, data, a, at=datetime.now(UTC) + timedelta(days=30))
    with pytest.raises(FutureDated):
        Resolver(
            LyingClient(ahead, identifier=ident), trust, default_policy(), state_dir=tmp_path
        ).resolve(ident)
    good = signed(sign_xml, image_entry, data, a, at=BASE)
    assert Resolver(
        LyingClient(good, identifier=ident), trust, default_policy(), state_dir=tmp_path
    ).resolve(ident)
    assert BASE.isoformat() in (tmp_path / "rollback.json").read_text()  # only the genuine one
