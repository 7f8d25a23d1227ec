"""Interop both ways with the independent ``xmlsec1`` command line (Debian xmlsec1)."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess

import pytest
from lxml import etree

from imagekit.entry.xmlsafe import parse_xml
from imagekit.errors import SignatureInvalid
from imagekit.signing import _xmldsig as X
from imagekit.signing.sign import fill_endorsement, sign_entry
from imagekit.signing.trust import TrustStore
from imagekit.signing.verify import verify_entry
from tests.plugins.signing import make_cert, pem, signer_from

pytestmark = pytest.mark.skipif(shutil.which("xmlsec1") is None, reason="xmlsec1 not installed")
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def xmlsec1(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["xmlsec1", *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def draft(asset) -> bytes:
    return asset("stratuslab/valid-minimal-empty-endorsement.xml").read_bytes()


@pytest.mark.parametrize("key_type", ["rsa", "ec"])
def test_imagekit_signature_verifies_with_xmlsec1(draft, make_signer, tmp_path, key_type):
    signer = make_signer(key_type=key_type)
    (tmp_path / "entry.xml").write_bytes(sign_entry(draft, signer, now=NOW))
    result = xmlsec1("--verify", "--trusted-pem", signer.cert_path, tmp_path / "entry.xml")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stderr


def test_imagekit_chain_verifies_with_xmlsec1(draft, tmp_path):
    root_ca = make_cert("Root CA", ca=True)
    inter = make_cert("Intermediate CA", ca=True, issuer=root_ca)
    key, leaf = make_cert("Endorser", issuer=inter, email="chain@example.org")
    (tmp_path / "entry.xml").write_bytes(
        sign_entry(draft, signer_from(key, leaf, inter[1]), now=NOW)
    )
    (tmp_path / "root.pem").write_bytes(pem(root_ca[1]))
    result = xmlsec1("--verify", "--trusted-pem", tmp_path / "root.pem", tmp_path / "entry.xml")
    assert result.returncode == 0, result.stderr


def test_xmlsec1_rejects_tampered_imagekit_signature(draft, signer, tmp_path):
    signed = sign_entry(draft, signer, now=NOW)
    (tmp_path / "entry.xml").write_bytes(signed.replace(b">100<", b">101<", 1))
    result = xmlsec1("--verify", "--trusted-pem", signer.cert_path, tmp_path / "entry.xml")
    assert result.returncode != 0


TEMPLATE = b"""<Signature xmlns="http://www.w3.org/2000/09/xmldsig#"><SignedInfo>\
<CanonicalizationMethod Algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments"/>\
<SignatureMethod Algorithm="%s"/>\
<Reference URI=""><Transforms>\
<Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/></Transforms>\
<DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><DigestValue/></Reference>\
</SignedInfo><SignatureValue/><KeyInfo><X509Data><X509Certificate/></X509Data></KeyInfo>\
</Signature>"""


@pytest.mark.parametrize("key_type", ["rsa", "ec"])
def test_xmlsec1_signature_verifies_with_imagekit(draft, make_signer, tmp_path, key_type):
    signer = make_signer(key_type=key_type)
    root = parse_xml(draft)
    fill_endorsement(root.find(X.RDF_DESCRIPTION), signer, now=NOW)
    method = X.RSA_SHA256 if key_type == "rsa" else X.ECDSA_SHA256
    root.append(etree.fromstring(TEMPLATE % method.encode()))
    (tmp_path / "template.xml").write_bytes(etree.tostring(root.getroottree()))
    result = xmlsec1(
        "--sign",
        "--privkey-pem",
        f"{signer.key_path},{signer.cert_path}",
        "--output",
        tmp_path / "signed.xml",
        tmp_path / "template.xml",
    )
    assert result.returncode == 0, result.stderr
    signed = (tmp_path / "signed.xml").read_bytes()
    store = TrustStore.from_paths([signer.cert_path])
    verified = verify_entry(signed, store, now=NOW)
    assert verified.entry.endorser_email == signer.email
    with pytest.raises(SignatureInvalid):
        verify_entry(signed.replace(b">100<", b">101<", 1), store, now=NOW)
