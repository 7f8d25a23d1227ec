"""Which endorser certificates to believe: pinned certificates, CA certificates, CRLs.

``TrustStore.from_paths`` reads PEM/DER files or directories (grid style: ``*.pem``,
``*.crt``, ``hash.0``, ``hash.r0``, ``*.crl``). A certificate with basicConstraints CA=true
becomes a trust anchor; any other certificate is *pinned*: it is trusted exactly (byte for
byte), for itself only. CRLs apply to certificates issued by a trusted CA.

Chain validation is done here by hand rather than with ``cryptography.x509.verification``:
that verifier implements the CA/Browser-forum web profile (SHA-256+ only, mandatory
extensions, TLS EKUs), which rejects every genuine StratusLab certificate (SHA-1, no EKU).
The manual check is deliberately small: issuer name and signature, validity at the
checking time, basicConstraints/keyUsage of issuers, path length, CRLs, weak hashes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from ..entry import format_date
from ..errors import (
    CertificateExpired,
    CertificateRevoked,
    InputError,
    NotFound,
    Untrusted,
    WeakAlgorithm,
)
from ._xmldsig import dn_string

MAX_CHAIN = 8
MIN_RSA_BITS = 2048
_CERT_SUFFIXES = {".pem", ".crt", ".cer", ".der", ".0", ".1", ".2", ".3"}
_CRL_SUFFIXES = {".crl", ".r0", ".r1", ".r2", ".r3"}


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def check_key_strength(cert: x509.Certificate) -> None:
    """Refuse RSA keys under 2048 bits and DSA keys (WeakAlgorithm)."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise WeakAlgorithm(f"RSA key of {key.key_size} bits in {dn_string(cert.subject)}")
    if isinstance(key, dsa.DSAPublicKey):
        raise WeakAlgorithm(f"DSA key in {dn_string(cert.subject)}")


def check_validity(cert: x509.Certificate, now: dt.datetime) -> None:
    """CertificateExpired unless ``now`` lies within the certificate's validity."""
    if now < cert.not_valid_before_utc:
        raise CertificateExpired(
            f"certificate {dn_string(cert.subject)} is not valid before "
            f"{format_date(cert.not_valid_before_utc)}",
            hint="use --at DATE to check as of a time inside the certificate's validity",
        )
    if now > cert.not_valid_after_utc:
        raise CertificateExpired(
            f"certificate {dn_string(cert.subject)} expired "
            f"{format_date(cert.not_valid_after_utc)}",
            hint="use --at DATE to check as of a time inside the certificate's validity",
        )


def _check_cert_hash(cert: x509.Certificate, allow_sha1: bool) -> None:
    algo = cert.signature_hash_algorithm
    if algo is None:  # Ed25519/Ed448: fine
        return
    if isinstance(algo, hashes.MD5) or (isinstance(algo, hashes.SHA1) and not allow_sha1):
        raise WeakAlgorithm(
            f"certificate {dn_string(cert.subject)} is signed with {algo.name.upper()}",
            hint="old StratusLab certificates need --allow-sha1",
        )


def _signature_ok(issuer: x509.Certificate, signed: object, tbs: bytes) -> bool:
    """Check a certificate's or CRL's signature with ``issuer``'s key.

    Done by hand because ``verify_directly_issued_by``/``is_signature_valid`` in current
    ``cryptography`` refuse SHA-1 outright, and the StratusLab test PKI is all SHA-1 (the
    caller decides separately whether SHA-1 is acceptable).
    """
    public = issuer.public_key()
    signature: bytes = signed.signature  # type: ignore[attr-defined]
    try:
        algo = signed.signature_hash_algorithm  # type: ignore[attr-defined]
        params = signed.signature_algorithm_parameters  # type: ignore[attr-defined]
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, tbs, params, algo)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, tbs, params)
        elif isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            public.verify(signature, tbs)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    return cert.issuer == issuer.subject and _signature_ok(issuer, cert, cert.tbs_certificate_bytes)


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


