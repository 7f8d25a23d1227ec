"""Endorser keys: self-signed certificates, PEM and PKCS#12 loading."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from imagekit.errors import InputError, NotFound
from imagekit.signing import keys


@pytest.mark.parametrize(
    ("key_type", "key_class"), [("rsa", rsa.RSAPrivateKey), ("ec", ec.EllipticCurvePrivateKey)]
)
def test_make_self_signed_certificate_fields(tmp_path, key_type, key_class):
    now = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    key_pem, cert_pem = keys.make_self_signed(
        "me@example.org", "Me Myself", 10, key_type=key_type, now=now
    )
    (tmp_path / "k").write_bytes(key_pem)
    (tmp_path / "c").write_bytes(cert_pem)
    signer = keys.load_signer(key=tmp_path / "k", cert=tmp_path / "c")
    cert = signer.certificate
    assert isinstance(signer.private_key, key_class)
    assert signer.key_type == key_type
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Me Myself"
    assert signer.emails == ["me@example.org"]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert cert.not_valid_after_utc == now + dt.timedelta(days=10)
    assert cert.not_valid_before_utc <= now
    cert.verify_directly_issued_by(cert)  # self-signed for real


def test_make_self_signed_rejects_bad_input():
    with pytest.raises(InputError):
        keys.make_self_signed("not-an-address", "Me", 10)
    with pytest.raises(InputError):
        keys.make_self_signed("me@example.org", "Me", 0)
    with pytest.raises(InputError):
        keys.make_self_signed("me@example.org", "Me", 10, key_type="dsa")


def test_key_and_certificate_must_match(tmp_path):
    key1, _ = keys.make_self_signed("a@example.org", "A", 1, key_type="ec")
    _, cert2 = keys.make_self_signed("b@example.org", "B", 1, key_type="ec")
    (tmp_path / "k").write_bytes(key1)
    (tmp_path / "c").write_bytes(cert2)
    with pytest.raises(InputError, match="does not belong"):
        keys.load_signer(key=tmp_path / "k", cert=tmp_path / "c")


def test_p12_round_trip(tmp_path):
    key_pem, cert_pem = keys.make_self_signed("me@example.org", "Me", 5, key_type="ec")
    (tmp_path / "k").write_bytes(key_pem)
    (tmp_path / "c").write_bytes(cert_pem)
    signer = keys.load_signer(key=tmp_path / "k", cert=tmp_path / "c")
    (tmp_path / "me.p12").write_bytes(keys.make_p12(signer, "s3cret"))
    again = keys.load_signer(p12=tmp_path / "me.p12", passphrase="s3cret")
    assert again.certificate == signer.certificate
    assert again.key_pem() == signer.key_pem()
    with pytest.raises(InputError, match="wrong passphrase"):
        keys.load_signer(p12=tmp_path / "me.p12", passphrase="wrong")
    with pytest.raises(InputError):
        keys.make_p12(signer, "")


def test_stratuslab_p12_fixtures(asset):
    jane = keys.load_signer(p12=asset("stratuslab/test.p12"), passphrase="XYZXYZ")
    assert jane.emails == ["jane.tester@example.org"]
    assert jane.certificate.subject.rfc4514_string() == (
        "CN=Jane Tester,OU=Testing Department,O=StratusLab Project,C=EU"
    )
    jim = keys.load_signer(p12=asset("stratuslab/test-ca-signed.p12"), passphrase=b"XYZXYZ")
    assert jim.emails == []  # the test CA put no e-mail in Jim's certificate
    assert "Certificate Authority" in jim.certificate.issuer.rfc4514_string()


def test_load_signer_errors(tmp_path):
    with pytest.raises(NotFound):
        keys.load_signer(p12=tmp_path / "missing.p12", passphrase="x")
    with pytest.raises(InputError, match="needs a private key"):
        keys.load_signer(key=tmp_path / "k")
    with pytest.raises(InputError, match="not both"):
        keys.load_signer(p12=tmp_path / "x.p12", key=tmp_path / "k", cert=tmp_path / "c")
    (tmp_path / "k").write_bytes(b"garbage")
    (tmp_path / "c").write_bytes(b"garbage")
    with pytest.raises(InputError):
        keys.load_signer(key=tmp_path / "k", cert=tmp_path / "c")
