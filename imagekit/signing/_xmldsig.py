"""XML-DSig and X.509 details shared by signing, verification and trust (private).

Algorithm URIs, the strict shape of the one signature profile imagekit accepts, base64.
Distinguished names and certificate details are ``certs``' job (one comparison for all).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence

from cryptography import x509

from ..entry.vocab import DCTERMS, DSIG, RDF, SLREQ

# the profile's namespaces, defined once with its vocabulary
DS_NS, RDF_NS, DCTERMS_NS, SLREQ_NS = DSIG, RDF, DCTERMS, SLREQ

SIGNATURE = f"{{{DS_NS}}}Signature"
RDF_RDF = f"{{{RDF_NS}}}RDF"
RDF_DESCRIPTION = f"{{{RDF_NS}}}Description"
RDF_PARSETYPE = f"{{{RDF_NS}}}parseType"


def ds(local: str) -> str:
    return f"{{{DS_NS}}}{local}"


C14N = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
C14N_WITH_COMMENTS = C14N + "#WithComments"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
EXC_C14N_WITH_COMMENTS = EXC_C14N + "WithComments"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"

# SignedInfo canonicalization: any of the four C14N 1.0 forms is safe for SignedInfo.
CANONICALIZATIONS = frozenset({C14N, C14N_WITH_COMMENTS, EXC_C14N, EXC_C14N_WITH_COMMENTS})

_MORE = "http://www.w3.org/2001/04/xmldsig-more#"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
RSA_SHA256 = _MORE + "rsa-sha256"
ECDSA_SHA256 = _MORE + "ecdsa-sha256"

# signature method URI -> (key family, is SHA-1)
SIGNATURE_METHODS: dict[str, tuple[str, bool]] = {
    RSA_SHA1: ("rsa", True),
    RSA_SHA256: ("rsa", False),
    _MORE + "rsa-sha384": ("rsa", False),
    _MORE + "rsa-sha512": ("rsa", False),
    _MORE + "ecdsa-sha1": ("ec", True),
    ECDSA_SHA256: ("ec", False),
    _MORE + "ecdsa-sha384": ("ec", False),
    _MORE + "ecdsa-sha512": ("ec", False),
}

SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
# digest method URI -> hashlib name
DIGEST_METHODS: dict[str, str] = {
    SHA1: "sha1",
    SHA256: "sha256",
    _MORE + "sha384": "sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512": "sha512",
}


def digest(method: str, data: bytes) -> bytes:
    return hashlib.new(DIGEST_METHODS[method], data).digest()


def b64decode(text: str | None) -> bytes:
    """Decode XML-DSig base64 (line breaks and spaces allowed); ValueError if malformed."""
    compact = re.sub(r"\s+", "", text or "")
    return base64.b64decode(compact, validate=True)


def b64encode_lines(data: bytes, width: int = 76) -> str:
    text = base64.b64encode(data).decode("ascii")
    return "\n".join(text[i : i + width] for i in range(0, len(text), width))


# --- certificates (names, e-mails, fingerprints: see certs.py) ---------------------------


def chain_der(certs: Sequence[x509.Certificate]) -> list[bytes]:
    from cryptography.hazmat.primitives.serialization import Encoding

    return [c.public_bytes(Encoding.DER) for c in certs]
