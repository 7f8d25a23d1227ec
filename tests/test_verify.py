"""One test per attack on a signed entry; each asserts the exception class it must raise."""

from __future__ import annotations

import copy
import datetime as dt
import io
import logging
import shutil
import subprocess
import time

import pytest
import xmlsec
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from lxml import etree

from imagekit.entry import parse_entry_bytes
from imagekit.entry.xmlsafe import parse_xml
from imagekit.errors import (
    CertificateExpired,
    CertificateRevoked,
    ChecksumMismatch,
    EndorserMismatch,
    Expired,
    FutureDated,
    SignatureInvalid,
    SignatureMissing,
    SizeMismatch,
    UnsafeXML,
    Untrusted,
    WeakAlgorithm,
)
from imagekit.image.digests import DigestAlgorithm, compute_digests
from imagekit.signing import _xmldsig as X
from imagekit.signing.keys import load_signer
from imagekit.signing.sign import append_signature, fill_endorsement, sign_entry
from imagekit.signing.trust import TrustStore
from imagekit.signing.verify import MAX_CLOCK_SKEW, check_image_digests, verify_entry
from tests.plugins.signing import make_cert, make_crl, pem, signer_from

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DS = X.DS_NS


@pytest.fixture
def draft(asset) -> bytes:
    return asset("stratuslab/valid-minimal-empty-endorsement.xml").read_bytes()


@pytest.fixture
def signed(draft, sign_xml) -> bytes:
    return sign_xml(draft, now=NOW)


def tree(data: bytes) -> etree._Element:
    return parse_xml(data)


def dump(root: etree._Element) -> bytes:
    return etree.tostring(root.getroottree(), encoding="UTF-8", xml_declaration=True)


def signature_of(root: etree._Element) -> etree._Element:
    return root.find(X.SIGNATURE)


def sign_custom(draft: bytes, signer, *, uri: str = "", xpath: str | None = None) -> bytes:
    """A signature libxmlsec1 itself accepts, but outside imagekit's profile."""
    root = tree(draft)
    fill_endorsement(root.find(X.RDF_DESCRIPTION), signer, now=NOW)
    if uri.startswith("#"):
        description = root.find(X.RDF_DESCRIPTION)
        description.set("Id", uri[1:])
    method = (
        xmlsec.constants.TransformRsaSha256
        if signer.key_type == "rsa"
        else xmlsec.constants.TransformEcdsaSha256
    )
    sig = xmlsec.template.create(root, xmlsec.constants.TransformInclC14NWithComments, method)
    root.append(sig)
    ref = xmlsec.template.add_reference(sig, xmlsec.constants.TransformSha256, uri=uri)
    xmlsec.template.add_transform(ref, xmlsec.constants.TransformEnveloped)
    if xpath is not None:
        node = xmlsec.template.add_transform(ref, xmlsec.constants.TransformXPath)
        etree.SubElement(node, f"{{{DS}}}XPath").text = xpath
    key_info = xmlsec.template.ensure_key_info(sig)
    x509_data = xmlsec.template.add_x509_data(key_info)
    xmlsec.template.x509_data_add_certificate(x509_data)
    ctx = xmlsec.SignatureContext()
    if uri.startswith("#"):
        ctx.register_id(root.find(X.RDF_DESCRIPTION), "Id")
    key = xmlsec.Key.from_memory(signer.key_pem(), xmlsec.constants.KeyDataFormatPem)
    key.load_cert_from_memory(signer.cert_pem(), xmlsec.constants.KeyDataFormatPem)
    ctx.key = key
    ctx.sign(sig)
    return dump(root)


# --- the happy paths -------------------------------------------------------------------


def test_signed_entry_verifies(signed, trust_store, signer):
    verified = verify_entry(signed, trust_store, now=NOW)
    assert verified.certificate == signer.certificate
    assert verified.entry.endorser_email == signer.email
    assert verified.entry.endorsement_created == NOW
    assert verified.xml == signed


