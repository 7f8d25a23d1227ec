"""Signing: the endorsement fill rules, old signatures stripped, the signature's shape."""

from __future__ import annotations

import datetime as dt

import pytest
from lxml import etree

from imagekit.entry import format_date, parse_entry_bytes
from imagekit.entry.xmlsafe import parse_xml
from imagekit.errors import InputError, InvalidMetadata
from imagekit.signing import _xmldsig as X
from imagekit.signing.sign import fill_endorsement, sign_entry, strip_signatures
from imagekit.signing.trust import TrustStore
from imagekit.signing.verify import verify_entry
from tests.plugins.signing import make_cert, signer_from

NOW = dt.datetime.now(dt.UTC).replace(microsecond=890)  # the fraction must not be written
STAMP = format_date(NOW)
ENDORSEMENT = f"{{{X.SLREQ_NS}}}endorsement"
ENDORSER = f".//{{{X.SLREQ_NS}}}endorser"


def ds(name: str) -> str:
    return f"{{{X.DS_NS}}}{name}"


@pytest.fixture
def draft(asset) -> bytes:
    return asset("stratuslab/valid-minimal-empty-endorsement.xml").read_bytes()


def endorser_fields(root: etree._Element) -> dict[str, str]:
    endorser = root.find(ENDORSER)
    return {etree.QName(c).localname: c.text for c in endorser}


def test_sign_fills_endorsement_from_certificate(draft, signer):
    signed = sign_entry(draft, signer, now=NOW)
    entry = parse_entry_bytes(signed)
    assert entry.endorsement.created == NOW.replace(microsecond=0)
    assert f"<dcterms:created>{STAMP}</dcterms:created>".encode() in signed
    endorser = entry.endorsement.endorser
    assert endorser.email == "endorser@example.org"
    assert endorser.subject == "CN=Test Endorser"
    assert endorser.issuer == "CN=Test Endorser"


def test_signature_shape(draft, signer):
    root = parse_xml(sign_entry(draft, signer, now=NOW))
    sig = root[-1]
    assert sig.tag == X.SIGNATURE and len(list(root.iter(X.SIGNATURE))) == 1
    signed_info = sig.find(ds("SignedInfo"))
    assert signed_info.find(ds("CanonicalizationMethod")).get("Algorithm") == X.C14N_WITH_COMMENTS
    assert signed_info.find(ds("SignatureMethod")).get("Algorithm") == X.RSA_SHA256
    (ref,) = signed_info.findall(ds("Reference"))
    assert ref.get("URI") == ""
    assert [t.get("Algorithm") for t in ref.find(ds("Transforms"))] == [X.ENVELOPED]
    assert ref.find(ds("DigestMethod")).get("Algorithm") == X.SHA256
    certs = sig.findall(f"{ds('KeyInfo')}/{ds('X509Data')}/{ds('X509Certificate')}")
    assert len(certs) == 1
    assert X.b64decode(certs[0].text) == X.chain_der([signer.certificate])[0]


def test_chain_follows_leaf_in_keyinfo(draft):
    root_ca = make_cert("Root CA", ca=True)
    key, leaf = make_cert("Leaf", issuer=root_ca, email="leaf@example.org")
    root = parse_xml(sign_entry(draft, signer_from(key, leaf, root_ca[1]), now=NOW))
    certs = [X.b64decode(c.text) for c in root.iter(ds("X509Certificate"))]
    assert certs == X.chain_der([leaf, root_ca[1]])


def test_resign_strips_every_old_signature(asset, signer, trust_store):
    data = asset("stratuslab/partial-multiple-signatures.xml").read_bytes()
    assert data.count(b"<Signature ") > 1
    signed = sign_entry(data, signer, now=NOW)
    assert signed.count(b"<Signature ") == 1
    verify_entry(signed, trust_store, now=NOW, allow_expired=True)


def test_resign_replaces_previous_endorsement(draft, signer, make_signer):
    first = sign_entry(draft, signer, now=NOW)
    other = make_signer(email="second@example.org", name="Second")
    later = NOW + dt.timedelta(hours=1)
    second = sign_entry(first, other, now=later)
    entry = parse_entry_bytes(second)
    assert entry.endorser_email == "second@example.org"
    assert entry.endorsement.created == later.replace(microsecond=0)
    verify_entry(second, TrustStore.from_paths([other.cert_path]), now=later)


def test_multiple_endorsements_become_one(asset, signer):
    root = parse_xml(asset("stratuslab/partial-multiple-endorsements.xml").read_bytes())
    description = root.find(X.RDF_DESCRIPTION)
    assert len(description.findall(ENDORSEMENT)) == 5
    assert fill_endorsement(description, signer, now=NOW)
    (endorsement,) = description.findall(ENDORSEMENT)
    assert endorser_fields(root)["email"] == "endorser@example.org"
    assert endorsement.find(f"{{{X.DCTERMS_NS}}}created").text == STAMP


def test_empty_endorsement_is_filled(asset, signer):
    root = parse_xml(asset("stratuslab/autogen-endorsement-done.xml").read_bytes())
    assert fill_endorsement(root.find(X.RDF_DESCRIPTION), signer, now=NOW)
    assert endorser_fields(root) == {
        "email": "endorser@example.org",
        "subject": "CN=Test Endorser",
        "issuer": "CN=Test Endorser",
    }


def test_non_empty_endorsement_left_as_is(asset, signer):
    data = asset("stratuslab/autogen-endorsement-not-done.xml").read_bytes()
    root = parse_xml(data)
    before = etree.tostring(root)
    assert not fill_endorsement(root.find(X.RDF_DESCRIPTION), signer, now=NOW)
    assert etree.tostring(root) == before
    assert root.find(".//{http://example.org/}marker") is not None


def test_missing_endorsement_is_created_after_checksums(asset, signer):
    data = asset("stratuslab/valid-minimal-empty-endorsement.xml").read_bytes()
    data = data.replace(b'<slreq:endorsement rdf:parseType="Resource"/>', b"")
    signed = sign_entry(data, signer, now=NOW)
    names = [etree.QName(c).localname for c in parse_xml(signed).find(X.RDF_DESCRIPTION)]
    assert names[:4] == ["identifier", "bytes", "checksum", "endorsement"]


def test_certificate_without_email_needs_one(draft):
    key, cert = make_cert("No Mail")
    signer = signer_from(key, cert)
    with pytest.raises(InputError, match="no e-mail"):
        sign_entry(draft, signer, now=NOW)
    signed = sign_entry(draft, signer, now=NOW, email="given@example.org")
    assert parse_entry_bytes(signed).endorser_email == "given@example.org"


def test_email_must_be_the_certificates(draft, signer):
    with pytest.raises(InputError, match=r"not someone@example\.org"):
        sign_entry(draft, signer, now=NOW, email="someone@example.org")
    signed = sign_entry(draft, signer, now=NOW, email="endorser@EXAMPLE.ORG")
    assert parse_entry_bytes(signed).endorser_email == "endorser@example.org"


def test_invalid_entry_is_not_signed(asset, signer):
    with pytest.raises(InvalidMetadata):
        sign_entry(asset("stratuslab/invalid-bad-icmp-value.xml").read_bytes(), signer, now=NOW)


def test_strip_signatures_counts(asset):
    root = parse_xml(asset("stratuslab/partial-multiple-signatures.xml").read_bytes())
    assert strip_signatures(root) > 1
    assert root.find(X.SIGNATURE) is None


def test_naive_time_refused(draft, signer):
    with pytest.raises(ValueError):
        sign_entry(draft, signer, now=NOW.replace(tzinfo=None))
