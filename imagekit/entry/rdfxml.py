"""RDF/XML reading and writing of metadata entries.

Reading checks the profile's rules in a fixed order, so a document that breaks several
reports the most structural one: the root and ``xml:base``, the children of ``rdf:RDF``
(one ``rdf:Description``, then at most one ``Signature``), ``rdf:about``, the head
(identifier, bytes, checksums, endorsement, in that order), every known term's value, RDF/XML
well-formedness of the extra elements, then the model's own rules (SHA-1 against the ID,
ranges) and finally the one ``dcterms:type`` the profile requires.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from lxml import etree

from ..errors import InvalidMetadata
from ..image.digests import DigestAlgorithm
from .model import (
    Checksum,
    Endorsement,
    Endorser,
    Entry,
    format_date,
    parse_date,
)
from .vocab import (
    ABOUT,
    BASE_URI,
    DATATYPE,
    DATE_TERMS,
    DSIG,
    ENUM_TERMS,
    HEAD,
    INT_TERMS,
    KNOWN,
    NAMESPACES,
    NOT_A_NUMBER,
    PARSE_TYPE,
    RDF,
    REPEATED,
    TEXT_BY_TAG,
    XML_BASE,
    XML_LANG,
    char_content,
    check_no_text,
    check_property,
    child_elements,
    in_profile_namespace,
    prefixed,
    qname,
    to_fragment,
)
from .xmlsafe import parse_xml

# --- reading ------------------------------------------------------------------------------


def parse_entry_bytes(data: bytes) -> Entry:
    return parse_entry(parse_xml(data))


def parse_entry(root: Any) -> Entry:
    if not isinstance(root, etree._Element):
        raise TypeError("parse_entry takes an lxml element")
    if root.tag != f"{{{RDF}}}RDF":
        raise InvalidMetadata("not-rdf", f"root element is {prefixed(str(root.tag))}, not rdf:RDF")
    base = root.get(XML_BASE)
    if base is None:
        raise InvalidMetadata("missing-xml-base", f'rdf:RDF has no xml:base="{BASE_URI}"')
    if base != BASE_URI:
        raise InvalidMetadata("bad-xml-base", f"xml:base is {base!r}, not {BASE_URI!r}")
    for attr in root.attrib:
        if attr not in (XML_BASE, XML_LANG):
            raise InvalidMetadata("rdf-attribute", f"attribute {prefixed(attr)} on rdf:RDF")
    check_no_text(root, "rdf:RDF")
    for signature in root.iter(f"{{{DSIG}}}Signature"):
        # A signature anywhere but under the root (wrapped in a term, nested in an extra)
        # is how signature-wrapping attacks hide one: refuse it outright.
        if signature.getparent() is not root:
            raise InvalidMetadata(
                "misplaced-signature", "a Signature may only be the last child of rdf:RDF"
            )
    description = _root_description(root)
    return _read_description(description)


def _root_description(root: etree._Element) -> etree._Element:
    children = list(child_elements(root))
    signature = f"{{{DSIG}}}Signature"
    if not children or children[0].tag != f"{{{RDF}}}Description":
        if any(c.tag == f"{{{RDF}}}Description" for c in children):
            raise InvalidMetadata(
                "signature-not-last" if children[0].tag == signature else "unexpected-root-child",
                f"{prefixed(str(children[0].tag))} before rdf:Description",
            )
        raise InvalidMetadata("no-description", "rdf:RDF holds no rdf:Description")
    rest = children[1:]
    if len([c for c in rest if c.tag == signature]) > 1:
        raise InvalidMetadata("multiple-signatures", "more than one Signature element")
    for child in rest:
        if child.tag != signature:
            # Only an XML-DSig Signature may follow the description.
            raise InvalidMetadata(
                "unexpected-root-child",
                f"{prefixed(str(child.tag))} after rdf:Description where only a Signature may be",
            )
    return children[0]


def _read_description(desc: etree._Element) -> Entry:
    about = desc.get(ABOUT)
    if about is None:
        raise InvalidMetadata("missing-about", "rdf:Description has no rdf:about")
    from ..image.identifier import is_identifier

    if not (about.startswith("#") and is_identifier(about[1:])):
        raise InvalidMetadata("bad-about-id", f'rdf:about {about!r} is not "#" + an ID')
    for attr in desc.attrib:
        if attr not in (ABOUT, XML_LANG):
            raise InvalidMetadata("rdf-attribute", f"attribute {prefixed(attr)} on rdf:Description")
    check_no_text(desc, "rdf:Description")

    children = list(child_elements(desc))
    endorsements = [c for c in children if c.tag == qname("slreq", "endorsement")]
    if len(endorsements) > 1:
        raise InvalidMetadata(
            "multiple-endorsements", f"{len(endorsements)} endorsements; exactly one is allowed"
        )

    pos = 0

    def expect(ns: str, local: str, rule: str) -> etree._Element:
        nonlocal pos
        tag = qname(ns, local)
        if pos >= len(children) or children[pos].tag != tag:
            found = prefixed(str(children[pos].tag)) if pos < len(children) else "nothing"
            present = any(c.tag == tag for c in children)
            raise InvalidMetadata(
                "head-order" if present else rule,
                f"expected {ns}:{local} at position {pos + 1} of the description, found {found}",
            )
        pos += 1
        return children[pos - 1]

    ident_el = expect("dcterms", "identifier", "missing-identifier")
    identifier = _literal(ident_el).strip()
    if not is_identifier(identifier):
        raise InvalidMetadata("bad-identifier", f"dcterms:identifier {identifier!r} is not an ID")
    if identifier != about[1:]:
        raise InvalidMetadata(
            "inconsistent-identifiers",
            f"rdf:about {about!r} and dcterms:identifier {identifier!r} differ",
        )
    size_text = _literal(expect("slreq", "bytes", "missing-bytes")).strip()
    if not size_text.isdigit() or not size_text.isascii():
        raise InvalidMetadata("bad-bytes", f"slreq:bytes {size_text!r} is not a whole number")

    checksums = [_read_checksum(expect("slreq", "checksum", "missing-checksum"))]
    while pos < len(children) and children[pos].tag == qname("slreq", "checksum"):
        checksums.append(_read_checksum(children[pos]))
        pos += 1
    endorsement = _read_endorsement(expect("slreq", "endorsement", "missing-endorsement"))

    fields: dict[str, Any] = {name: [] for name in REPEATED.values()}
    extra: list[str] = []
    types = 0
    for child in children[pos:]:
        tag = str(child.tag)
        if tag in HEAD:
            raise InvalidMetadata("head-order", f"{prefixed(tag)} after the endorsement")
        if tag in KNOWN:
            _read_term(child, fields)
            types += tag == qname("dcterms", "type")
        elif in_profile_namespace(tag):
            raise InvalidMetadata("unknown-term", f"{prefixed(tag)} is not a term of the profile")
        else:
            check_property(child)
            extra.append(to_fragment(child))

    entry = Entry(
        identifier=identifier,
        bytes=int(size_text),
        checksums=tuple(checksums),
        endorsement=endorsement,
        extra=tuple(extra),
        **fields,
    )
    # Last, so that documents breaking another rule (most of the conformance corpus lacks a
    # type) report that rule.
    if types != 1:
        raise InvalidMetadata("missing-type", "the description needs exactly one dcterms:type")
    return entry


def _literal(el: etree._Element) -> str:
    """A known literal term's text; refuses element content and RDF attributes."""
    for attr in el.attrib:
        if attr not in (XML_LANG, DATATYPE):
            raise InvalidMetadata(
                "rdf-attribute", f"attribute {prefixed(attr)} on {prefixed(str(el.tag))}"
            )
    for child in child_elements(el):
        raise InvalidMetadata(
            "literal-expected",
            f"{prefixed(str(el.tag))} must hold text, not an element ({prefixed(str(child.tag))})",
        )
    return char_content(el)


