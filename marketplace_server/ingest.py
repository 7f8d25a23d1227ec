"""Accept an uploaded entry: every check is the library's, none is re-implemented here.

``imagekit.signing.verify.verify_entry`` parses the bytes safely
(``imagekit.entry.xmlsafe``), validates the StratusLab profile
(``imagekit.entry.parse_entry``), checks the one enveloped signature,
that the endorser is the certificate, and the certificate's trust. The server adds only what
is its own: the columns it indexes, the certificate that binds the endorser e-mail (trust
on first use, checked in storage), and (in storage) "not older than the latest".

Expired entries are accepted (a registry mirrors history; lists report them as ``expired``).
"""

from __future__ import annotations

import base64
import hashlib
import logging
from datetime import datetime

from cryptography import x509

from imagekit.entry.model import LocationScheme, check_location
from imagekit.entry.xmlsafe import parse_xml
from imagekit.errors import ImagekitError, InvalidMetadata, VerificationError
from imagekit.market.summary import EntryColumns
from imagekit.signing.certs import certificate_fingerprint, dn_string
from imagekit.signing.trust import TrustStore, UnsafeAcceptAnyCertificate, load_trust
from imagekit.signing.verify import verify_entry

from .config import ServerConfig
from .storage import NewEntry, SignerCert, Storage

_log = logging.getLogger(__name__)
_DS = "{http://www.w3.org/2000/09/xmldsig#}"


class Ingestor:
    """Verifies uploads according to the server's trust configuration."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._trust = _make_trust(config)
        # open mode: who may take over an e-mail bound to another certificate
        self._vouch = load_trust(config.vouch) if config.vouch and self._trust is None else None

    @property
    def mode(self) -> str:
        return "any valid signature" if self.config.any_valid_signature else "trusted endorsers"

    def ingest(self, data: bytes, *, now: datetime) -> NewEntry:
        """Verify ``data`` and return the row to store; raise InputError/VerificationError."""
        trust = self._trust if self._trust is not None else UnsafeAcceptAnyCertificate()
        verified = verify_entry(
            data, trust, now=now, allow_sha1=self.config.allow_sha1, allow_expired=True
        )
        entry = verified.entry
        email = entry.endorser_email
        created = entry.endorsement_created
        if not email or created is None:
            raise InvalidMetadata("endorsement", "a published entry needs an endorser and a date")
        if not self.config.allow_file_locations and any(
            check_location(url) is LocationScheme.FILE for url in entry.locations
        ):
            raise InvalidMetadata("file-location", "this registry does not accept file: locations")
        return NewEntry(
            **EntryColumns.of(entry, email=email, created=created),
            xml=data,
            etag=hashlib.sha256(data).hexdigest(),
            signer=signer_cert(verified.certificate, vouched=self._vouches(data, now)),
        )

    def _vouches(self, data: bytes, now: datetime) -> bool:
        """True if the server's trust (``--trust``, or in open mode ``--vouch``) accepts the
        entry's certificate: then it may take over its e-mail's binding. The whole
        verification again, so every rule of trust (e-mail in a CA's certificate...) holds."""
        if self._trust is not None:
            return True  # verified against it already
        if self._vouch is None:
            return False
        try:
            verify_entry(
                data, self._vouch, now=now, allow_sha1=self.config.allow_sha1, allow_expired=True
            )
        except VerificationError:
            return False
        return True


def signer_cert(cert: x509.Certificate, *, vouched: bool) -> SignerCert:
    return SignerCert(certificate_fingerprint(cert), dn_string(cert.subject), vouched)


def stored_signer(xml: bytes) -> x509.Certificate:
    """The signing certificate of stored (verified at ingest) bytes: the first
    ``X509Certificate`` of the Signature, the last child of the root."""
    root = parse_xml(xml)
    node = root[-1].find(f"{_DS}KeyInfo/{_DS}X509Data/{_DS}X509Certificate") if len(root) else None
    if node is None or not node.text:
        raise InvalidMetadata("no-certificate", "the stored entry carries no certificate")
    return x509.load_der_x509_certificate(base64.b64decode("".join(node.text.split())))


def bind_existing(storage: Storage, *, now: datetime) -> int:
    """Bind each endorser stored before bindings existed to the certificate of its first
    upload (what trust on first use would have recorded); return how many were bound."""
    bound = 0
    for email in storage.unbound_emails():
        xml = storage.first_xml(email)
        try:
            cert = stored_signer(xml) if xml is not None else None
        except (ImagekitError, ValueError) as e:
            _log.warning("cannot bind endorser %s: %s", email, e)
            continue
        if cert is not None and storage.bind_if_unbound(
            email, signer_cert(cert, vouched=False), now=now
        ):
            bound += 1
    return bound


def _make_trust(config: ServerConfig) -> TrustStore | None:
    """None in the open-registry mode: each upload is then checked against the certificate
    it carries (signature, endorser = certificate, certificate validity), trust being left
    to the clients, which verify every entry locally anyway."""
    if config.any_valid_signature:
        return None
    return load_trust(config.trust)
