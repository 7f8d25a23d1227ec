"""Which endorser certificates to believe: pinned certificates, CA certificates, CRLs.

``TrustStore.from_paths`` reads PEM/DER files or directories (grid style: ``*.pem``,
``*.crt``, ``hash.0``, ``hash.r0``, ``*.crl``). Every certificate named there is *pinned*:
trusted exactly (byte for byte), for itself, whatever its basicConstraints (an endorser's
self-signed certificate made by ``openssl req -x509`` carries CA:TRUE). A certificate with
basicConstraints CA:TRUE is in addition a trust anchor for the certificates it issues. CRLs
apply to certificates issued by a trusted CA, pinned ones included.

A certificate trusted only through a CA must also be fit to endorse (``_check_endorser_use``):
it carries the e-mail address it endorses as (RFC 822 SAN or subject emailAddress: a CA
vouching for a name vouches for no address), its extended key usage, if it has one, allows
signing for people (e-mail protection, client auth, code signing, any), and it has no
critical extension this code does not understand (RFC 5280 4.2: refuse what you cannot
process). A CRL past its nextUpdate is refused, naming it, unless the store was built with
``unsafe_allow_stale_crls`` (which warns each time a stale CRL is used).

Chain validation is done here by hand rather than with ``cryptography.x509.verification``:
that verifier implements the CA/Browser-forum web profile (SHA-256+ only, mandatory
extensions, TLS EKUs), which rejects every genuine StratusLab certificate (SHA-1, no EKU).
The manual check is deliberately small: issuer name (compared by meaning, ``certs``) and
signature, validity at the checking time, basicConstraints/keyUsage of issuers, path
length, CRLs, weak hashes, the endorser checks above.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from ..entry import format_date
from ..errors import (
    CertificateExpired,
    CertificateRevoked,
    InputError,
    NotFound,
    Untrusted,
    WeakAlgorithm,
)
from .certs import certificate_emails, dn_string, names_equal, same_email

log = logging.getLogger(__name__)

MAX_CHAIN = 8
MIN_RSA_BITS = 2048
_CERT_SUFFIXES = {".pem", ".crt", ".cer", ".der", ".0", ".1", ".2", ".3"}
_CRL_SUFFIXES = {".crl", ".r0", ".r1", ".r2", ".r3"}

# Extended key usages that let a CA-issued certificate endorse (sign for a person or a
# project); a TLS server certificate may not.
ENDORSING_USAGES = frozenset(
    {
        ExtendedKeyUsageOID.EMAIL_PROTECTION,
        ExtendedKeyUsageOID.CLIENT_AUTH,
        ExtendedKeyUsageOID.CODE_SIGNING,
        ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    }
)
# Extensions whose meaning this module checks or that change nothing it decides; any other
# extension marked critical makes a certificate unusable (RFC 5280 4.2).
UNDERSTOOD_EXTENSIONS = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.ISSUER_ALTERNATIVE_NAME,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    }
)


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
    return names_equal(cert.issuer, issuer.subject) and _signature_ok(
        issuer, cert, cert.tbs_certificate_bytes
    )


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def _check_critical_extensions(cert: x509.Certificate) -> None:
    for ext in cert.extensions:
        if ext.critical and ext.oid not in UNDERSTOOD_EXTENSIONS:
            raise Untrusted(
                f"certificate {dn_string(cert.subject)} has a critical extension imagekit "
                f"does not understand ({ext.oid.dotted_string})"
            )


def _check_endorser_use(cert: x509.Certificate, email: str | None) -> None:
    """What a certificate trusted only through a CA must also show (module docstring)."""
    name = dn_string(cert.subject)
    if email is not None:
        emails = certificate_emails(cert)
        if not emails:
            raise Untrusted(
                f"certificate {name} carries no e-mail address, so its CA does not vouch "
                f"for {email}",
                hint="pin the endorser's certificate (give it in --trust) to vouch for it",
            )
        if not any(same_email(email, e) for e in emails):
            raise Untrusted(f"certificate {name} is for {', '.join(emails)}, not {email}")
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not ENDORSING_USAGES & set(usages):
        allowed = ", ".join(getattr(u, "_name", u.dotted_string) for u in usages)
        raise Untrusted(
            f"certificate {name} may not endorse: its extended key usage allows only {allowed}"
        )


@dataclasses.dataclass(frozen=True)
class TrustStore:
    """Endorser certificates trusted for themselves (pinned), CA certificates (anchors),
    CRLs. Every anchor is pinned as well (see the module docstring)."""

    pinned: tuple[x509.Certificate, ...] = ()
    anchors: tuple[x509.Certificate, ...] = ()
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    unsafe_allow_stale_crls: bool = False

    @property
    def is_empty(self) -> bool:
        return not self.pinned and not self.anchors

    @classmethod
    def from_paths(
        cls, paths: Iterable[Path | str], *, unsafe_allow_stale_crls: bool = False
    ) -> TrustStore:
        """Read certificates and CRLs from files and directories (not recursive).

        ``unsafe_allow_stale_crls``: use CRLs past their nextUpdate (with a warning) instead
        of refusing the certificates they cover.
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
        if unsafe_allow_stale_crls:
            log.warning("trust: UNSAFE allow-stale-crls: CRLs past their nextUpdate still count")
        return cls(tuple(pinned), tuple(anchors), tuple(crls), unsafe_allow_stale_crls)

    def is_pinned(self, cert: x509.Certificate) -> bool:
        """Whether ``cert`` itself was given (a CA certificate too: it is trusted for itself,
        whatever its basicConstraints)."""
        der = _der(cert)
        return any(_der(p) == der for p in (*self.pinned, *self.anchors))

    def verify_certificate(
        self,
        cert: x509.Certificate,
        chain: Sequence[x509.Certificate] = (),
        *,
        now: dt.datetime,
        allow_sha1: bool = False,
        email: str | None = None,
    ) -> tuple[x509.Certificate, ...]:
        """Check that ``cert`` is trusted at ``now`` to endorse as ``email``; return the
        path (leaf first; just the leaf for a pinned certificate).

        ``email`` None: no address is claimed (a CA-issued certificate is then not asked to
        carry one). A pinned certificate is still refused if a CRL of a trusted CA that
        issued it revokes it.
        Raises Untrusted (no pin, no chain to an anchor, bad or stale CRL, not fit to
        endorse as ``email``), CertificateExpired, CertificateRevoked, WeakAlgorithm.
        """
        check_key_strength(cert)
        if self.is_pinned(cert):
            check_validity(cert, now)
            if self.crls:  # pinned, yet a CRL of a trusted CA that issued it still counts
                issued = self._build_path(cert, chain) or ()
                for member, issuer in itertools.pairwise(issued):
                    if _der(member) != _der(issuer):
                        self._check_revocation(member, issuer, now)
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
            _check_critical_extensions(member)
            self._check_revocation(member, path[i + 1], now)
        usage = _key_usage(cert)
        if usage is not None and not (usage.digital_signature or usage.content_commitment):
            raise Untrusted(f"certificate {dn_string(cert.subject)} may not sign (keyUsage)")
        _check_endorser_use(cert, email)
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
            if not names_equal(crl.issuer, issuer.subject):
                continue
            if not _signature_ok(issuer, crl, crl.tbs_certlist_bytes):
                raise Untrusted(
                    f"a CRL for {dn_string(crl.issuer)} has an invalid signature",
                    hint="remove the forged or damaged CRL from the trust directory",
                )
            next_update = crl.next_update_utc
            if next_update is not None and now > next_update:
                stale = (
                    f"the CRL of {dn_string(crl.issuer)} is stale: its nextUpdate "
                    f"{format_date(next_update)} has passed"
                )
                if not self.unsafe_allow_stale_crls:
                    raise Untrusted(
                        stale,
                        hint="fetch a fresh CRL from the CA (or, knowingly, allow stale CRLs:"
                        " --unsafe-allow-stale-crls, setting unsafe_allow_stale_crls)",
                    )
                log.warning("trust: UNSAFE: using it anyway: %s", stale)
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
        email: str | None = None,
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


def load_trust(
    options: Iterable[Path | str] = (),
    setting: str | None = None,
    *,
    unsafe_allow_stale_crls: bool = False,
) -> TrustStore:
    """``TrustStore.from_paths(trust_paths(options, setting))``; empty if none configured."""
    return TrustStore.from_paths(
        trust_paths(options, setting), unsafe_allow_stale_crls=unsafe_allow_stale_crls
    )