def test_ec_signed_entry_verifies(draft, make_signer, tmp_path):
    ec_signer = make_signer(key_type="ec")
    data = sign_entry(draft, ec_signer, now=NOW)
    assert X.ECDSA_SHA256.encode() in data
    verify_entry(data, TrustStore.from_paths([ec_signer.cert_path]), now=NOW)


def test_ca_issued_with_chain_in_keyinfo(draft, tmp_path):
    root_ca = make_cert("Root CA", ca=True)
    inter = make_cert("Intermediate CA", ca=True, issuer=root_ca)
    key, leaf = make_cert("Endorser", issuer=inter, email="ca-endorser@example.org")
    data = sign_entry(draft, signer_from(key, leaf, inter[1]), now=NOW)
    (tmp_path / "root.pem").write_bytes(pem(root_ca[1]))
    verified = verify_entry(data, TrustStore.from_paths([tmp_path / "root.pem"]), now=NOW)
    assert verified.chain == (inter[1], root_ca[1])


# --- attacks ---------------------------------------------------------------------------


def test_changed_byte(signed, trust_store):
    changed = signed.replace(b"<slreq:bytes>100<", b"<slreq:bytes>101<", 1)
    assert changed != signed
    with pytest.raises(SignatureInvalid):
        verify_entry(changed, trust_store, now=NOW)


def test_second_signature(signed, trust_store):
    root = tree(signed)
    root.append(copy.deepcopy(signature_of(root)))
    with pytest.raises(SignatureInvalid, match="exactly one"):
        verify_entry(dump(root), trust_store, now=NOW)


def test_signature_not_last_child(signed, trust_store):
    root = tree(signed)
    sig = signature_of(root)
    root.insert(0, sig)
    with pytest.raises(SignatureInvalid, match="last child"):
        verify_entry(dump(root), trust_store, now=NOW)


def test_signature_nested_in_description(signed, trust_store):
    root = tree(signed)
    root.find(X.RDF_DESCRIPTION).append(signature_of(root))
    with pytest.raises(SignatureInvalid, match="child of the document root"):
        verify_entry(dump(root), trust_store, now=NOW)


def test_comment_after_signature(signed, trust_store):
    root = tree(signed)
    signature_of(root).addnext(etree.Comment("after"))
    with pytest.raises(SignatureInvalid):
        verify_entry(dump(root), trust_store, now=NOW)


def test_reference_to_fragment(draft, signer, trust_store):
    data = sign_custom(draft, signer, uri="#desc")
    with pytest.raises(SignatureInvalid, match='URI=""'):
        verify_entry(data, trust_store, now=NOW)


def test_reference_with_xpath_transform(draft, signer, trust_store):
    # signs only the rdf:Description: anything added elsewhere would stay "valid"
    data = sign_custom(draft, signer, xpath="ancestor-or-self::*[local-name()='Description']")
    with pytest.raises(SignatureInvalid, match="only transform"):
        verify_entry(data, trust_store, now=NOW)


def test_xsw_forged_description_beside_signed(signed, trust_store):
    root = tree(signed)
    forged = copy.deepcopy(root.find(X.RDF_DESCRIPTION))
    forged.find(f"{{{X.SLREQ_NS}}}bytes").text = "666"
    root.insert(0, forged)
    with pytest.raises(SignatureInvalid):
        verify_entry(dump(root), trust_store, now=NOW)


def test_xsw_signed_document_wrapped(signed, trust_store):
    """The genuine document (signature and all) wrapped inside a forged one."""
    genuine = tree(signed)
    outer = tree(signed)
    for child in list(outer):
        outer.remove(child)
    forged = copy.deepcopy(genuine.find(X.RDF_DESCRIPTION))
    forged.find(f"{{{X.SLREQ_NS}}}bytes").text = "666"
    outer.append(forged)
    wrapper = etree.SubElement(outer, "{urn:evil}wrapper")
    wrapper.append(genuine)
    with pytest.raises(SignatureInvalid):
        verify_entry(dump(outer), trust_store, now=NOW)