def _resource_children(el: etree._Element, allowed: set[str]) -> dict[str, etree._Element]:
    """Children of a ``rdf:parseType="Resource"`` term, each allowed tag at most once."""
    parse_type = el.get(PARSE_TYPE)
    name = prefixed(str(el.tag))
    if parse_type != "Resource":
        raise InvalidMetadata(
            "bad-parsetype", f'{name} has rdf:parseType={parse_type!r}, not "Resource"'
        )
    for attr in el.attrib:
        if attr != PARSE_TYPE:
            raise InvalidMetadata("rdf-attribute", f"attribute {prefixed(attr)} on {name}")
    check_no_text(el, name)
    found: dict[str, etree._Element] = {}
    for child in child_elements(el):
        tag = str(child.tag)
        if tag not in allowed:
            raise InvalidMetadata("unexpected-element", f"{prefixed(tag)} inside {name}")
        if tag in found:
            raise InvalidMetadata("repeated-term", f"{prefixed(tag)} twice inside {name}")
        found[tag] = child
    return found


def _read_checksum(el: etree._Element) -> Checksum:
    algorithm_tag, value_tag = qname("slreq", "algorithm"), qname("slreq", "value")
    parts = _resource_children(el, {algorithm_tag, value_tag})
    if algorithm_tag not in parts or value_tag not in parts:
        raise InvalidMetadata("incomplete-checksum", "checksum needs an algorithm and a value")
    name = _literal(parts[algorithm_tag]).strip()
    try:
        algorithm = DigestAlgorithm(name)  # the XML spelling only: "SHA-1", not "sha1"
    except ValueError:
        known = ", ".join(a.value for a in DigestAlgorithm)
        raise InvalidMetadata(
            "bad-algorithm", f"algorithm {name!r} is not one of {known}"
        ) from None
    return Checksum(algorithm, _literal(parts[value_tag]).strip())


