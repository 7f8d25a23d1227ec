"""Verify a signed metadata entry: a pure function from bytes, trust and time to proof.

``verify_entry`` checks, in this order, and raises the first failure:

1. safe parsing (no DTD, entities, XInclude) within the cost limits of
   ``imagekit.entry.xmlsafe.LIMITS`` (namespace declarations, elements, attributes, depth,
   text lengths), so that a hostile document is refused before anything canonicalizes it
   or does cryptography: UnsafeXML;
2. shape: exactly one ``ds:Signature``, the last child of ``rdf:RDF``, with exactly one
   ``Reference URI=""`` whose only transform is enveloped-signature, and ``KeyInfo`` holding
   only X.509 certificates, at most ``MAX_KEYINFO_CERTIFICATES`` of them (UnsafeXML past
   that): SignatureMissing / SignatureInvalid;
3. algorithms: SHA-1 (and RSA < 2048 bits) only with ``allow_sha1``: WeakAlgorithm;
4. the maths, by libxmlsec1 with the key of the embedded certificate preset, so no key is
   looked up anywhere else: SignatureInvalid;
5. the signed content: the document minus the Signature, minus comments (that is what a
   ``URI=""`` reference digests), canonicalized again here and checked against the signed
   ``DigestValue``; the entry is then parsed from *those* bytes and nothing else. Comments
   are not signed, so a comment planted inside a value (``jane<!---->.tester``) cannot
   change what is read; wrapped or duplicated elements cannot be read either;
6. the endorser (e-mail, subject, issuer) equals the certificate (DNs compared by meaning,
   ``imagekit.signing.certs``): EndorserMismatch;
7. the endorsement is not dated after ``present`` (the real time; ``now`` unless verifying
   as of a past date) by more than ``MAX_CLOCK_SKEW``: FutureDated (an entry "from 2099"
   would otherwise outrank every genuine one, on the server and in the launcher's rollback
   memory);
8. the certificate is trusted at ``now`` to endorse as the entry's e-mail (pinned, or
   chained to a CA and carrying that e-mail, see ``imagekit.signing.trust``; CRLs):
   Untrusted / CertificateRevoked / CertificateExpired;
9. ``dcterms:valid`` has not passed at ``now`` unless ``allow_expired``: Expired.

Certificate validity is checked at ``now`` (the verification time, ``--at`` on the command
line), not at the endorsement's ``created``: that date is the signer's own claim (a thief
of an expired key would simply backdate it), and the genuine StratusLab entries carry
``created`` dates outside their certificates' validity.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
from typing import TYPE_CHECKING

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from lxml import etree

from ..entry import format_date
from ..entry.xmlsafe import MAX_KEYINFO_CERTIFICATES, parse_xml
from ..errors import (
    ChecksumMismatch,
    EndorserMismatch,
    Expired,
    FutureDated,
    InvalidMetadata,
    SignatureInvalid,
    SignatureMissing,
    SizeMismatch,
    UnsafeXML,
    WeakAlgorithm,
)
from . import _xmldsig as X
from .certs import certificate_emails, dn_matches, dn_string, same_email
from .trust import TrustStore, check_key_strength

# How far in the future (by the verifier's clock) an endorsement may be dated: clocks of
# signers and verifiers drift, but not by much on machines that sign and launch images.
MAX_CLOCK_SKEW = dt.timedelta(minutes=5)

if TYPE_CHECKING:
    from ..entry import Entry
    from ..image.digests import Digests


@dataclasses.dataclass(frozen=True)
class VerifiedEntry:
    """Proof that ``xml`` carries a valid, trusted signature over ``entry``.

    Built only by ``verify_entry``. ``xml`` is the original bytes (store them unchanged);
    ``entry`` was parsed from the signed content; ``certificate`` signed it.
    """

    entry: Entry
    xml: bytes
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()
    signature_method: str = ""
    signed_content: bytes = b""


@dataclasses.dataclass(frozen=True)
class _SignatureShape:
    signature: etree._Element
    signature_method: str
    digest_method: str
    digest_value: bytes
    certificates: tuple[x509.Certificate, ...]


def _children(element: etree._Element) -> list[etree._Element]:
    """Element children; comments and processing instructions count as offences."""
    out = []
    for child in element:
        if not isinstance(child.tag, str):
            raise SignatureInvalid(f"comment or processing instruction inside {element.tag}")
        out.append(child)
    return out


def _only(element: etree._Element, expected: list[str], where: str) -> list[etree._Element]:
    children = _children(element)
    if [c.tag for c in children] != expected or (element.text or "").strip():
        names = ", ".join(str(c.tag).rpartition("}")[2] for c in children)
        raise SignatureInvalid(f"unexpected structure in {where}: {names or 'empty'}")
    for child in children:
        if (child.tail or "").strip():
            raise SignatureInvalid(f"text inside {where}")
    return children


def _find_signature(root: etree._Element) -> etree._Element:
    signatures = list(root.iter(X.SIGNATURE))
    if not signatures:
        raise SignatureMissing("the entry is not signed")
    if len(signatures) > 1:
        raise SignatureInvalid(f"{len(signatures)} Signature elements; exactly one is allowed")
    sig = signatures[0]
    if sig.getparent() is not root:
        raise SignatureInvalid("the Signature must be a child of the document root")
    if sig.getnext() is not None:
        raise SignatureInvalid("the Signature must be the last child of the document root")
    if (sig.tail or "").strip():
        raise SignatureInvalid("text after the Signature")
    if len(sig) == 0:
        raise SignatureMissing("the Signature element is empty: nothing to verify")
    return sig


def _check_shape(sig: etree._Element, *, allow_sha1: bool) -> _SignatureShape:
    parts = _children(sig)
    tags = [p.tag for p in parts]
    if tags not in (
        [X.ds("SignedInfo"), X.ds("SignatureValue"), X.ds("KeyInfo")],
        [X.ds("SignedInfo"), X.ds("SignatureValue")],
    ):
        raise SignatureInvalid("Signature must hold SignedInfo, SignatureValue, KeyInfo only")
    if len(parts) == 2:
        raise SignatureInvalid("the Signature carries no certificate (KeyInfo/X509Data)")
    signed_info, _, key_info = parts
    c14n, method, reference = _only(
        signed_info,
        [X.ds("CanonicalizationMethod"), X.ds("SignatureMethod"), X.ds("Reference")],
        "SignedInfo (exactly one Reference)",
    )
    if c14n.get("Algorithm") not in X.CANONICALIZATIONS or len(c14n):
        raise SignatureInvalid(f"canonicalization {c14n.get('Algorithm')} not accepted")
    sign_uri = method.get("Algorithm", "")
    if sign_uri not in X.SIGNATURE_METHODS or len(method):
        raise SignatureInvalid(f"signature method {sign_uri} not accepted")
    if reference.get("URI") != "":
        raise SignatureInvalid(
            f'the Reference must be URI="" (the whole document), not {reference.get("URI")!r}'
        )
    transforms, digest_method, digest_value = _only(
        reference,
        [X.ds("Transforms"), X.ds("DigestMethod"), X.ds("DigestValue")],
        "Reference",
    )
    transform_list = _children(transforms)
    if (
        len(transform_list) != 1
        or transform_list[0].tag != X.ds("Transform")
        or transform_list[0].get("Algorithm") != X.ENVELOPED
        or len(transform_list[0])
        or (transform_list[0].text or "").strip()
    ):
        raise SignatureInvalid("the only transform allowed is enveloped-signature")
    digest_uri = digest_method.get("Algorithm", "")
    if digest_uri not in X.DIGEST_METHODS or len(digest_method):
        raise SignatureInvalid(f"digest method {digest_uri} not accepted")
    if not allow_sha1 and (X.SIGNATURE_METHODS[sign_uri][1] or digest_uri == X.SHA1):
        raise WeakAlgorithm(
            "the signature uses SHA-1",
            hint="entries signed by StratusLab tools need --allow-sha1",
        )
    try:
        digest = X.b64decode(digest_value.text)
    except ValueError as e:
        raise SignatureInvalid("DigestValue is not base64") from e
    (x509_data,) = _only(key_info, [X.ds("X509Data")], "KeyInfo (X509Data only)")
    cert_nodes = _children(x509_data)
    if len(cert_nodes) > MAX_KEYINFO_CERTIFICATES:
        # each one may be tried as an issuer of each other one: refuse before decoding
        raise UnsafeXML(
            f"KeyInfo carries {len(cert_nodes)} certificates (at most {MAX_KEYINFO_CERTIFICATES})"
        )
    if not cert_nodes or any(c.tag != X.ds("X509Certificate") for c in cert_nodes):
        raise SignatureInvalid("X509Data must hold X509Certificate elements only")
    certs = []
    for node in cert_nodes:
        try:
            certs.append(x509.load_der_x509_certificate(X.b64decode(node.text)))
        except ValueError as e:
            raise SignatureInvalid(f"an embedded certificate is malformed: {e}") from e
    return _SignatureShape(sig, sign_uri, digest_uri, digest, tuple(certs))


def _check_maths(shape: _SignatureShape) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    leaf = shape.certificates[0]
    family = X.SIGNATURE_METHODS[shape.signature_method][0]
    ctx = xmlsec.SignatureContext()
    try:
        ctx.key = xmlsec.Key.from_memory(
            leaf.public_bytes(Encoding.DER), xmlsec.constants.KeyDataFormatCertDer
        )
    except xmlsec.Error as e:
        raise SignatureInvalid(f"libxmlsec1 cannot use the embedded certificate: {e}") from e
    key_is_rsa = isinstance(leaf.public_key(), rsa.RSAPublicKey)
    if (family == "rsa") != key_is_rsa:
        raise SignatureInvalid("the signature method does not match the certificate's key")
    try:
        ctx.verify(shape.signature)
    except xmlsec.Error as e:
        raise SignatureInvalid(
            "the signature does not verify (content or signature changed)"
        ) from e


def _signed_content(root: etree._Element, shape: _SignatureShape) -> bytes:
    """The bytes the Reference digested, re-derived and checked against DigestValue."""
    sig = shape.signature
    # the enveloped transform drops the Signature element, not the text after it
    previous = sig.getprevious()
    if sig.tail:
        if previous is not None:
            previous.tail = (previous.tail or "") + sig.tail
        else:
            root.text = (root.text or "") + sig.tail
    root.remove(sig)
    content = etree.tostring(
        root.getroottree(), method="c14n", exclusive=False, with_comments=False
    )
    if not hmac.compare_digest(X.digest(shape.digest_method, content), shape.digest_value):
        raise SignatureInvalid("the signed content does not match the digest")
    return content


def _check_endorser(entry: Entry, cert: x509.Certificate) -> None:
    endorsement = entry.endorsement
    endorser = endorsement.endorser if endorsement is not None else None
    if endorser is None:
        raise EndorserMismatch("the signed entry names no endorser")
    if not dn_matches(endorser.subject, cert.subject):
        raise EndorserMismatch(
            f"endorser subject {endorser.subject!r} is not the certificate's "
            f"{dn_string(cert.subject)!r}"
        )
    if not dn_matches(endorser.issuer, cert.issuer):
        raise EndorserMismatch(
            f"endorser issuer {endorser.issuer!r} is not the certificate's "
            f"{dn_string(cert.issuer)!r}"
        )
    emails = certificate_emails(cert)
    # A certificate without an e-mail (the StratusLab test CA issued such) cannot confirm
    # one; the address is then the signer's claim, which only a pin can back (the trust
    # store refuses it for a certificate trusted through a CA).
    if emails and not any(same_email(endorser.email, e) for e in emails):
        raise EndorserMismatch(
            f"endorser email {endorser.email} is not in the certificate ({', '.join(emails)})"
        )


def _check_not_future(entry: Entry, present: dt.datetime) -> None:
    created = entry.endorsement_created
    if created is not None and created > present + MAX_CLOCK_SKEW:
        minutes = int(MAX_CLOCK_SKEW.total_seconds() // 60)
        raise FutureDated(
            f"the endorsement is dated {format_date(created)}, in the future (now "
            f"{format_date(present)}, {minutes} minutes of clock skew allowed)",
            hint="the signer's clock is wrong, or the entry was made to outrank genuine ones",
        )


def verify_entry(
    data: bytes,
    trust: TrustStore,
    *,
    now: dt.datetime,
    allow_sha1: bool = False,
    allow_expired: bool = False,
    present: dt.datetime | None = None,
) -> VerifiedEntry:
    """Verify signed entry ``data`` as of ``now``; return the proof (see module docstring).

    ``present``: the real time, when ``now`` is a past date to verify as of (``--at``):
    the endorsement must not be dated after it (default: ``now``).

    Raises UnsafeXML, InvalidMetadata, SignatureMissing, SignatureInvalid, WeakAlgorithm,
    EndorserMismatch, FutureDated, Untrusted, CertificateRevoked, CertificateExpired, Expired.
    """
    from ..entry import parse_entry

    if now.tzinfo is None or (present is not None and present.tzinfo is None):
        raise ValueError("now and present must be timezone-aware")
    root = parse_xml(data)
    sig = _find_signature(root)
    shape = _check_shape(sig, allow_sha1=allow_sha1)
    leaf = shape.certificates[0]
    check_key_strength(leaf)
    _check_maths(shape)
    content = _signed_content(root, shape)
    signed_root = parse_xml(content)
    if signed_root.tag != X.RDF_RDF:
        raise InvalidMetadata("root", "the signed document's root is not rdf:RDF")
    top = [c for c in signed_root if isinstance(c.tag, str)]
    if [c.tag for c in top] != [X.RDF_DESCRIPTION]:
        raise InvalidMetadata(
            "description", "the signed document must hold exactly one rdf:Description"
        )
    entry = parse_entry(signed_root)
    _check_endorser(entry, leaf)
    _check_not_future(entry, present or now)
    path = trust.verify_certificate(
        leaf, shape.certificates[1:], now=now, allow_sha1=allow_sha1, email=entry.endorser_email
    )
    if not allow_expired and entry.is_expired(now):
        valid = format_date(entry.valid) if entry.valid else "?"
        raise Expired(
            f"the entry expired at {valid} (dcterms:valid)",
            hint="--allow-expired accepts it anyway",
        )
    return VerifiedEntry(
        entry=entry,
        xml=data,
        certificate=leaf,
        chain=tuple(path[1:]),
        signature_method=shape.signature_method,
        signed_content=content,
    )


def check_image_digests(entry: Entry, digests: Digests) -> None:
    """Check image ``digests`` against the entry's ``bytes`` and every listed checksum.

    Every checksum of the entry whose algorithm was computed is compared; if none of the
    entry's algorithms was computed the check cannot pass. Hex values compare numerically
    (StratusLab stripped leading zeros).
    Raises SizeMismatch, ChecksumMismatch.
    """
    if entry.bytes is not None and digests.size != entry.bytes:
        raise SizeMismatch(f"image has {digests.size} bytes, the entry says {entry.bytes}")
    compared = 0
    for checksum in entry.checksums:
        actual = digests.values.get(checksum.algorithm)
        if actual is None:
            continue
        compared += 1
        if int(actual, 16) != int(checksum.value, 16):
            raise ChecksumMismatch(
                f"{checksum.algorithm} of the image is {actual}, the entry says {checksum.value}"
            )
    if not compared:
        raise ChecksumMismatch(
            "none of the entry's checksums ("
            + ", ".join(str(c.algorithm) for c in entry.checksums)
            + ") was computed"
        )
