"""Trust decisions: pinned certificates, CA chains, CRLs, validity, weak hashes."""

from __future__ import annotations

import base64
import datetime as dt
import re

import pytest
from cryptography import x509

from imagekit.errors import (
    CertificateExpired,
    CertificateRevoked,
    InputError,
    NotFound,
    Untrusted,
    WeakAlgorithm,
)
from imagekit.signing.certs import dn_matches, parse_dn
from imagekit.signing.trust import TrustStore, trust_paths
from tests.plugins.signing import make_cert, make_crl, pem

NOW = dt.datetime.now(dt.UTC)
AS_OF_CA_FIXTURE = dt.datetime(2012, 2, 15, tzinfo=dt.UTC)


def embedded_cert(path) -> x509.Certificate:
    text = path.read_text()
    match = re.search(r"<X509Certificate>(.*?)</X509Certificate>", text, re.S)
    assert match is not None
    b64 = match.group(1)
    return x509.load_der_x509_certificate(base64.b64decode("".join(b64.split())))


@pytest.fixture
def jim(asset) -> x509.Certificate:
    return embedded_cert(asset("stratuslab/valid-ca-signed.xml"))


def test_classifies_pinned_and_anchors(tmp_path, asset):
    _, leaf = make_cert("Leaf")
    (tmp_path / "leaf.pem").write_bytes(pem(leaf))
    store = TrustStore.from_paths([tmp_path / "leaf.pem", asset("stratuslab/test-ca.pem")])
    assert store.pinned == (leaf,)
    assert len(store.anchors) == 1 and not store.crls


def test_directory_with_ca_and_crl(tmp_path, asset, jim):
    (tmp_path / "ca.pem").write_bytes(asset("stratuslab/test-ca.pem").read_bytes())
    (tmp_path / "ca.r0").write_bytes(asset("stratuslab/test-crl-empty.pem").read_bytes())
    (tmp_path / "README").write_text("ignored: not a certificate suffix")
    store = TrustStore.from_paths([tmp_path])
    assert len(store.anchors) == 1 and len(store.crls) == 1
    path = store.verify_certificate(jim, now=AS_OF_CA_FIXTURE, allow_sha1=True)
    assert path[0] == jim and path[-1] == store.anchors[0]


def test_ca_chain_needs_sha1_opt_in(asset, jim):
    store = TrustStore.from_paths([asset("stratuslab/test-ca.pem")])
    with pytest.raises(WeakAlgorithm):
        store.verify_certificate(jim, now=AS_OF_CA_FIXTURE)


def test_revoked_by_crl(asset, jim):
    store = TrustStore.from_paths(
        [asset("stratuslab/test-ca.pem"), asset("stratuslab/test-crl-revoked.pem")]
    )
    with pytest.raises(CertificateRevoked):
        store.verify_certificate(jim, now=AS_OF_CA_FIXTURE, allow_sha1=True)


def test_ca_certificate_expired(asset, jim):
    store = TrustStore.from_paths([asset("stratuslab/test-ca.pem")])
    with pytest.raises(CertificateExpired):
        store.verify_certificate(jim, now=dt.datetime(2014, 1, 1, tzinfo=dt.UTC), allow_sha1=True)
    with pytest.raises(CertificateExpired):
        store.verify_certificate(jim, now=dt.datetime(2011, 1, 1, tzinfo=dt.UTC), allow_sha1=True)


def test_pinned_exact_match_only(tmp_path):
    key, cert = make_cert("Endorser", email="e@example.org")
    # same key and subject, different certificate: not the pinned one
    _, twin = make_cert("Endorser", email="e@example.org", key=key)
    (tmp_path / "e.pem").write_bytes(pem(cert))
    store = TrustStore.from_paths([tmp_path / "e.pem"])
    assert store.verify_certificate(cert, now=NOW) == (cert,)
    with pytest.raises(Untrusted):
        store.verify_certificate(twin, now=NOW)