def _read_endorsement(el: etree._Element) -> Endorsement:
    created_tag, endorser_tag = qname("dcterms", "created"), qname("slreq", "endorser")
    parts = _resource_children(el, {created_tag, endorser_tag})
    created = None
    if created_tag in parts:
        created = parse_date(_literal(parts[created_tag]), term="endorsement dcterms:created")
    endorser = None
    if endorser_tag in parts:
        fields = ("email", "subject", "issuer")
        found = _resource_children(parts[endorser_tag], {qname("slreq", f) for f in fields})
        missing = [f for f in fields if qname("slreq", f) not in found]
        if missing:
            raise InvalidMetadata("incomplete-endorser", f"endorser lacks {', '.join(missing)}")
        endorser = Endorser(*(_literal(found[qname("slreq", f)]).strip() for f in fields))
    return Endorsement(created=created, endorser=endorser)


def _read_term(el: etree._Element, fields: dict[str, Any]) -> None:
    tag = str(el.tag)
    text = _literal(el)
    if tag in REPEATED:
        field = REPEATED[tag]
        if field == "locations":
            fields[field].append(text.strip())
            return
        number = text.strip()
        if not (number.isascii() and number.isdigit()):
            raise InvalidMetadata(
                NOT_A_NUMBER[field], f"{prefixed(tag)} {number!r} is not a whole number"
            )
        fields[field].append(int(number))
        return
    if tag in TEXT_BY_TAG:
        field = TEXT_BY_TAG[tag]
    elif tag in DATE_TERMS:
        field = DATE_TERMS[tag]
    elif tag in ENUM_TERMS:
        field = ENUM_TERMS[tag]
    else:
        field = INT_TERMS[tag]
    if field in fields:
        raise InvalidMetadata("repeated-term", f"{prefixed(tag)} appears more than once")
    value: Any = text
    if tag in DATE_TERMS:
        value = parse_date(text, term=prefixed(tag)) if text.strip() else None
    elif tag in ENUM_TERMS:
        value = text.strip() or None
    elif tag in INT_TERMS:
        stripped = text.strip()
        if not (stripped.isascii() and stripped.isdigit()):
            raise InvalidMetadata(
                "bad-serial-number", f"{prefixed(tag)} {stripped!r} is not a whole number"
            )
        value = int(stripped)
    fields[field] = value