def test_xsw_signature_moved_to_wrapper(signed, trust_store):
    """Signature left as the root's last child, signed content moved under a wrapper."""
    root = tree(signed)
    description = root.find(X.RDF_DESCRIPTION)
    wrapper = etree.Element("{urn:evil}wrapper")
    description.addprevious(wrapper)
    wrapper.append(description)
    forged = copy.deepcopy(description)
    forged.find(f"{{{X.SLREQ_NS}}}bytes").text = "666"
    wrapper.addprevious(forged)
    with pytest.raises(SignatureInvalid):
        verify_entry(dump(root), trust_store, now=NOW)


def test_doctype_with_entity(signed, trust_store):
    head, _, rest = signed.partition(b"?>")
    attack = head + b'?><!DOCTYPE r [<!ENTITY e "x">]>' + rest
    with pytest.raises(UnsafeXML):
        verify_entry(attack, trust_store, now=NOW)


def test_xinclude(signed, trust_store):
    attack = signed.replace(
        b"</rdf:Description>",
        b'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="/etc/passwd"/>'
        b"</rdf:Description>",
        1,
    )
    with pytest.raises(UnsafeXML):
        verify_entry(attack, trust_store, now=NOW)


@pytest.mark.parametrize("field", ["email", "subject", "issuer"])
def test_endorser_not_the_certificate(draft, signer, trust_store, field):
    root = tree(draft)
    fill_endorsement(root.find(X.RDF_DESCRIPTION), signer, now=NOW)
    node = root.find(f".//{{{X.SLREQ_NS}}}{field}")
    node.text = "mallory@example.org" if field == "email" else "CN=Mallory,O=Evil"
    append_signature(root, signer)
    with pytest.raises(EndorserMismatch, match=field):
        verify_entry(dump(root), trust_store, now=NOW)


def test_untrusted_certificate(draft, make_signer, trust_store):
    stranger = make_signer(email="stranger@example.org")
    data = sign_entry(draft, stranger, now=NOW)
    with pytest.raises(Untrusted):
        verify_entry(data, trust_store, now=NOW)


def test_no_trust_configured(signed):
    with pytest.raises(Untrusted, match="no trusted certificates"):
        verify_entry(signed, TrustStore(), now=NOW)


def test_revoked_certificate(draft, tmp_path):
    root_ca = make_cert("Root CA", ca=True)
    key, leaf = make_cert("Endorser", issuer=root_ca, email="revoked@example.org")
    data = sign_entry(draft, signer_from(key, leaf), now=NOW)
    (tmp_path / "ca.pem").write_bytes(pem(root_ca[1]))
    (tmp_path / "ca.crl").write_bytes(pem(make_crl(root_ca, [leaf])))
    with pytest.raises(CertificateRevoked):
        verify_entry(data, TrustStore.from_paths([tmp_path]), now=NOW)


def test_expired_certificate(draft, make_signer):
    old = make_signer(email="old@example.org", days=10, now=NOW - dt.timedelta(days=40))
    data = sign_entry(draft, old, now=NOW - dt.timedelta(days=35))
    store = TrustStore.from_paths([old.cert_path])
    verify_entry(data, store, now=NOW - dt.timedelta(days=34))  # fine back then
    with pytest.raises(CertificateExpired):
        verify_entry(data, store, now=NOW)


def test_expired_entry(asset, sign_xml, trust_store):
    data = sign_xml(asset("stratuslab/valid-full.xml").read_bytes(), now=NOW)  # valid to 2011
    with pytest.raises(Expired):
        verify_entry(data, trust_store, now=NOW)
    verify_entry(data, trust_store, now=NOW, allow_expired=True)


