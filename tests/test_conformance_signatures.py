"""The genuinely signed StratusLab entries: they verify (SHA-1 opted in, as of a time inside
their certificates' validity) and any change to the signed content breaks them."""

from __future__ import annotations

import base64
import datetime as dt
import re

import pytest

from imagekit.errors import (
    CertificateExpired,
    CertificateRevoked,
    Expired,
    SignatureInvalid,
    SignatureMissing,
    Untrusted,
    WeakAlgorithm,
)
from imagekit.signing.trust import TrustStore, UnsafeAcceptAnyCertificate
from imagekit.signing.verify import verify_entry

UTC = dt.UTC
# A time inside each certificate's validity (and before the entry's dcterms:valid):
# Jane 2011-02-13..2012-02-13 (entry valid to 2011-07-23), Jim 2012-02-01..2013-01-31
# (entry valid to 2012-03-05), CERN 2010-10-25..2011-10-25 (entry valid to 2020).
AS_OF = {
    "valid-full-signature.xml": dt.datetime(2011, 6, 1, tzinfo=UTC),
    "valid-ca-signed.xml": dt.datetime(2012, 2, 15, tzinfo=UTC),
    "client-manifest-cern-signed.xml": dt.datetime(2011, 6, 1, tzinfo=UTC),
}
GENUINE = list(AS_OF)


# The CERN entry was signed (2012-09-13) after its certificate expired; it is checked as of
# a date inside the certificate's validity, while the real time is now (``present``).
PRESENT = dt.datetime.now(UTC)


def pinned_store(asset, name, tmp_path, *extra: str) -> TrustStore:
    """Trust the fixture's own certificate (pinned), and the test CA for the CA-signed one.

    Jim's certificate carries no e-mail address: the CA alone does not vouch for the one
    his entry claims, the pin does (and the CA's CRLs still apply to it)."""
    text = asset(f"stratuslab/{name}").read_text()
    match = re.search(r"<X509Certificate>(.*?)</X509Certificate>", text, re.S)
    assert match is not None
    b64 = match.group(1)
    der = base64.b64decode("".join(b64.split()))
    (tmp_path / "pinned.der").write_bytes(der)
    paths = [tmp_path / "pinned.der", *(asset(f"stratuslab/{e}") for e in extra)]
    if name == "valid-ca-signed.xml":
        paths.append(asset("stratuslab/test-ca.pem"))
    return TrustStore.from_paths(paths)


@pytest.mark.parametrize("name", GENUINE)
def test_genuine_signature_verifies(asset, tmp_path, name):
    data = asset(f"stratuslab/{name}").read_bytes()
    verified = verify_entry(
        data,
        pinned_store(asset, name, tmp_path),
        now=AS_OF[name],
        allow_sha1=True,
        present=PRESENT,
    )
    assert verified.xml == data
    endorser = verified.entry.endorsement.endorser
    assert endorser is not None
    assert endorser.subject == verified.certificate.subject.rfc4514_string()
    assert verified.signature_method.endswith("rsa-sha1")


@pytest.mark.parametrize("name", GENUINE)
def test_genuine_signature_needs_sha1_opt_in(asset, tmp_path, name):
    data = asset(f"stratuslab/{name}").read_bytes()
    with pytest.raises(WeakAlgorithm):
        verify_entry(data, pinned_store(asset, name, tmp_path), now=AS_OF[name])


@pytest.mark.parametrize("name", GENUINE)
def test_genuine_certificate_expired_today(asset, tmp_path, name):
    data = asset(f"stratuslab/{name}").read_bytes()
    with pytest.raises(CertificateExpired):
        verify_entry(
            data,
            pinned_store(asset, name, tmp_path),
            now=dt.datetime.now(UTC),
            allow_sha1=True,
            allow_expired=True,
        )


def _flip_hex(m: re.Match[bytes]) -> bytes:
    last = m.group(2)
    return m.group(1) + (b"0" if last != b"0" else b"1") + m.group(3)


# (id, mutation) pairs: each changes something covered by the signature.
MUTATIONS = {
    "text-value": lambda d: re.sub(
        rb"(<slreq:value>[0-9a-f]*)([0-9a-f])(</slreq:value>)", _flip_hex, d, count=1
    ),
    "attribute-value": lambda d: d.replace(
        b'xml:base="http://mp.stratuslab.eu/"', b'xml:base="http://mp.stratuslab.eu/x/"', 1
    ),
    "attribute-added": lambda d: d.replace(b"<slreq:bytes>", b'<slreq:bytes xml:lang="en">', 1),
    "namespace-declared": lambda d: d.replace(b"<rdf:RDF ", b'<rdf:RDF xmlns:evil="urn:evil" ', 1),
    "whitespace-between-elements": lambda d: d.replace(b"<slreq:bytes>", b" <slreq:bytes>", 1),
    "whitespace-inside-value": lambda d: d.replace(b"<slreq:bytes>", b"<slreq:bytes> ", 1),
    "element-added": lambda d: d.replace(
        b"</rdf:Description>", b'<ex:x xmlns:ex="urn:x">1</ex:x></rdf:Description>', 1
    ),
    "endorser-email": lambda d: re.sub(rb"(<(?:slreq:)?email>)\w", rb"\1z", d, count=1),
    "comment-in-signedinfo": lambda d: d.replace(b"<SignedInfo>", b"<SignedInfo><!-- x -->", 1),
    "digest-value": lambda d: re.sub(
        rb"<DigestValue>(.)", lambda m: b"<DigestValue>" + (b"A" if m.group(1) != b"A" else b"B"), d
    ),
    "signature-value": lambda d: re.sub(
        rb"<SignatureValue>(.)",
        lambda m: b"<SignatureValue>" + (b"A" if m.group(1) != b"A" else b"B"),
        d,
    ),
    "signature-method": lambda d: d.replace(
        b"http://www.w3.org/2000/09/xmldsig#rsa-sha1",
        b"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        1,
    ),
}