# --- writing ------------------------------------------------------------------------------

# Free-order terms in the order the writer uses; (field, namespace, local name, always).
_WRITE_ORDER: tuple[tuple[str, str, str, bool], ...] = (
    ("type", "dcterms", "type", True),
    ("kind", "slterms", "kind", False),
    ("valid", "dcterms", "valid", True),
    ("title", "dcterms", "title", False),
    ("alternative", "dcterms", "alternative", False),
    ("description", "dcterms", "description", True),
    ("creator", "dcterms", "creator", False),
    ("created", "dcterms", "created", True),
    ("publisher", "dcterms", "publisher", False),
    ("format", "dcterms", "format", False),
    ("compression", "dcterms", "compression", True),
    ("replaces", "dcterms", "replaces", False),
    ("is_replaced_by", "dcterms", "isReplacedBy", False),
    ("locations", "slterms", "location", False),
    ("version", "slterms", "version", True),
    ("serial_number", "slterms", "serial-number", False),
    ("hypervisor", "slterms", "hypervisor", False),
    ("disks_bus", "slterms", "disks-bus", False),
    ("inbound_ports", "slterms", "inbound-port", False),
    ("outbound_ports", "slterms", "outbound-port", False),
    ("icmp", "slterms", "icmp", False),
    ("os", "slterms", "os", True),
    ("os_version", "slterms", "os-version", True),
    ("os_arch", "slterms", "os-arch", True),
    ("deprecated", "slterms", "deprecated", False),
)

_INDENT = "  "


def _text_of(value: Any) -> str:
    if isinstance(value, datetime):
        return format_date(value)
    return str(value)


def _add(parent: etree._Element, ns: str, local: str, text: str | None = None) -> etree._Element:
    el = etree.SubElement(parent, qname(ns, local))
    if text:
        el.text = text
    return el


def entry_to_bytes(entry: Entry) -> bytes:
    root = etree.Element(qname("rdf", "RDF"), nsmap=NAMESPACES)
    root.set(XML_BASE, BASE_URI)
    desc = etree.SubElement(root, qname("rdf", "Description"))
    desc.set(ABOUT, "#" + entry.identifier)

    _add(desc, "dcterms", "identifier", entry.identifier)
    _add(desc, "slreq", "bytes", str(entry.bytes))
    for checksum in entry.checksums:
        el = _add(desc, "slreq", "checksum")
        el.set(PARSE_TYPE, "Resource")
        _add(el, "slreq", "algorithm", str(checksum.algorithm))
        _add(el, "slreq", "value", checksum.value)
    endorsement = _add(desc, "slreq", "endorsement")
    endorsement.set(PARSE_TYPE, "Resource")
    if entry.endorsement.created is not None:
        _add(endorsement, "dcterms", "created", format_date(entry.endorsement.created))
    endorser = entry.endorsement.endorser
    if endorser is not None:
        el = _add(endorsement, "slreq", "endorser")
        el.set(PARSE_TYPE, "Resource")
        for name in ("email", "subject", "issuer"):
            _add(el, "slreq", name, getattr(endorser, name))

    for field, ns, local, always in _WRITE_ORDER:
        value = getattr(entry, field)
        if isinstance(value, tuple):
            for item in value:
                _add(desc, ns, local, _text_of(item))
        elif value is not None or always:
            _add(desc, ns, local, None if value is None else _text_of(value))

    for fragment in entry.extra:
        desc.append(etree.fromstring(fragment.encode()))
    _indent(root, 0)
    etree.cleanup_namespaces(root, top_nsmap=NAMESPACES)
    body = etree.tostring(root, encoding="UTF-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body + b"\n"


def _indent(el: etree._Element, level: int) -> None:
    """Two spaces per level; the content of rdf:parseType="Literal" is left as written."""
    children = list(el)
    if not children or el.get(PARSE_TYPE) == "Literal":
        return
    el.text = "\n" + _INDENT * (level + 1)
    for child in children:
        _indent(child, level + 1)
        child.tail = "\n" + _INDENT * (level + 1)
    children[-1].tail = "\n" + _INDENT * level
