"""RDF/XML reading and writing of metadata entries (the public face is ``imagekit.entry.model``).

Reading checks the profile's rules in a fixed order, so a document that breaks several
reports the most structural one: the root and ``xml:base``, the children of ``rdf:RDF``
(one ``rdf:Description``, then at most one ``Signature``), ``rdf:about``, the head
(identifier, bytes, checksums, endorsement, in that order), every known term's value, RDF/XML
well-formedness of the extra elements, then the model's own rules (SHA-1 against the ID,
ranges) and finally the one ``dcterms:type`` the profile requires.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from lxml import etree

from ..errors import InvalidMetadata
from ..image.digests import DigestAlgorithm
from .model import (
    TEXT_TERMS,
    Checksum,
    Endorsement,
    Endorser,
    Entry,
    format_date,
    parse_date,
)
from .xmlsafe import parse_xml

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DCTERMS = "http://purl.org/dc/terms/"
SLREQ = "http://mp.stratuslab.eu/slreq#"
SLTERMS = "http://mp.stratuslab.eu/slterms#"
DSIG = "http://www.w3.org/2000/09/xmldsig#"
XML = "http://www.w3.org/XML/1998/namespace"
BASE_URI = "http://mp.stratuslab.eu/"

NAMESPACES = {"rdf": RDF, "dcterms": DCTERMS, "slreq": SLREQ, "slterms": SLTERMS}
_PREFIX_OF = {uri: prefix for prefix, uri in NAMESPACES.items()}

_XML_BASE = f"{{{XML}}}base"
_XML_LANG = f"{{{XML}}}lang"
_ABOUT = f"{{{RDF}}}about"
_PARSE_TYPE = f"{{{RDF}}}parseType"
_DATATYPE = f"{{{RDF}}}datatype"
_RESOURCE = f"{{{RDF}}}resource"
_NODE_ID = f"{{{RDF}}}nodeID"
_RDF_ID = f"{{{RDF}}}ID"


def _q(ns: str, local: str) -> str:
    return f"{{{NAMESPACES[ns]}}}{local}"


def _name(tag: str) -> str:
    """``{uri}local`` as ``prefix:local`` for messages (Clark notation for other URIs)."""
    if tag.startswith("{"):
        uri, local = tag[1:].split("}", 1)
        if uri in _PREFIX_OF:
            return f"{_PREFIX_OF[uri]}:{local}"
    return tag


# Terms after the head, by qualified name: (field, how to read it).
_TEXT_BY_TAG = {_q(ns, local): field for field, (ns, local) in TEXT_TERMS.items()}
_DATE_TERMS = {_q("dcterms", "valid"): "valid", _q("dcterms", "created"): "created"}
_ENUM_TERMS = {
    _q("slterms", "kind"): "kind",
    _q("dcterms", "format"): "format",
    _q("dcterms", "compression"): "compression",
}
_REPEATED = {
    _q("slterms", "location"): "locations",
    _q("slterms", "inbound-port"): "inbound_ports",
    _q("slterms", "outbound-port"): "outbound_ports",
    _q("slterms", "icmp"): "icmp",
}
_INT_TERMS = {_q("slterms", "serial-number"): "serial_number"}
_HEAD = {
    _q("dcterms", "identifier"),
    _q("slreq", "bytes"),
    _q("slreq", "checksum"),
    _q("slreq", "endorsement"),
}
_KNOWN = set(_TEXT_BY_TAG) | set(_DATE_TERMS) | set(_ENUM_TERMS) | set(_REPEATED) | set(_INT_TERMS)
# Rule for a repeated number that is not one (ranges are the Entry's to check).
_NOT_A_NUMBER = {"inbound_ports": "bad-port", "outbound_ports": "bad-port", "icmp": "bad-icmp"}
# Namespaces whose every element the profile defines: anything unknown there is an error.
_CLOSED_NAMESPACES = (RDF, SLREQ, SLTERMS, DSIG)


def _in_profile_namespace(tag: str) -> bool:
    return any(tag.startswith("{" + ns + "}") for ns in _CLOSED_NAMESPACES)


# --- reading ------------------------------------------------------------------------------


def parse_entry_bytes(data: bytes) -> Entry:
    return parse_entry(parse_xml(data))


def parse_entry(root: Any) -> Entry:
    if not isinstance(root, etree._Element):
        raise TypeError("parse_entry takes an lxml element")
    if root.tag != f"{{{RDF}}}RDF":
        raise InvalidMetadata("not-rdf", f"root element is {_name(str(root.tag))}, not rdf:RDF")
    base = root.get(_XML_BASE)
    if base is None:
        raise InvalidMetadata("missing-xml-base", f'rdf:RDF has no xml:base="{BASE_URI}"')
    if base != BASE_URI:
        raise InvalidMetadata("bad-xml-base", f"xml:base is {base!r}, not {BASE_URI!r}")
    for attr in root.attrib:
        if attr not in (_XML_BASE, _XML_LANG):
            raise InvalidMetadata("rdf-attribute", f"attribute {_name(attr)} on rdf:RDF")
    _check_no_text(root, "rdf:RDF")
    for signature in root.iter(f"{{{DSIG}}}Signature"):
        # A signature anywhere but under the root (wrapped in a term, nested in an extra)
        # is how signature-wrapping attacks hide one: refuse it outright.
        if signature.getparent() is not root:
            raise InvalidMetadata(
                "misplaced-signature", "a Signature may only be the last child of rdf:RDF"
            )
    description = _root_description(root)
    return _read_description(description)


def _elements(parent: etree._Element) -> Iterator[etree._Element]:
    """Element children only (comments and processing instructions are not content)."""
    for child in parent:
        if isinstance(child.tag, str):
            yield child


def _text(el: etree._Element) -> str:
    """The character content of a literal element (comments inside are skipped)."""
    parts = [el.text or ""]
    parts.extend(child.tail or "" for child in el)
    return "".join(parts)


def _check_no_text(el: etree._Element, where: str) -> None:
    if _text(el).strip():
        raise InvalidMetadata("stray-text", f"text directly inside {where}")


def _root_description(root: etree._Element) -> etree._Element:
    children = list(_elements(root))
    signature = f"{{{DSIG}}}Signature"
    if not children or children[0].tag != f"{{{RDF}}}Description":
        if any(c.tag == f"{{{RDF}}}Description" for c in children):
            raise InvalidMetadata(
                "signature-not-last" if children[0].tag == signature else "unexpected-root-child",
                f"{_name(str(children[0].tag))} before rdf:Description",
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
                f"{_name(str(child.tag))} after rdf:Description where only a Signature may be",
            )
    return children[0]


def _read_description(desc: etree._Element) -> Entry:
    about = desc.get(_ABOUT)
    if about is None:
        raise InvalidMetadata("missing-about", "rdf:Description has no rdf:about")
    from ..image.identifier import is_identifier

    if not (about.startswith("#") and is_identifier(about[1:])):
        raise InvalidMetadata("bad-about-id", f'rdf:about {about!r} is not "#" + an ID')
    for attr in desc.attrib:
        if attr not in (_ABOUT, _XML_LANG):
            raise InvalidMetadata("rdf-attribute", f"attribute {_name(attr)} on rdf:Description")
    _check_no_text(desc, "rdf:Description")

    children = list(_elements(desc))
    endorsements = [c for c in children if c.tag == _q("slreq", "endorsement")]
    if len(endorsements) > 1:
        raise InvalidMetadata(
            "multiple-endorsements", f"{len(endorsements)} endorsements; exactly one is allowed"
        )

    pos = 0

    def expect(ns: str, local: str, rule: str) -> etree._Element:
        nonlocal pos
        tag = _q(ns, local)
        if pos >= len(children) or children[pos].tag != tag:
            found = _name(str(children[pos].tag)) if pos < len(children) else "nothing"
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
    while pos < len(children) and children[pos].tag == _q("slreq", "checksum"):
        checksums.append(_read_checksum(children[pos]))
        pos += 1
    endorsement = _read_endorsement(expect("slreq", "endorsement", "missing-endorsement"))

    fields: dict[str, Any] = {name: [] for name in _REPEATED.values()}
    extra: list[str] = []
    types = 0
    for child in children[pos:]:
        tag = str(child.tag)
        if tag in _HEAD:
            raise InvalidMetadata("head-order", f"{_name(tag)} after the endorsement")
        if tag in _KNOWN:
            _read_term(child, fields)
            types += tag == _q("dcterms", "type")
        elif _in_profile_namespace(tag):
            raise InvalidMetadata("unknown-term", f"{_name(tag)} is not a term of the profile")
        else:
            _check_property(child)
            extra.append(_fragment(child))

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
        if attr not in (_XML_LANG, _DATATYPE):
            raise InvalidMetadata(
                "rdf-attribute", f"attribute {_name(attr)} on {_name(str(el.tag))}"
            )
    for child in _elements(el):
        raise InvalidMetadata(
            "literal-expected",
            f"{_name(str(el.tag))} must hold text, not an element ({_name(str(child.tag))})",
        )
    return _text(el)


def _resource_children(el: etree._Element, allowed: set[str]) -> dict[str, etree._Element]:
    """Children of a ``rdf:parseType="Resource"`` term, each allowed tag at most once."""
    parse_type = el.get(_PARSE_TYPE)
    name = _name(str(el.tag))
    if parse_type != "Resource":
        raise InvalidMetadata(
            "bad-parsetype", f'{name} has rdf:parseType={parse_type!r}, not "Resource"'
        )
    for attr in el.attrib:
        if attr != _PARSE_TYPE:
            raise InvalidMetadata("rdf-attribute", f"attribute {_name(attr)} on {name}")
    _check_no_text(el, name)
    found: dict[str, etree._Element] = {}
    for child in _elements(el):
        tag = str(child.tag)
        if tag not in allowed:
            raise InvalidMetadata("unexpected-element", f"{_name(tag)} inside {name}")
        if tag in found:
            raise InvalidMetadata("repeated-term", f"{_name(tag)} twice inside {name}")
        found[tag] = child
    return found


def _read_checksum(el: etree._Element) -> Checksum:
    algorithm_tag, value_tag = _q("slreq", "algorithm"), _q("slreq", "value")
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
    created_tag, endorser_tag = _q("dcterms", "created"), _q("slreq", "endorser")
    parts = _resource_children(el, {created_tag, endorser_tag})
    created = None
    if created_tag in parts:
        created = parse_date(_literal(parts[created_tag]), term="endorsement dcterms:created")
    endorser = None
    if endorser_tag in parts:
        fields = ("email", "subject", "issuer")
        found = _resource_children(parts[endorser_tag], {_q("slreq", f) for f in fields})
        missing = [f for f in fields if _q("slreq", f) not in found]
        if missing:
            raise InvalidMetadata("incomplete-endorser", f"endorser lacks {', '.join(missing)}")
        endorser = Endorser(*(_literal(found[_q("slreq", f)]).strip() for f in fields))
    return Endorsement(created=created, endorser=endorser)


def _read_term(el: etree._Element, fields: dict[str, Any]) -> None:
    tag = str(el.tag)
    text = _literal(el)
    if tag in _REPEATED:
        field = _REPEATED[tag]
        if field == "locations":
            fields[field].append(text.strip())
            return
        number = text.strip()
        if not (number.isascii() and number.isdigit()):
            raise InvalidMetadata(
                _NOT_A_NUMBER[field], f"{_name(tag)} {number!r} is not a whole number"
            )
        fields[field].append(int(number))
        return
    if tag in _TEXT_BY_TAG:
        field = _TEXT_BY_TAG[tag]
    elif tag in _DATE_TERMS:
        field = _DATE_TERMS[tag]
    elif tag in _ENUM_TERMS:
        field = _ENUM_TERMS[tag]
    else:
        field = _INT_TERMS[tag]
    if field in fields:
        raise InvalidMetadata("repeated-term", f"{_name(tag)} appears more than once")
    value: Any = text
    if tag in _DATE_TERMS:
        value = parse_date(text, term=_name(tag)) if text.strip() else None
    elif tag in _ENUM_TERMS:
        value = text.strip() or None
    elif tag in _INT_TERMS:
        stripped = text.strip()
        if not (stripped.isascii() and stripped.isdigit()):
            raise InvalidMetadata(
                "bad-serial-number", f"{_name(tag)} {stripped!r} is not a whole number"
            )
        value = int(stripped)
    fields[field] = value


# RDF/XML syntax for the elements the profile does not know (RDF/XML 1.1, section 7.2).
_PROPERTY_SYNTAX_ATTRS = {_XML_LANG, _DATATYPE, _RDF_ID, _PARSE_TYPE, _RESOURCE, _NODE_ID}


def _check_property(el: etree._Element) -> None:
    """Refuse a property element that is not well-formed RDF/XML."""
    name = _name(str(el.tag))
    if not str(el.tag).startswith("{"):
        raise InvalidMetadata("unqualified-element", f"element {name} has no namespace")
    parse_type = el.get(_PARSE_TYPE)
    children = list(_elements(el))
    if parse_type == "Literal":
        return
    if parse_type is not None:
        if parse_type != "Resource":
            raise InvalidMetadata("bad-parsetype", f"{name} has rdf:parseType={parse_type!r}")
        _check_no_text(el, name)
        for child in children:
            _check_property(child)
        return
    if children:
        # Without a parseType, element content is exactly one node element.
        if len(children) != 1 or _text(el).strip():
            raise InvalidMetadata(
                "rdf-resource",
                f'{name} holds several elements without rdf:parseType="Resource"',
            )
        _check_node(children[0])
        return
    if _text(el).strip():
        for attr in el.attrib:
            if attr not in (_XML_LANG, _DATATYPE, _RDF_ID):
                raise InvalidMetadata(
                    "rdf-attribute", f"attribute {_name(attr)} on {name}, which holds text"
                )
    # An empty property element may carry rdf:resource, rdf:nodeID or property attributes.


def _check_node(el: etree._Element) -> None:
    name = _name(str(el.tag))
    if not str(el.tag).startswith("{"):
        raise InvalidMetadata("unqualified-element", f"element {name} has no namespace")
    if _text(el).strip():
        raise InvalidMetadata("rdf-resource", f"node element {name} holds text")
    for child in _elements(el):
        _check_property(child)


@functools.lru_cache(maxsize=4096)
def canonical_fragment(text: str) -> str:
    """Check an extra element given as XML text and return its canonical form.

    Entry uses this on every ``extra`` item, so fragments built in code (or from JSON) are
    held to the same rules as those read from a document. Raises UnsafeXML or
    InvalidMetadata ("not-well-formed", "bad-extra", "unknown-term", "misplaced-signature",
    or an RDF/XML rule).
    """
    if not isinstance(text, str):
        raise TypeError("an extra element is XML text")
    root = parse_xml(text.encode("utf-8"))
    tag = str(root.tag)
    if tag in _HEAD or tag in _KNOWN:
        raise InvalidMetadata("bad-extra", f"{_name(tag)} is a term of the profile, not an extra")
    if _in_profile_namespace(tag):
        raise InvalidMetadata("unknown-term", f"{_name(tag)} is not a term of the profile")
    if next(root.iter(f"{{{DSIG}}}Signature"), None) is not None:
        raise InvalidMetadata("misplaced-signature", "a Signature inside an extra element")
    _check_property(root)
    return _fragment(root)


def _fragment(el: etree._Element) -> str:
    """An extra element as a self-contained canonical fragment (exclusive C14N declares the
    namespaces it uses and nothing inherited, so it reads the same wherever it is put).

    Layout whitespace between elements is dropped (insignificant in RDF/XML outside
    ``rdf:parseType="Literal"``), so the writer can indent the fragment like the rest.
    """
    copy = etree.fromstring(etree.tostring(el, with_tail=False))
    etree.strip_elements(copy, etree.Comment, etree.ProcessingInstruction, with_tail=False)
    _strip_layout(copy)
    return etree.tostring(copy, method="c14n", exclusive=True, with_comments=False).decode()


def _strip_layout(el: etree._Element) -> None:
    if el.get(_PARSE_TYPE) == "Literal" or not len(el):
        return
    if el.text is not None and not el.text.strip():
        el.text = None
    for child in el:
        if child.tail is not None and not child.tail.strip():
            child.tail = None
        _strip_layout(child)


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
    el = etree.SubElement(parent, _q(ns, local))
    if text:
        el.text = text
    return el


def entry_to_bytes(entry: Entry) -> bytes:
    root = etree.Element(_q("rdf", "RDF"), nsmap=NAMESPACES)
    root.set(_XML_BASE, BASE_URI)
    desc = etree.SubElement(root, _q("rdf", "Description"))
    desc.set(_ABOUT, "#" + entry.identifier)

    _add(desc, "dcterms", "identifier", entry.identifier)
    _add(desc, "slreq", "bytes", str(entry.bytes))
    for checksum in entry.checksums:
        el = _add(desc, "slreq", "checksum")
        el.set(_PARSE_TYPE, "Resource")
        _add(el, "slreq", "algorithm", str(checksum.algorithm))
        _add(el, "slreq", "value", checksum.value)
    endorsement = _add(desc, "slreq", "endorsement")
    endorsement.set(_PARSE_TYPE, "Resource")
    if entry.endorsement.created is not None:
        _add(endorsement, "dcterms", "created", format_date(entry.endorsement.created))
    endorser = entry.endorsement.endorser
    if endorser is not None:
        el = _add(endorsement, "slreq", "endorser")
        el.set(_PARSE_TYPE, "Resource")
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
    if not children or el.get(_PARSE_TYPE) == "Literal":
        return
    el.text = "\n" + _INDENT * (level + 1)
    for child in children:
        _indent(child, level + 1)
        child.tail = "\n" + _INDENT * (level + 1)
    children[-1].tail = "\n" + _INDENT * level