@dataclasses.dataclass(frozen=True)
class TrustStore:
    """Pinned endorser certificates, CA certificates (anchors) and CRLs."""

    pinned: tuple[x509.Certificate, ...] = ()
    anchors: tuple[x509.Certificate, ...] = ()
    crls: tuple[x509.CertificateRevocationList, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.pinned and not self.anchors

    @classmethod
    def from_paths(cls, paths: Iterable[Path | str]) -> TrustStore:
        """Read certificates and CRLs from files and directories (not recursive).

        Raises NotFound for a missing path, InputError for a file that is neither.
        """
        pinned: list[x509.Certificate] = []
        anchors: list[x509.Certificate] = []
        crls: list[x509.CertificateRevocationList] = []
        for raw in paths:
            path = Path(raw)
            if path.is_dir():
                files = sorted(
                    p
                    for p in path.iterdir()
                    if p.is_file() and p.suffix.lower() in _CERT_SUFFIXES | _CRL_SUFFIXES
                )
            elif path.is_file():
                files = [path]
            else:
                raise NotFound(f"trust path {path} not found")
            for file in files:
                certs, file_crls = _load_trust_file(file)
                for cert in certs:
                    (anchors if _is_ca(cert) else pinned).append(cert)
                crls.extend(file_crls)
        return cls(tuple(pinned), tuple(anchors), tuple(crls))

    def is_pinned(self, cert: x509.Certificate) -> bool:
        der = _der(cert)
        return any(_der(p) == der for p in self.pinned)

    def verify_certificate(
        self,
        cert: x509.Certificate,
        chain: Sequence[x509.Certificate] = (),
        *,
        now: dt.datetime,
        allow_sha1: bool = False,
    ) -> tuple[x509.Certificate, ...]:
        """Check that ``cert`` is trusted at ``now``; return the path (leaf first).

        Raises Untrusted (no pin, no chain to an anchor, bad CRL), CertificateExpired,
        CertificateRevoked, WeakAlgorithm.
        """
        check_key_strength(cert)
        if self.is_pinned(cert):
            check_validity(cert, now)
            return (cert,)
        if self.is_empty:
            raise Untrusted(
                "no trusted certificates configured",
                hint="give --trust CERT|DIR (or set trust in the config)",
            )
        path = self._build_path(cert, chain)
        if path is None:
            raise Untrusted(
                f"certificate {dn_string(cert.subject)} (issuer {dn_string(cert.issuer)}) "
                "is neither pinned nor issued by a trusted CA",
                hint="add the endorser's certificate or its CA to --trust",
            )
        for i, member in enumerate(path):
            check_validity(member, now)
            if i == len(path) - 1:
                break  # the anchor is trusted by configuration; its own hash is moot
            _check_cert_hash(member, allow_sha1)
            check_key_strength(member)
            self._check_revocation(member, path[i + 1], now)
        usage = _key_usage(cert)
        if usage is not None and not (usage.digital_signature or usage.content_commitment):
            raise Untrusted(f"certificate {dn_string(cert.subject)} may not sign (keyUsage)")
        return path

    def _build_path(
        self, leaf: x509.Certificate, chain: Sequence[x509.Certificate]
    ) -> tuple[x509.Certificate, ...] | None:
        path = [leaf]
        current = leaf
        for _ in range(MAX_CHAIN):
            for anchor in self.anchors:
                if _issued_by(current, anchor) and self._may_issue(anchor, len(path) - 1):
                    return (*path, anchor)
            nxt = next(
                (
                    c
                    for c in chain
                    if c not in path
                    and _issued_by(current, c)
                    and _is_ca(c)
                    and self._may_issue(c, len(path) - 1)
                ),
                None,
            )
            if nxt is None:
                return None
            path.append(nxt)
            current = nxt
        return None

    @staticmethod
    def _may_issue(ca: x509.Certificate, below: int) -> bool:
        """basicConstraints CA (and path length), keyUsage keyCertSign when present."""
        try:
            bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            return False
        if not bc.ca or (bc.path_length is not None and below > bc.path_length):
            return False
        usage = _key_usage(ca)
        return usage is None or usage.key_cert_sign

    def _check_revocation(
        self, cert: x509.Certificate, issuer: x509.Certificate, now: dt.datetime
    ) -> None:
        for crl in self.crls:
            if crl.issuer != issuer.subject:
                continue
            if not _signature_ok(issuer, crl, crl.tbs_certlist_bytes):
                raise Untrusted(
                    f"a CRL for {dn_string(crl.issuer)} has an invalid signature",
                    hint="remove the forged or damaged CRL from the trust directory",
                )
            revoked = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if revoked is not None and revoked.revocation_date_utc <= now:
                raise CertificateRevoked(
                    f"certificate {dn_string(cert.subject)} (serial "
                    f"{cert.serial_number:x}) was revoked "
                    f"{format_date(revoked.revocation_date_utc)}"
                )


def _load_trust_file(
    path: Path,
) -> tuple[list[x509.Certificate], list[x509.CertificateRevocationList]]:
    data = path.read_bytes()
    certs: list[x509.Certificate] = []
    crls: list[x509.CertificateRevocationList] = []
    try:
        if b"-----BEGIN" in data:
            if b"CERTIFICATE-----" in data:
                certs = x509.load_pem_x509_certificates(data)
            if b"X509 CRL-----" in data:
                for block in data.split(b"-----END X509 CRL-----")[:-1]:
                    start = block.index(b"-----BEGIN X509 CRL-----")
                    crls.append(x509.load_pem_x509_crl(block[start:] + b"-----END X509 CRL-----\n"))
        elif path.suffix.lower() in _CRL_SUFFIXES:
            crls = [x509.load_der_x509_crl(data)]
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError as e:
        raise InputError(f"trust file {path}: {e}") from e
    if not certs and not crls:
        raise InputError(f"trust file {path} holds no certificate or CRL")
    return certs, crls


class UnsafeAcceptAnyCertificate(TrustStore):
    """Trust every certificate (key strength and validity still checked).

    For ``imagekit verify --unsafe-no-trust-check`` and a server run without trust
    configuration: proves the maths and endorser = certificate, nothing about who signed.
    """

    @property
    def is_empty(self) -> bool:
        return False

    def verify_certificate(
        self,
        cert: x509.Certificate,
        chain: Sequence[x509.Certificate] = (),
        *,
        now: dt.datetime,
        allow_sha1: bool = False,
    ) -> tuple[x509.Certificate, ...]:
        check_key_strength(cert)
        check_validity(cert, now)
        return (cert, *chain)


def trust_paths(options: Iterable[Path | str] = (), setting: str | None = None) -> list[Path]:
    """Trust locations: the given ones, else the ``trust`` setting (``os.pathsep``-separated)."""
    paths = [Path(p) for p in options]
    if not paths and setting:
        paths = [Path(os.path.expanduser(p)) for p in setting.split(os.pathsep) if p]
    return paths


def load_trust(options: Iterable[Path | str] = (), setting: str | None = None) -> TrustStore:
    """``TrustStore.from_paths(trust_paths(options, setting))``; empty if none configured."""
    return TrustStore.from_paths(trust_paths(options, setting))
