"""Certificates and distinguished names: the one way imagekit compares them.

Endorsements carry DNs as RFC 2253/4514 strings (Java's form in the StratusLab corpus),
certificates carry ASN.1 names, and site policies carry whatever an administrator typed.
All three are compared here, by meaning, never as raw strings:

- attribute types by OID: keywords in any case (``cn``, ``CN``), their aliases (``E`` and
  ``EMAILADDRESS``, ``S`` and ``ST``, ``SN`` and ``SURNAME``), dotted OIDs with or without
  the ``OID.`` prefix;
- values after unescaping (``\\,``, ``\\2C``), ``#hex`` DER encodings decoded (RFC 4514
  2.4: Java writes emailAddress so), legacy ``"quoted"`` values (RFC 2253 parsers accept
  them), compared with insignificant spaces removed and case folded (caseIgnoreMatch with
  RFC 4518 space handling, simplified);
- the RDN sequence in order (most specific first, as RFC 4514 writes it), the attributes of
  a multi-valued RDN in any order.

``dn_matches(text, name)`` (string against certificate), ``dn_equal(a, b)`` (two strings),
``names_equal(a, b)`` (two certificate names, as chain building and CRL matching need) all
reduce to ``parse_dn``/``normalize_name`` and compare the results.
"""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from ..entry import format_date

__all__ = [
    "NormalizedDN",
    "certificate_emails",
    "certificate_fingerprint",
    "describe_certificate",
    "dn_equal",
    "dn_matches",
    "dn_string",
    "find_dn",
    "names_equal",
    "normalize_name",
    "parse_dn",
    "same_email",
]

# keyword (upper case) -> OID; aliases map to the same OID
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
    "POSTALCODE": NameOID.POSTAL_CODE.dotted_string,
}
_OID = re.compile(r"\d+(\.\d+)+")
_HEX_PAIR = re.compile(r"[0-9A-Fa-f]{2}")

# RDNs in string order, each a sorted tuple of (OID, normalized value)
NormalizedDN = tuple[tuple[tuple[str, str], ...], ...]


# --- e-mail addresses -------------------------------------------------------------------


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


# --- distinguished names ----------------------------------------------------------------


def dn_string(name: x509.Name) -> str:
    """The RFC 2253/4514 string of a name, most specific RDN first (Java's order)."""
    return name.rfc4514_string()


def _norm_value(value: str) -> str:
    # caseIgnoreMatch with insignificant-space handling (RFC 4518, simplified).
    return " ".join(value.split()).casefold()


def _der_string(data: bytes) -> str:
    """Decode the DER string behind a ``#hex`` attribute value."""
    if len(data) < 2:
        raise ValueError("short DER value")
    tag, length, offset = data[0], data[1], 2
    if length & 0x80:
        n = length & 0x7F
        if not 1 <= n <= 4:
            raise ValueError("bad DER length")
        length = int.from_bytes(data[2 : 2 + n], "big")
        offset = 2 + n
    body = data[offset : offset + length]
    if len(body) != length or offset + length != len(data):
        raise ValueError("bad DER length")
    if tag == 0x1E:  # BMPString
        return body.decode("utf-16-be")
    if tag == 0x1C:  # UniversalString
        return body.decode("utf-32-be")
    if tag == 0x0C:  # UTF8String
        return body.decode("utf-8")
    if tag in (0x13, 0x16, 0x14, 0x1A, 0x12):  # Printable, IA5, Teletex, Visible, Numeric
        return body.decode("latin-1")
    raise ValueError(f"unsupported DER string tag {tag:#x}")


def _split_unescaped(text: str, sep: str) -> list[str]:
    """Split at ``sep`` outside backslash escapes and double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    if quoted:
        raise ValueError("unbalanced quotes")
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    out = bytearray()
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            pair = value[i + 1 : i + 3]
            if _HEX_PAIR.fullmatch(pair):
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


def _attribute_oid(key: str) -> str:
    key = key.strip()
    oid = _KEYWORDS.get(key.upper())
    if oid is not None:
        return oid
    bare = key[4:] if key.upper().startswith("OID.") else key
    if not _OID.fullmatch(bare):
        raise ValueError(f"unknown attribute type {key!r}")
    return bare


def _attribute_value(raw: str) -> str:
    raw = raw.strip()
    if raw.startswith("#"):
        return _der_string(bytes.fromhex(raw[1:]))  # RFC 4514 2.4
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return _unescape(raw[1:-1])  # RFC 2253 legacy quoting
    return _unescape(raw)


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
            attrs.append((_attribute_oid(key), _norm_value(_attribute_value(raw))))
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


def find_dn(text: str) -> NormalizedDN | None:
    """``parse_dn(text)``, or None when ``text`` is not a DN."""
    try:
        return parse_dn(text)
    except (ValueError, UnicodeDecodeError):
        return None


def dn_matches(text: str, name: x509.Name) -> bool:
    """Whether the DN string ``text`` names ``name`` (False if ``text`` is malformed)."""
    parsed = find_dn(text)
    return parsed is not None and parsed == normalize_name(name)


def dn_equal(a: str, b: str) -> bool:
    """Whether two DN strings name the same entity (False if either is malformed)."""
    pa, pb = find_dn(a), find_dn(b)
    return pa is not None and pa == pb


def names_equal(a: x509.Name, b: x509.Name) -> bool:
    """Whether two certificate names are the same name by meaning (RFC 5280 7.1, simplified):
    an issuer written as UTF8String matches a subject written as PrintableString."""
    return a == b or normalize_name(a) == normalize_name(b)


# --- describing certificates ------------------------------------------------------------


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lower-case hex."""
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
