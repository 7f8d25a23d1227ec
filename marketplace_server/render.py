"""JSON of one stored entry: the index columns plus every term, from the library's parser."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from imagekit.entry import entry_to_dict, parse_entry_bytes

from .storage import StoredEntry


def entry_dict(entry: StoredEntry, now: datetime) -> dict[str, Any]:
    assert entry.xml is not None
    out = entry.to_dict(now)
    # The bytes were verified at ingest; parsing them again only reads the terms.
    out["entry"] = entry_to_dict(parse_entry_bytes(entry.xml))
    return out


def entry_json(entry: StoredEntry, now: datetime) -> str:
    return json.dumps(entry_dict(entry, now), indent=2, sort_keys=True)


def signature_facts(xml: bytes) -> dict[str, str] | None:
    """What the entry page says about the signature: algorithm, the signer's certificate
    (subject, issuer, SHA-256 fingerprint, validity). From the stored bytes, which were
    verified at ingest; None if they carry no signature (or it cannot be read)."""
    import base64

    from cryptography import x509
    from lxml import etree

    from imagekit.signing.certs import describe_certificate

    ds = "{http://www.w3.org/2000/09/xmldsig#}"
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(xml, parser)
    except etree.XMLSyntaxError:
        return None
    signature = root.find(f"{ds}Signature")
    if signature is None:
        return None
    method = signature.find(f"{ds}SignedInfo/{ds}SignatureMethod")
    algorithm = method.get("Algorithm", "") if method is not None else ""
    cert_text = signature.findtext(f"{ds}KeyInfo/{ds}X509Data/{ds}X509Certificate")
    facts = {
        "algorithm": algorithm.rsplit("#", 1)[-1].upper() or "unknown",
        "algorithm_uri": algorithm,
    }
    if cert_text:
        try:
            cert = x509.load_der_x509_certificate(base64.b64decode("".join(cert_text.split())))
        except ValueError:
            return facts
        described = describe_certificate(cert)
        fp = described["sha256_fingerprint"]
        facts.update(
            subject=described["subject"],
            issuer=described["issuer"],
            fingerprint=":".join(fp[i : i + 2] for i in range(0, len(fp), 2)).upper(),
            not_before=described["not_before"],
            not_after=described["not_after"],
        )
    return facts