def test_sha1_without_opt_in(asset, tmp_path):
    data = asset("stratuslab/valid-full-signature.xml").read_bytes()
    with pytest.raises(WeakAlgorithm):
        verify_entry(data, TrustStore(), now=dt.datetime(2011, 6, 1, tzinfo=dt.UTC))


def test_swapped_keyinfo_certificate(draft, make_signer, signer, trust_store):
    """Signed by a stranger's key, but carrying the trusted endorser's certificate."""
    stranger = make_signer(email=signer.email, key_type="rsa")
    root = tree(sign_entry(draft, stranger, now=NOW))
    cert_node = root.find(f".//{{{DS}}}X509Certificate")
    cert_node.text = X.b64encode_lines(X.chain_der([signer.certificate])[0])
    with pytest.raises(SignatureInvalid):
        verify_entry(dump(root), trust_store, now=NOW)


def test_keyinfo_without_certificate(signed, trust_store):
    root = tree(signed)
    key_info = root.find(f".//{{{DS}}}KeyInfo")
    for child in list(key_info):
        key_info.remove(child)
    etree.SubElement(key_info, f"{{{DS}}}KeyName").text = "endorser"
    with pytest.raises(SignatureInvalid):
        verify_entry(dump(root), trust_store, now=NOW)


def test_empty_signature_element(draft, trust_store):
    root = tree(draft)
    etree.SubElement(root, X.SIGNATURE)
    with pytest.raises(SignatureMissing):
        verify_entry(dump(root), trust_store, now=NOW)


def test_unsigned_entry(draft, trust_store):
    with pytest.raises(SignatureMissing):
        verify_entry(draft, trust_store, now=NOW)


# --- image bytes -----------------------------------------------------------------------


def test_image_digests_match(asset):
    entry = parse_entry_bytes(asset("stratuslab/client-manifest-cern-signed.xml").read_bytes())
    # digests equal to the entry's own values (the CERN image itself is not in the corpus)
    from imagekit.image.digests import Digests

    check_image_digests(entry, Digests(size=entry.bytes, values=entry.digests))


def test_wrong_image_bytes(asset):
    entry = parse_entry_bytes(asset("stratuslab/client-manifest-cern-signed.xml").read_bytes())
    wrong = compute_digests(io.BytesIO(b"evil"), list(DigestAlgorithm))
    assert wrong.size == entry.bytes  # same size, other bytes
    with pytest.raises(ChecksumMismatch):
        check_image_digests(entry, wrong)


def test_wrong_image_size(asset):
    entry = parse_entry_bytes(asset("stratuslab/client-manifest-cern-signed.xml").read_bytes())
    with pytest.raises(SizeMismatch):
        check_image_digests(entry, compute_digests(io.BytesIO(b"evil!"), list(DigestAlgorithm)))


def test_image_digest_algorithms_must_overlap(asset):
    from imagekit.image.digests import Digests

    entry = parse_entry_bytes(asset("stratuslab/valid-minimal.xml").read_bytes())  # SHA-1 only
    with pytest.raises(ChecksumMismatch, match="none of the entry"):
        check_image_digests(
            entry, Digests(size=entry.bytes, values={DigestAlgorithm.SHA256: "0" * 64})
        )


# --- cost limits: a hostile document is refused before canonicalization or cryptography ---


def _flood_namespaces(signed: bytes, n: int) -> bytes:
    decl = " ".join(f'xmlns:n{i}="urn:example:{i}"' for i in range(n)).encode()
    return signed.replace(b"<rdf:RDF ", b"<rdf:RDF " + decl + b" ", 1)


def _inside_description(signed: bytes, xml: str) -> bytes:
    marker = b"</rdf:Description>"
    return signed.replace(marker, xml.encode() + marker, 1)


def _keyinfo_certificates(signed: bytes, n: int) -> bytes:
    root = tree(signed)
    node = root.find(f".//{{{DS}}}X509Certificate")
    for _ in range(n - 1):
        node.addnext(copy.deepcopy(node))
    return dump(root)


