"""Endorser keys: load a signer (PEM key + certificate, or PKCS#12), make a self-signed one.

A ``Signer`` is a private key with its certificate and any chain certificates that should
travel in the signature's ``KeyInfo``. New certificates follow grid habits: the subject is
``CN=<name>`` only and the e-mail lives in an RFC 822 subjectAltName (RFC 5280 deprecates
``emailAddress`` in subjects), with a non-CA basicConstraints and a signing keyUsage.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from ..errors import InputError, NotFound
from .certs import certificate_emails

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
KEY_TYPES = ("rsa", "ec")
RSA_BITS = 3072


@dataclasses.dataclass(frozen=True)
class Signer:
    """A private key, its certificate, and chain certificates (leaf's issuer first)."""

    private_key: PrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.private_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise InputError("only RSA and EC (ECDSA) keys can sign entries")
        if _public_der(self.private_key.public_key()) != _public_der(self.certificate.public_key()):
            raise InputError("the private key does not belong to the certificate")

    @property
    def key_type(self) -> str:
        return "rsa" if isinstance(self.private_key, rsa.RSAPrivateKey) else "ec"

    @property
    def emails(self) -> list[str]:
        return certificate_emails(self.certificate)

    def key_pem(self) -> bytes:
        """Unencrypted PKCS#8 PEM (kept in memory only, handed to libxmlsec1)."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def _public_der(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _read(path: Path | str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as e:
        raise NotFound(f"{what} {path} not found") from e
    except OSError as e:
        raise InputError(f"cannot read {what} {path}: {e.strerror}") from e


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate in PEM (one or more blocks) or DER ``data``; InputError if none."""
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as e:
        raise InputError(f"not a certificate: {e}") from e


def load_signer(
    *,
    key: Path | str | None = None,
    cert: Path | str | None = None,
    p12: Path | str | None = None,
    passphrase: bytes | str | None = None,
) -> Signer:
    """Load a signer from ``key`` + ``cert`` (PEM; cert may hold the chain) or ``p12``.

    Raises NotFound for a missing file, InputError for a wrong passphrase, a malformed file,
    a key that does not match the certificate, or a wrong combination of arguments.
    """
    if isinstance(passphrase, str):
        passphrase = passphrase.encode()
    if p12 is not None:
        if key is not None or cert is not None:
            raise InputError("give either a PKCS#12 file or a key and a certificate, not both")
        data = _read(p12, "PKCS#12 file")
        try:
            private_key, certificate, extra = pkcs12.load_key_and_certificates(data, passphrase)
        except (ValueError, TypeError) as e:
            raise InputError(
                f"cannot open {p12}: wrong passphrase or not a PKCS#12 file",
                hint="the passphrase comes from IMAGEKIT_P12_PASSPHRASE or the prompt",
            ) from e
        if private_key is None or certificate is None:
            raise InputError(f"{p12} must hold a private key and its certificate")
        return Signer(private_key, certificate, tuple(extra))  # type: ignore[arg-type]
    if key is None or cert is None:
        raise InputError(
            "signing needs a private key and a certificate",
            hint="give --key and --cert, or --p12 (or set key/cert/p12 in the config)",
        )
    key_data = _read(key, "private key")
    try:
        private_key = serialization.load_pem_private_key(key_data, passphrase)
    except TypeError as e:
        raise InputError(f"{key} is encrypted: a passphrase is needed") from e
    except ValueError as e:
        raise InputError(f"cannot load private key {key}: wrong passphrase or not PEM") from e
    certs = load_certificates(_read(cert, "certificate"))
    return Signer(private_key, certs[0], tuple(certs[1:]))  # type: ignore[arg-type]


def make_private_key(key_type: str = "rsa") -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise InputError(f"key type must be one of {', '.join(KEY_TYPES)}, not {key_type!r}")


def make_certificate(
    private_key: PrivateKey,
    email: str,
    name: str,
    days: int,
    *,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """A self-signed endorser certificate for ``private_key`` (see module docstring)."""
    if days < 1:
        raise InputError("--days must be at least 1")
    if "@" not in email or email.strip() != email:
        raise InputError(f"not an e-mail address: {email!r}")
    if not name.strip():
        raise InputError("the certificate needs a name")
    now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    public = private_key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        # a little slack for clocks that run behind the signer's
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    return builder.sign(private_key, hashes.SHA256())


def make_self_signed(
    email: str,
    name: str,
    days: int = 365,
    *,
    key_type: str = "rsa",
    now: dt.datetime | None = None,
) -> tuple[bytes, bytes]:
    """Return ``(key_pem, cert_pem)``: a new key (unencrypted PKCS#8) and its certificate."""
    private_key = make_private_key(key_type)
    cert = make_certificate(private_key, email, name, days, now=now)
    signer = Signer(private_key, cert)
    return signer.key_pem(), signer.cert_pem()


def make_p12(signer: Signer, passphrase: bytes | str, *, friendly_name: str | None = None) -> bytes:
    """A PKCS#12 bundle of the signer, encrypted with ``passphrase`` (AES-256, PBKDF2)."""
    if isinstance(passphrase, str):
        passphrase = passphrase.encode()
    if not passphrase:
        raise InputError("a PKCS#12 file needs a non-empty passphrase")
    label = (friendly_name or "imagekit endorser").encode()
    return pkcs12.serialize_key_and_certificates(
        label,
        signer.private_key,
        signer.certificate,
        list(signer.chain) or None,
        serialization.BestAvailableEncryption(passphrase),
    )
