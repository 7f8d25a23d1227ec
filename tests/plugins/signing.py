"""Shared signing fixtures: a fresh endorser, a trust store for it, a helper to sign XML.

Other areas use these to make signed entries::

    def test_publish(sign_xml, trust_store, signer):
        signed = sign_xml(entry_bytes)                     # signed now by ``signer``
        verified = verify_entry(signed, trust_store, now=datetime.now(UTC))

``signer`` is a ``keys.Signer`` (pass it to ``sign_entry``) that also carries the paths of
its PEM files (``key_path``, ``cert_path``) for CLI tests, and its ``email``.
The RSA key is generated once per session; the certificate files are written per test.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from imagekit.signing import keys
from imagekit.signing.trust import TrustStore

ENDORSER_EMAIL = "endorser@example.org"
ENDORSER_NAME = "Test Endorser"


@dataclasses.dataclass(frozen=True)
class SignerFiles(keys.Signer):
    """A Signer plus where its key and certificate were written."""

    key_path: Path = Path()
    cert_path: Path = Path()
    email: str = ""


def _write_signer(tmp: Path, key_pem: bytes, cert_pem: bytes, email: str) -> SignerFiles:
    tmp.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = tmp / "endorser.key", tmp / "endorser.crt"
    key_path.write_bytes(key_pem)
    key_path.chmod(0o600)
    cert_path.write_bytes(cert_pem)
    base = keys.load_signer(key=key_path, cert=cert_path)
    return SignerFiles(base.private_key, base.certificate, base.chain, key_path, cert_path, email)


def _issued_yesterday() -> dt.datetime:
    # Test modules fix their NOW at import; a certificate issued later in a long run
    # would otherwise not yet be valid at that NOW.
    return dt.datetime.now(dt.UTC) - dt.timedelta(days=1)


@pytest.fixture(scope="session")
def _session_endorser_pems() -> tuple[bytes, bytes]:
    return keys.make_self_signed(ENDORSER_EMAIL, ENDORSER_NAME, 30, now=_issued_yesterday())


@pytest.fixture
def signer(tmp_path: Path, _session_endorser_pems: tuple[bytes, bytes]) -> SignerFiles:
    """A self-signed endorser (RSA, SAN e-mail ``endorser@example.org``) with files in tmp."""
    key_pem, cert_pem = _session_endorser_pems
    return _write_signer(tmp_path / "signer", key_pem, cert_pem, ENDORSER_EMAIL)


@pytest.fixture
def make_signer(tmp_path: Path) -> Callable[..., SignerFiles]:
    """Factory for more endorsers: ``make_signer(email=..., name=..., key_type="ec")``."""
    counter = iter(range(1000))

    def make(
        email: str = "other@example.org",
        name: str = "Other Endorser",
        days: int = 30,
        key_type: str = "ec",
        now: dt.datetime | None = None,
    ) -> SignerFiles:
        key_pem, cert_pem = keys.make_self_signed(
            email, name, days, key_type=key_type, now=now or _issued_yesterday()
        )
        return _write_signer(tmp_path / f"signer-{next(counter)}", key_pem, cert_pem, email)

    return make


@pytest.fixture
def trust_store(signer: SignerFiles) -> TrustStore:
    """Trusts exactly ``signer``'s certificate (pinned)."""
    return TrustStore.from_paths([signer.cert_path])


@pytest.fixture
def sign_xml(signer: SignerFiles) -> Callable[..., bytes]:
    """``sign_xml(data, *, now=None, signer=None, email=None) -> bytes``: sign an entry."""
    from imagekit.signing.sign import sign_entry

    def sign(
        data: bytes,
        *,
        now: dt.datetime | None = None,
        signer: keys.Signer | None = None,
        email: str | None = None,
    ) -> bytes:
        when = now or dt.datetime.now(dt.UTC).replace(microsecond=0)
        return sign_entry(data, signer or _default, now=when, email=email)

    _default = signer
    return sign


# --- a tiny PKI for trust tests -----------------------------------------------------------


def make_cert(
    subject_cn: str | x509.Name,
    *,
    issuer: tuple[object, x509.Certificate] | None = None,
    ca: bool = False,
    path_length: int | None = None,
    email: str | None = None,
    not_before: dt.datetime | None = None,
    days: int = 30,
    key: object | None = None,
    basic_constraints: bool = True,
    hash_algorithm: hashes.HashAlgorithm | None = None,
    extensions: tuple[tuple[x509.ExtensionType, bool], ...] = (),
) -> tuple[object, x509.Certificate]:
    """A (key, certificate) pair; self-signed unless ``issuer=(key, cert)`` is given.

    ``extensions``: more (extension, critical) pairs, such as an extended key usage."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = (
        subject_cn
        if isinstance(subject_cn, x509.Name)
        else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    )
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    issuer_key, issuer_cert = issuer if issuer else (key, None)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject if issuer_cert else name)
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
    )
    if basic_constraints:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length), critical=True
        )
    if email:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False
        )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    cert = builder.sign(issuer_key, hash_algorithm or hashes.SHA256())  # type: ignore[arg-type]
    return key, cert


def make_crl(
    issuer: tuple[object, x509.Certificate],
    revoked: list[x509.Certificate],
    *,
    next_update: dt.datetime | None = None,
) -> x509.CertificateRevocationList:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer[1].subject)
        .last_update(now - dt.timedelta(days=40))
        .next_update(next_update or now + dt.timedelta(days=30))
    )
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(cert.serial_number)
            .revocation_date(now - dt.timedelta(hours=1))
            .build()
        )
    return builder.sign(issuer[0], hashes.SHA256())  # type: ignore[arg-type]


def signer_from(key: object, cert: x509.Certificate, *chain: x509.Certificate) -> keys.Signer:
    return keys.Signer(key, cert, tuple(chain))  # type: ignore[arg-type]


def pem(*objects: object) -> bytes:
    return b"".join(o.public_bytes(serialization.Encoding.PEM) for o in objects)  # type: ignore[attr-defined]