HOSTILE = [
    pytest.param(
        lambda s: _flood_namespaces(s, 65),
        "namespace declarations",
        id="namespace-declarations-on-root",
    ),
    pytest.param(
        lambda s: _inside_description(
            s, "".join(f'<x{i}:e xmlns:x{i}="urn:x:{i}"/>' for i in range(65))
        ),
        "namespace declarations",
        id="namespace-declarations-spread-over-elements",
    ),
    pytest.param(
        lambda s: _inside_description(
            s, '<ex:list xmlns:ex="urn:ex">' + "<ex:e/>" * 2100 + "</ex:list>"
        ),
        "elements",
        id="many-elements",
    ),
    pytest.param(
        lambda s: _inside_description(s, "<!---->" * 2100), "elements", id="many-comments"
    ),
    pytest.param(
        lambda s: _inside_description(
            s,
            '<ex:list xmlns:ex="urn:ex">'
            + ("<ex:e " + " ".join(f'a{i}="v"' for i in range(30)) + "/>") * 80
            + "</ex:list>",
        ),
        "attributes",
        id="many-attributes",
    ),
    pytest.param(
        lambda s: _inside_description(
            s, '<ex:e xmlns:ex="urn:ex" ' + " ".join(f'a{i}="v"' for i in range(33)) + "/>"
        ),
        "attributes",
        id="many-attributes-on-one-element",
    ),
    pytest.param(
        lambda s: _inside_description(
            s, '<ex:d xmlns:ex="urn:ex">' + "<ex:d>" * 40 + "</ex:d>" * 41
        ),
        "nested deeper",
        id="deep-nesting",
    ),
    pytest.param(
        lambda s: _inside_description(
            s, f"<dcterms:description>{'x' * 70_000}</dcterms:description>"
        ),
        "a text of",
        id="long-text",
    ),
    pytest.param(
        lambda s: _inside_description(s, f'<ex:e xmlns:ex="urn:ex" ex:a="{"x" * 70_000}"/>'),
        "an attribute value",
        id="long-attribute-value",
    ),
    pytest.param(
        lambda s: _inside_description(s, f"<!--{'x' * 70_000}-->"), "a comment", id="long-comment"
    ),
    pytest.param(
        lambda s: _inside_description(s, f'<ex:e xmlns:ex="urn:{"x" * 70_000}"/>'),
        "a namespace URI",
        id="long-namespace-uri",
    ),
    pytest.param(
        lambda s: _keyinfo_certificates(s, 9),
        "KeyInfo carries 9 certificates",
        id="many-keyinfo-certificates",
    ),
]


@pytest.mark.parametrize(("make_hostile", "message"), HOSTILE)
def test_hostile_document_refused_before_canonicalization(
    signed, trust_store, monkeypatch, make_hostile, message
):
    hostile = make_hostile(signed)

    def never(*_: object) -> None:
        raise AssertionError("canonicalization or cryptography ran on a hostile document")

    monkeypatch.setattr("imagekit.signing.verify._check_maths", never)
    monkeypatch.setattr("imagekit.signing.verify._signed_content", never)
    with pytest.raises(UnsafeXML, match=message):
        verify_entry(hostile, trust_store, now=NOW)


def test_eight_thousand_namespace_declarations_refused_quickly(signed, trust_store):
    """~190 KB that cost ~10 s of CPU (canonicalization is quadratic in declarations)."""
    hostile = _flood_namespaces(signed, 8000)
    assert 150_000 < len(hostile) < 250_000
    start = time.process_time()
    with pytest.raises(UnsafeXML, match="more than 64 namespace declarations"):
        verify_entry(hostile, trust_store, now=NOW)
    assert time.process_time() - start < 0.25


