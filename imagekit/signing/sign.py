"""Sign a metadata entry: fill the endorsement from the certificate, add one XML signature.

The signature profile (DESIGN 4.3): enveloped ``Signature`` as the last child of ``rdf:RDF``,
one ``Reference URI=""`` with only the enveloped-signature transform, SignedInfo canonicalized
with inclusive C14N 1.0 with comments, RSA-SHA256 or ECDSA-SHA256, SHA-256 digest, and
``KeyInfo/X509Data`` with the signer's certificate followed by its chain.

Endorsement fill rules (StratusLab corpus README):

- several endorsements: the first is kept, emptied and refilled, the others removed;
- no endorsement: one is created after the checksums;
- an empty endorsement: filled;
- an endorsement made only of the standard fields (``dcterms:created``, ``slreq:endorser``
  with ``email``/``subject``/``issuer``), i.e. one written by a previous signing: refilled,
  because the old fields describe the old certificate and the old time;
- an endorsement with any other content (``ex:marker`` in the corpus): left as it is.
  Entry validation then decides whether the result can be signed at all.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import xmlsec
from lxml import etree

from ..entry import format_date
from ..entry.xmlsafe import parse_xml
from ..errors import InputError, InvalidMetadata, SignatureInvalid
from . import _xmldsig as X
from .certs import dn_string, same_email
from .keys import Signer

ENDORSEMENT = f"{{{X.SLREQ_NS}}}endorsement"
ENDORSER = f"{{{X.SLREQ_NS}}}endorser"
CREATED = f"{{{X.DCTERMS_NS}}}created"
_HEAD = (
    f"{{{X.SLREQ_NS}}}checksum",
    f"{{{X.SLREQ_NS}}}bytes",
    f"{{{X.DCTERMS_NS}}}identifier",
)
_STANDARD_ENDORSER_FIELDS = {f"{{{X.SLREQ_NS}}}{n}" for n in ("email", "subject", "issuer")}


def endorser_email(signer: Signer, email: str | None = None) -> str:
    """The e-mail to endorse with: the certificate's (RFC 822 SAN), else ``email``.

    Raises InputError when there is none, or ``email`` is not one the certificate names.
    """
    emails = signer.emails
    if not emails:
        if not email:
            raise InputError(
                "the certificate carries no e-mail address",
                hint="give --email (or set email in the config)",
            )
        return email
    if email is None:
        return emails[0]
    for candidate in emails:
        if same_email(candidate, email):
            return candidate
    raise InputError(f"the certificate is for {', '.join(emails)}, not {email}")


def _remove(element: etree._Element) -> None:
    """Remove ``element``, keeping the text around it sensible.

    Text after it that is only whitespace replaces the whitespace before it (so what
    follows keeps its indentation); any other text is kept where it was.
    """
    parent = element.getparent()
    if parent is None:
        raise ValueError("cannot remove the root")
    previous = element.getprevious()
    tail = element.tail or ""
    before = previous.tail if previous is not None else parent.text
    keep_both = bool(tail.strip() or (before or "").strip())
    joined = (before or "") + tail if keep_both else (tail or before)
    if previous is not None:
        previous.tail = joined
    else:
        parent.text = joined
    parent.remove(element)


def strip_signatures(root: etree._Element) -> int:
    """Remove every ``ds:Signature`` in the document; return how many there were."""
    signatures = list(root.iter(X.SIGNATURE))
    for sig in signatures:
        _remove(sig)
    return len(signatures)


def _indent_before(element: etree._Element) -> str:
    previous = element.getprevious()
    text = previous.tail if previous is not None else element.getparent().text  # type: ignore[union-attr]
    return (text or "\n").rpartition("\n")[2]


def _is_standard(endorsement: etree._Element) -> bool:
    children = [c for c in endorsement if isinstance(c.tag, str)]
    for child in children:
        if child.tag == CREATED:
            continue
        if child.tag != ENDORSER:
            return False
        fields = [f for f in child if isinstance(f.tag, str)]
        if any(f.tag not in _STANDARD_ENDORSER_FIELDS for f in fields):
            return False
    return True


def _is_empty(element: etree._Element) -> bool:
    return len(element) == 0 and not (element.text or "").strip()


def fill_endorsement(
    description: etree._Element, signer: Signer, *, now: dt.datetime, email: str | None = None
) -> bool:
    """Apply the fill rules (module docstring) to ``rdf:Description``; True if filled."""
    endorsements = description.findall(ENDORSEMENT)
    if not endorsements:
        anchor = next((c for tag in _HEAD for c in reversed(description.findall(tag))), None)
        endorsement = etree.Element(ENDORSEMENT, nsmap={"slreq": X.SLREQ_NS})
        if anchor is None:
            indent = (description.text or "\n\t\t").rpartition("\n")[2]
            description.insert(0, endorsement)
            endorsement.tail = description.text or "\n"
            description.text = "\n" + indent
        else:
            anchor.addnext(endorsement)
            endorsement.tail = anchor.tail
    else:
        endorsement = endorsements[0]
        for extra in endorsements[1:]:
            _remove(extra)
        if not (len(endorsements) > 1 or _is_empty(endorsement) or _is_standard(endorsement)):
            return False
    mail = endorser_email(signer, email)
    indent = _indent_before(endorsement)
    step = "\t" if "\t" in indent else "    "
    for child in list(endorsement):
        endorsement.remove(child)
    endorsement.attrib.clear()
    endorsement.set(X.RDF_PARSETYPE, "Resource")
    endorsement.text = "\n" + indent + step
    created = etree.SubElement(endorsement, CREATED, nsmap={"dcterms": X.DCTERMS_NS})
    if now.tzinfo is None:
        raise ValueError("signing time must be timezone-aware")
    created.text = format_date(now)
    created.tail = "\n" + indent + step
    endorser = etree.SubElement(endorsement, ENDORSER, nsmap={"slreq": X.SLREQ_NS})
    endorser.set(X.RDF_PARSETYPE, "Resource")
    endorser.tail = "\n" + indent
    endorser.text = "\n" + indent + step * 2
    values = (
        ("email", mail),
        ("subject", dn_string(signer.certificate.subject)),
        ("issuer", dn_string(signer.certificate.issuer)),
    )
    for i, (name, value) in enumerate(values):
        field = etree.SubElement(endorser, f"{{{X.SLREQ_NS}}}{name}")
        field.text = value
        field.tail = "\n" + indent + (step if i == len(values) - 1 else step * 2)
    return True


def _description(root: etree._Element) -> etree._Element:
    if root.tag != X.RDF_RDF:
        raise InvalidMetadata("root", f"the root element must be rdf:RDF, not {root.tag}")
    descriptions = root.findall(X.RDF_DESCRIPTION)
    if len(descriptions) != 1:
        raise InvalidMetadata(
            "description", f"expected one rdf:Description, found {len(descriptions)}"
        )
    return descriptions[0]


def _sign_method(signer: Signer) -> tuple[Any, str]:
    if signer.key_type == "rsa":
        return xmlsec.constants.TransformRsaSha256, X.RSA_SHA256
    return xmlsec.constants.TransformEcdsaSha256, X.ECDSA_SHA256


def append_signature(root: etree._Element, signer: Signer) -> etree._Element:
    """Sign the document of ``root`` (which must carry no signature) in place."""
    transform, _ = _sign_method(signer)
    children = [c for c in root if isinstance(c.tag, str)]
    if children:
        last = children[-1]
        last.tail = (last.tail or "").rstrip(" \t") or "\n"
        if not last.tail.endswith("\n"):
            last.tail += "\n"
    sig = xmlsec.template.create(root, xmlsec.constants.TransformInclC14NWithComments, transform)
    root.append(sig)
    ref = xmlsec.template.add_reference(sig, xmlsec.constants.TransformSha256, uri="")
    xmlsec.template.add_transform(ref, xmlsec.constants.TransformEnveloped)
    ctx = xmlsec.SignatureContext()
    try:
        ctx.key = xmlsec.Key.from_memory(signer.key_pem(), xmlsec.constants.KeyDataFormatPem)
        ctx.sign(sig)
    except xmlsec.Error as e:  # a key libxmlsec1 cannot use: our bug or a broken key
        raise SignatureInvalid(f"libxmlsec1 could not sign: {e}") from e
    # KeyInfo is outside the signed content (enveloped transform); written here so the
    # certificate order (leaf, then chain) is ours, not libxmlsec1's.
    key_info = etree.SubElement(sig, X.ds("KeyInfo"))
    x509_data = etree.SubElement(key_info, X.ds("X509Data"))
    for der in X.chain_der((signer.certificate, *signer.chain)):
        etree.SubElement(x509_data, X.ds("X509Certificate")).text = X.b64encode_lines(der)
    sig.tail = None
    return sig


def sign_entry(data: bytes, signer: Signer, *, now: dt.datetime, email: str | None = None) -> bytes:
    """Return ``data`` re-signed by ``signer`` at ``now`` (see the module docstring).

    Old signatures are removed, the endorsement filled, the entry validated
    (``imagekit.entry.parse_entry``) and one new signature appended.
    Raises UnsafeXML / InvalidMetadata for a bad entry, InputError for a missing e-mail.
    """
    from ..entry import parse_entry

    root = parse_xml(data)
    description = _description(root)
    strip_signatures(root)
    fill_endorsement(description, signer, now=now, email=email)
    parse_entry(root)
    append_signature(root, signer)
    return etree.tostring(root.getroottree(), encoding="UTF-8", xml_declaration=True)