def test_pinned_certificate_expired(tmp_path):
    _, cert = make_cert("Old", not_before=NOW - dt.timedelta(days=60), days=30)
    (tmp_path / "old.pem").write_bytes(pem(cert))
    with pytest.raises(CertificateExpired):
        TrustStore.from_paths([tmp_path / "old.pem"]).verify_certificate(cert, now=NOW)


def test_empty_store_is_untrusted():
    _, cert = make_cert("Anyone")
    with pytest.raises(Untrusted, match="no trusted certificates"):
        TrustStore().verify_certificate(cert, now=NOW)


def test_intermediate_from_chain(tmp_path):
    root = make_cert("Root CA", ca=True)
    inter = make_cert("Intermediate CA", ca=True, issuer=root)
    _, leaf = make_cert("Leaf", issuer=inter)
    (tmp_path / "root.pem").write_bytes(pem(root[1]))
    store = TrustStore.from_paths([tmp_path / "root.pem"])
    assert store.verify_certificate(leaf, [inter[1]], now=NOW) == (leaf, inter[1], root[1])
    with pytest.raises(Untrusted):
        store.verify_certificate(leaf, now=NOW)  # intermediate not supplied


def test_intermediate_must_be_a_ca(tmp_path):
    root = make_cert("Root CA", ca=True)
    not_ca = make_cert("Plain", ca=False, issuer=root)
    _, leaf = make_cert("Leaf", issuer=not_ca)
    (tmp_path / "root.pem").write_bytes(pem(root[1]))
    with pytest.raises(Untrusted):
        TrustStore.from_paths([tmp_path / "root.pem"]).verify_certificate(
            leaf, [not_ca[1]], now=NOW
        )


def test_path_length_constraint(tmp_path):
    root = make_cert("Root CA", ca=True, path_length=0)
    inter = make_cert("Intermediate CA", ca=True, issuer=root)
    _, leaf = make_cert("Leaf", issuer=inter)
    (tmp_path / "root.pem").write_bytes(pem(root[1]))
    with pytest.raises(Untrusted):
        TrustStore.from_paths([tmp_path / "root.pem"]).verify_certificate(leaf, [inter[1]], now=NOW)


def test_crl_of_own_ca(tmp_path):
    root = make_cert("Root CA", ca=True)
    _, leaf = make_cert("Leaf", issuer=root)
    _, other = make_cert("Other", issuer=root)
    (tmp_path / "root.pem").write_bytes(pem(root[1]))
    (tmp_path / "root.crl").write_bytes(pem(make_crl(root, [leaf])))
    store = TrustStore.from_paths([tmp_path])
    with pytest.raises(CertificateRevoked):
        store.verify_certificate(leaf, now=NOW)
    store.verify_certificate(other, now=NOW)


def test_forged_crl_is_refused(tmp_path):
    root = make_cert("Root CA", ca=True)
    impostor = make_cert("Root CA", ca=True)  # same name, different key
    _, leaf = make_cert("Leaf", issuer=root)
    (tmp_path / "root.pem").write_bytes(pem(root[1]))
    (tmp_path / "forged.crl").write_bytes(pem(make_crl(impostor, [])))
    with pytest.raises(Untrusted, match="invalid signature"):
        TrustStore.from_paths([tmp_path]).verify_certificate(leaf, now=NOW)


def test_sha1_signed_leaf_needs_opt_in(asset, jim):
    # Jim's certificate is signed with SHA-1 by the test CA (cryptography can no longer
    # make such certificates, so the genuine one is used)
    store = TrustStore.from_paths([asset("stratuslab/test-ca.pem")])
    with pytest.raises(WeakAlgorithm):
        store.verify_certificate(jim, now=AS_OF_CA_FIXTURE)
    assert jim.signature_hash_algorithm.name == "sha1"
    store.verify_certificate(jim, now=AS_OF_CA_FIXTURE, allow_sha1=True)