def test_entry_at_the_limits_still_verifies(draft, sign_xml, trust_store):
    """The limits leave room: 32 extension namespaces, 1,440 elements, a 60 KB text."""
    extra = "".join(f"<x{i}:e{j}>v</x{i}:e{j}>" for j in range(45) for i in range(32))
    text = f"<x0:big>{'y' * 60_000}</x0:big>"
    big = _inside_description(draft, extra + text)
    decl = " ".join(f'xmlns:x{i}="urn:x:{i}"' for i in range(32)).encode()
    big = big.replace(b"<rdf:RDF ", b"<rdf:RDF " + decl + b" ", 1)
    verify_entry(sign_xml(big, now=NOW), trust_store, now=NOW)


# --- time ------------------------------------------------------------------------------


def test_endorsement_dated_in_the_future_refused(draft, sign_xml, trust_store):
    """An endorsement "from 2099" would outrank every genuine one (rollback memory, server)."""
    data = sign_xml(draft, now=NOW + dt.timedelta(days=30))
    with pytest.raises(FutureDated, match="in the future"):
        verify_entry(data, trust_store, now=NOW)


def test_endorsement_within_the_clock_skew_accepted(draft, sign_xml, trust_store):
    data = sign_xml(draft, now=NOW + MAX_CLOCK_SKEW - dt.timedelta(seconds=1))
    verify_entry(data, trust_store, now=NOW)


def test_future_is_judged_by_the_present_when_verifying_as_of_a_past_date(
    draft, sign_xml, trust_store
):
    data = sign_xml(draft, now=NOW)
    before = NOW - dt.timedelta(hours=1)
    with pytest.raises(FutureDated):
        verify_entry(data, trust_store, now=before)
    verify_entry(data, trust_store, now=before, present=NOW)


# --- who may endorse under CA trust ------------------------------------------------------


def _ca_store(tmp_path, root_ca) -> TrustStore:
    (tmp_path / "root.pem").write_bytes(pem(root_ca[1]))
    return TrustStore.from_paths([tmp_path / "root.pem"])


def test_ca_issued_certificate_without_email_claiming_any_email_refused(draft, tmp_path):
    root_ca = make_cert("Root CA", ca=True)
    key, leaf = make_cert("Anyone", issuer=root_ca)  # no e-mail in the certificate
    data = sign_entry(draft, signer_from(key, leaf), now=NOW, email="images@site.example.org")
    with pytest.raises(Untrusted, match="carries no e-mail address"):
        verify_entry(data, _ca_store(tmp_path, root_ca), now=NOW)
    # pinning that very certificate vouches for the address
    (tmp_path / "anyone.pem").write_bytes(pem(leaf))
    pinned = TrustStore.from_paths([tmp_path / "root.pem", tmp_path / "anyone.pem"])
    verify_entry(data, pinned, now=NOW)


def test_ca_issued_certificate_with_subject_email_address_accepted(draft, tmp_path):
    root_ca = make_cert("Root CA", ca=True)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "Jane"),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, "jane@example.org"),
        ]
    )
    key, leaf = make_cert(name, issuer=root_ca)
    data = sign_entry(draft, signer_from(key, leaf), now=NOW)
    verified = verify_entry(data, _ca_store(tmp_path, root_ca), now=NOW)
    assert verified.entry.endorser_email == "jane@example.org"


@pytest.mark.parametrize(
    ("usages", "ok"),
    [
        pytest.param([ExtendedKeyUsageOID.SERVER_AUTH], False, id="tls-server-certificate"),
        pytest.param([ExtendedKeyUsageOID.OCSP_SIGNING], False, id="ocsp-responder"),
        pytest.param([ExtendedKeyUsageOID.EMAIL_PROTECTION], True, id="email-protection"),
        pytest.param([ExtendedKeyUsageOID.CLIENT_AUTH], True, id="client-auth"),
        pytest.param([ExtendedKeyUsageOID.CODE_SIGNING], True, id="code-signing"),
        pytest.param(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE],
            True,
            id="any",
        ),
    ],
)
def test_ca_issued_certificate_for_tls_servers_refused(draft, tmp_path, usages, ok):
    root_ca = make_cert("Root CA", ca=True)
    key, leaf = make_cert(
        "host.example.org",
        issuer=root_ca,
        email="host@example.org",
        extensions=((x509.ExtendedKeyUsage(usages), False),),
    )
    data = sign_entry(draft, signer_from(key, leaf), now=NOW)
    if ok:
        verify_entry(data, _ca_store(tmp_path, root_ca), now=NOW)
    else:
        with pytest.raises(Untrusted, match="may not endorse: its extended key usage"):
            verify_entry(data, _ca_store(tmp_path, root_ca), now=NOW)