@pytest.mark.parametrize("name", GENUINE)
@pytest.mark.parametrize("spot", list(MUTATIONS))
def test_genuine_signature_breaks_on_change(asset, tmp_path, name, spot):
    data = asset(f"stratuslab/{name}").read_bytes()
    changed = MUTATIONS[spot](data)
    assert changed != data, "the mutation must change the document"
    with pytest.raises(SignatureInvalid):
        verify_entry(changed, pinned_store(asset, name, tmp_path), now=AS_OF[name], allow_sha1=True)


def test_comment_in_content_is_not_signed_and_not_read(asset, tmp_path):
    """URI="" digests the document without comments: a comment planted inside a value leaves
    the signature valid, and must not change what is read (no truncation of the text)."""
    name = "valid-full-signature.xml"
    data = asset(f"stratuslab/{name}").read_bytes()
    store = pinned_store(asset, name, tmp_path)
    original = verify_entry(data, store, now=AS_OF[name], allow_sha1=True).entry
    planted = data.replace(b"jane.tester@", b"jane<!-- cut -->.tester@", 1).replace(
        b"<dcterms:title>linux", b"<dcterms:title><!---->linux", 1
    )
    assert planted != data
    verified = verify_entry(planted, store, now=AS_OF[name], allow_sha1=True)
    assert verified.entry == original
    assert verified.entry.endorser_email == "jane.tester@example.org"
    assert verified.xml == planted  # the original bytes are what gets stored


def test_ca_signed_trusted_via_test_ca(asset):
    # the chain holds (signature, names, validity, CRLs) ...
    store = TrustStore.from_paths([asset("stratuslab/test-ca.pem")])
    data = asset("stratuslab/valid-ca-signed.xml").read_bytes()
    as_of = AS_OF["valid-ca-signed.xml"]
    jim = verify_entry(data, UnsafeAcceptAnyCertificate(), now=as_of, allow_sha1=True).certificate
    verified_chain = store.verify_certificate(jim, now=as_of, allow_sha1=True)
    assert verified_chain[1:] == store.anchors
    # ... but a CA that vouches for no address does not vouch for jim.tester@example.org
    with pytest.raises(Untrusted, match="carries no e-mail address"):
        verify_entry(data, store, now=AS_OF["valid-ca-signed.xml"], allow_sha1=True)


def test_ca_signed_pinned_and_revoked_by_its_ca(asset, tmp_path):
    store = pinned_store(asset, "valid-ca-signed.xml", tmp_path, "test-crl-revoked.pem")
    data = asset("stratuslab/valid-ca-signed.xml").read_bytes()
    with pytest.raises(CertificateRevoked):
        verify_entry(data, store, now=AS_OF["valid-ca-signed.xml"], allow_sha1=True)


def test_ca_signed_revoked(asset):
    store = TrustStore.from_paths(
        [asset("stratuslab/test-ca.pem"), asset("stratuslab/test-crl-revoked.pem")]
    )
    data = asset("stratuslab/valid-ca-signed.xml").read_bytes()
    with pytest.raises(CertificateRevoked):
        verify_entry(data, store, now=AS_OF["valid-ca-signed.xml"], allow_sha1=True)


def test_ca_signed_with_empty_crl(asset, tmp_path):
    store = pinned_store(asset, "valid-ca-signed.xml", tmp_path, "test-crl-empty.pem")
    data = asset("stratuslab/valid-ca-signed.xml").read_bytes()
    verify_entry(data, store, now=AS_OF["valid-ca-signed.xml"], allow_sha1=True)


def test_ca_signed_untrusted_without_ca(asset, tmp_path):
    data = asset("stratuslab/valid-ca-signed.xml").read_bytes()
    other = pinned_store(asset, "valid-full-signature.xml", tmp_path)
    with pytest.raises(Untrusted):
        verify_entry(data, other, now=AS_OF["valid-ca-signed.xml"], allow_sha1=True)


def test_partial_multiple_signatures_refused(asset, tmp_path):
    data = asset("stratuslab/partial-multiple-signatures.xml").read_bytes()
    store = pinned_store(asset, "valid-full-signature.xml", tmp_path)
    with pytest.raises(SignatureInvalid, match="Signature elements"):
        verify_entry(data, store, now=AS_OF["valid-full-signature.xml"], allow_sha1=True)


@pytest.mark.parametrize("name", ["valid-minimal-signature.xml", "valid-minimal.xml"])
def test_no_signature_to_verify(asset, tmp_path, name):
    data = asset(f"stratuslab/{name}").read_bytes()
    store = pinned_store(asset, "valid-full-signature.xml", tmp_path)
    with pytest.raises(SignatureMissing):
        verify_entry(data, store, now=AS_OF["valid-full-signature.xml"], allow_sha1=True)


def test_genuine_entry_expired(asset, tmp_path):
    name = "valid-full-signature.xml"  # dcterms:valid 2011-07-23, certificate to 2012-02-13
    data = asset(f"stratuslab/{name}").read_bytes()
    store = pinned_store(asset, name, tmp_path)
    later = dt.datetime(2011, 12, 1, tzinfo=UTC)
    with pytest.raises(Expired):
        verify_entry(data, store, now=later, allow_sha1=True)
    verify_entry(data, store, now=later, allow_sha1=True, allow_expired=True)