def test_wrong_ca_with_same_name(tmp_path, jim):
    impostor = make_cert(jim.issuer, ca=True)  # the test CA's exact name, another key
    assert impostor[1].subject == jim.issuer
    (tmp_path / "ca.pem").write_bytes(pem(impostor[1]))
    with pytest.raises(Untrusted):
        TrustStore.from_paths([tmp_path]).verify_certificate(
            jim, now=AS_OF_CA_FIXTURE, allow_sha1=True
        )


def test_bad_paths(tmp_path):
    with pytest.raises(NotFound):
        TrustStore.from_paths([tmp_path / "nope.pem"])
    (tmp_path / "junk.pem").write_text(
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )
    with pytest.raises(InputError):
        TrustStore.from_paths([tmp_path / "junk.pem"])


JIM_SUBJECT = "CN=Jim Tester,OU=Testing Department,O=StratusLab Project,C=EU"


@pytest.mark.parametrize(
    "text",
    [
        JIM_SUBJECT,
        "CN=Jim Tester, OU=Testing Department, O=StratusLab Project, C=EU",
        "cn=jim tester,ou=testing department,o=stratuslab project,c=eu",
        "CN=Jim\\20Tester,OU=Testing Department,O=StratusLab Project,C=EU",
        "2.5.4.3=Jim Tester,OU=Testing Department,O=StratusLab Project,C=EU",
        # Java writes attributes without a keyword as #DER-hex (here a PrintableString)
        "CN=#130a4a696d20546573746572,OU=Testing Department,O=StratusLab Project,C=EU",
    ],
)
def test_dn_equivalent_forms(jim, text):
    assert dn_matches(text, jim.subject)


@pytest.mark.parametrize(
    "text",
    [
        "CN=Jim Tester,OU=Testing Department,O=StratusLab Project",  # missing RDN
        "C=EU,O=StratusLab Project,OU=Testing Department,CN=Jim Tester",  # reversed
        "CN=Jim Tester+OU=Testing Department,O=StratusLab Project,C=EU",  # merged RDN
        "CN=Jim Tester\\,OU=Testing Department,O=StratusLab Project,C=EU",  # escaped comma
        "CN=Jim,Tester,OU=Testing Department,O=StratusLab Project,C=EU",
        "XX=Jim Tester,OU=Testing Department,O=StratusLab Project,C=EU",  # unknown type
        "not a dn",
    ],
)
def test_dn_different_forms(jim, text):
    assert not dn_matches(text, jim.subject)


def test_dn_multivalued_rdn_order_is_irrelevant():
    assert parse_dn("CN=a+UID=b,DC=x") == parse_dn("UID=b+CN=a,DC=x")


def test_trust_paths_from_setting(tmp_path):
    import os

    setting = f"{tmp_path / 'a.pem'}{os.pathsep}{tmp_path / 'dir'}"
    assert trust_paths((), setting) == [tmp_path / "a.pem", tmp_path / "dir"]
    assert trust_paths([tmp_path / "x.pem"], setting) == [tmp_path / "x.pem"]
    assert trust_paths((), None) == []


def test_issuer_name_written_in_another_case_and_string_type_chains(tmp_path):
    """Name chaining compares names by meaning (RFC 5280 7.1), as DNs are everywhere: an
    issuer field written as PrintableString in other case still names its UTF8String CA."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.name import _ASN1Type
    from cryptography.x509.oid import NameOID

    root_key, root = make_cert("Root CA", ca=True)
    written = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "ROOT  ca", _type=_ASN1Type.PrintableString)]
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Leaf")]))
        .issuer_name(written)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .sign(root_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    assert leaf.issuer != root.subject
    (tmp_path / "root.pem").write_bytes(pem(root))
    store = TrustStore.from_paths([tmp_path / "root.pem"])
    assert store.verify_certificate(leaf, now=NOW) == (leaf, root)
    _, stranger = make_cert("Other CA", ca=True)
    (tmp_path / "other.pem").write_bytes(pem(stranger))
    with pytest.raises(Untrusted):
        TrustStore.from_paths([tmp_path / "other.pem"]).verify_certificate(leaf, now=NOW)