def test_ca_issued_certificate_with_unknown_critical_extension_refused(draft, tmp_path):
    root_ca = make_cert("Root CA", ca=True)
    odd = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    key, leaf = make_cert(
        "Endorser", issuer=root_ca, email="e@example.org", extensions=((odd, True),)
    )
    data = sign_entry(draft, signer_from(key, leaf), now=NOW)
    with pytest.raises(Untrusted, match=r"critical extension .*1\.3\.6\.1\.4\.1\.55555\.1"):
        verify_entry(data, _ca_store(tmp_path, root_ca), now=NOW)


def test_pinned_self_signed_ca_true_endorser_trusted(draft, tmp_path):
    """``openssl req -x509`` writes basicConstraints CA:TRUE: given in --trust, it is trusted."""
    key, cert = make_cert("Jane", ca=True, email="jane@example.org")
    (tmp_path / "jane.pem").write_bytes(pem(cert))
    data = sign_entry(draft, signer_from(key, cert), now=NOW)
    verified = verify_entry(data, TrustStore.from_paths([tmp_path / "jane.pem"]), now=NOW)
    assert verified.certificate == cert and verified.chain == ()


def test_pinned_openssl_req_x509_certificate_trusted(draft, tmp_path):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(tmp_path / "k.pem"),
            "-out",
            str(tmp_path / "c.pem"),
            "-days",
            "30",
            "-subj",
            "/CN=Jane Tester/emailAddress=jane@example.org",
        ],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    signer = load_signer(key=tmp_path / "k.pem", cert=tmp_path / "c.pem")
    bc = signer.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca  # what makes the case
    data = sign_entry(draft, signer, now=NOW)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    verify_entry(data, TrustStore.from_paths([tmp_path / "c.pem"]), now=later)


# --- CRLs ------------------------------------------------------------------------------


def test_stale_crl_refused_unless_allowed(draft, tmp_path, caplog):
    root_ca = make_cert("Root CA", ca=True)
    key, leaf = make_cert("Endorser", issuer=root_ca, email="e@example.org")
    data = sign_entry(draft, signer_from(key, leaf), now=NOW)
    (tmp_path / "ca.pem").write_bytes(pem(root_ca[1]))
    stale = make_crl(root_ca, [], next_update=NOW - dt.timedelta(days=1))
    (tmp_path / "ca.crl").write_bytes(pem(stale))
    with pytest.raises(Untrusted, match="the CRL of CN=Root CA is stale: its nextUpdate"):
        verify_entry(data, TrustStore.from_paths([tmp_path]), now=NOW)
    allowing = TrustStore.from_paths([tmp_path], unsafe_allow_stale_crls=True)
    with caplog.at_level(logging.WARNING):
        verify_entry(data, allowing, now=NOW)
    assert "UNSAFE" in caplog.text and "stale" in caplog.text


def test_namespace_flood_in_utf16_refused(signed, trust_store):
    """The byte scan reads ASCII-compatible encodings; in UTF-16 the parser counts."""
    text = _flood_namespaces(signed, 8000).decode("utf-8")
    text = text.split("?>", 1)[1] if text.startswith("<?xml") else text
    hostile = text.encode("utf-16")
    start = time.process_time()
    with pytest.raises(UnsafeXML, match="more than 64 namespace declarations"):
        verify_entry(hostile, trust_store, now=NOW)
    assert time.process_time() - start < 0.25
