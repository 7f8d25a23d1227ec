"""XML-DSig and X.509 details shared by signing, verification and trust (private).

Algorithm URIs, the strict shape of the one signature profile imagekit accepts, and
distinguished-name handling: endorsements carry RFC 2253 strings (Java's form in the
StratusLab corpus), certificates carry ASN.1 names, and the two are compared as parsed
attribute lists, never as raw strings.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence

from cryptography import x509
from cryptography.x509.oid import NameOID

from ..entry import format_date
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


# --- certificates ------------------------------------------------------------------------


def certificate_emails(cert: x509.Certificate) -> list[str]:
    """E-mail addresses a certificate vouches for: RFC 822 SANs, then subject emailAddress."""
    emails: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        emails.extend(san.get_values_for_type(x509.RFC822Name))
    except x509.ExtensionNotFound:
        pass
    for attr in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS):
        value = attr.value if isinstance(attr.value, str) else attr.value.decode()
        if value not in emails:
            emails.append(value)
    return emails


def same_email(a: str, b: str) -> bool:
    """Local parts compared exactly, domains case-insensitively (RFC 5321)."""
    la, _, da = a.strip().rpartition("@")
    lb, _, db = b.strip().rpartition("@")
    return la == lb and da.lower() == db.lower()


def dn_string(name: x509.Name) -> str:
    """The RFC 2253/4514 string of a name, most specific RDN first (Java's order)."""
    return name.rfc4514_string()


# --- distinguished-name comparison -------------------------------------------------------

_KEYWORDS = {
    "CN": NameOID.COMMON_NAME.dotted_string,
    "C": NameOID.COUNTRY_NAME.dotted_string,
    "L": NameOID.LOCALITY_NAME.dotted_string,
    "ST": NameOID.STATE_OR_PROVINCE_NAME.dotted_string,
    "S": NameOID.STATE_OR_PROVINCE_NAME.dotted_string,
    "O": NameOID.ORGANIZATION_NAME.dotted_string,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME.dotted_string,
    "STREET": NameOID.STREET_ADDRESS.dotted_string,
    "DC": NameOID.DOMAIN_COMPONENT.dotted_string,
    "UID": NameOID.USER_ID.dotted_string,
    "EMAILADDRESS": NameOID.EMAIL_ADDRESS.dotted_string,
    "E": NameOID.EMAIL_ADDRESS.dotted_string,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER.dotted_string,
    "GIVENNAME": NameOID.GIVEN_NAME.dotted_string,
    "SN": NameOID.SURNAME.dotted_string,
    "SURNAME": NameOID.SURNAME.dotted_string,
    "TITLE": NameOID.TITLE.dotted_string,
    "INITIALS": NameOID.INITIALS.dotted_string,
    "DNQUALIFIER": NameOID.DN_QUALIFIER.dotted_string,
    "PSEUDONYM": NameOID.PSEUDONYM.dotted_string,
    "GENERATIONQUALIFIER": NameOID.GENERATION_QUALIFIER.dotted_string,
}

NormalizedDN = tuple[tuple[tuple[str, str], ...], ...]


def _norm_value(value: str) -> str:
    # caseIgnoreMatch with insignificant-space handling (RFC 4518, simplified).
    return " ".join(value.split()).casefold()


def _der_string(data: bytes) -> str:
    """Decode the DER string behind a ``#hex`` attribute value (Java writes emailAddress so)."""
    if len(data) < 2:
        raise ValueError("short DER value")
    tag, length, offset = data[0], data[1], 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[2 : 2 + n], "big")
        offset = 2 + n
    body = data[offset : offset + length]
    if len(body) != length or offset + length != len(data):
        raise ValueError("bad DER length")
    if tag == 0x1E:
        return body.decode("utf-16-be")
    if tag == 0x1C:
        return body.decode("utf-32-be")
    if tag in (0x0C, 0x13, 0x16, 0x14, 0x1A, 0x12):
        return body.decode("utf-8" if tag == 0x0C else "latin-1")
    raise ValueError(f"unsupported DER string tag {tag:#x}")


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, current, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    out = bytearray()
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            pair = value[i + 1 : i + 3]
            if re.fullmatch(r"[0-9A-Fa-f]{2}", pair):
                out += bytes.fromhex(pair)
                i += 3
                continue
            if i + 1 >= len(value):
                raise ValueError("dangling escape")
            out += value[i + 1].encode()
            i += 2
            continue
        out += ch.encode()
        i += 1
    return out.decode("utf-8")


def parse_dn(text: str) -> NormalizedDN:
    """Parse an RFC 2253/4514 string into normalized RDNs; ValueError if malformed."""
    text = text.strip()
    if not text:
        return ()
    rdns = []
    for rdn_text in _split_unescaped(text, ","):
        attrs = []
        for ava in _split_unescaped(rdn_text, "+"):
            key, eq, raw = ava.partition("=")
            if not eq:
                raise ValueError(f"not an attribute=value pair: {ava!r}")
            key = key.strip()
            oid = _KEYWORDS.get(key.upper())
            if oid is None:
                if not re.fullmatch(r"\d+(\.\d+)+", key.removeprefix("OID.")):
                    raise ValueError(f"unknown attribute type {key!r}")
                oid = key.removeprefix("OID.")
            raw = raw.strip()
            # '#hex' is the DER encoding of the value (RFC 4514 2.4)
            value = _der_string(bytes.fromhex(raw[1:])) if raw.startswith("#") else _unescape(raw)
            attrs.append((oid, _norm_value(value)))
        rdns.append(tuple(sorted(attrs)))
    return tuple(rdns)


def normalize_name(name: x509.Name) -> NormalizedDN:
    """The certificate name in the same form as ``parse_dn`` (string order: reversed ASN.1)."""
    rdns = []
    for rdn in reversed(name.rdns):
        attrs = []
        for attr in rdn:
            value = attr.value if isinstance(attr.value, str) else attr.value.decode("latin-1")
            attrs.append((attr.oid.dotted_string, _norm_value(value)))
        rdns.append(tuple(sorted(attrs)))
    return tuple(rdns)


def dn_matches(text: str, name: x509.Name) -> bool:
    try:
        return parse_dn(text) == normalize_name(name)
    except (ValueError, UnicodeDecodeError):
        return False


def certificate_fingerprint(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives import hashes

    return cert.fingerprint(hashes.SHA256()).hex()


def describe_certificate(cert: x509.Certificate) -> dict[str, str]:
    return {
        "subject": dn_string(cert.subject),
        "issuer": dn_string(cert.issuer),
        "serial": format(cert.serial_number, "x"),
        "not_before": format_date(cert.not_valid_before_utc),
        "not_after": format_date(cert.not_valid_after_utc),
        "sha256_fingerprint": certificate_fingerprint(cert),
        "emails": ",".join(certificate_emails(cert)),
    }


def chain_der(certs: Sequence[x509.Certificate]) -> list[bytes]:
    from cryptography.hazmat.primitives.serialization import Encoding

    return [c.public_bytes(Encoding.DER) for c in certs]
