"""The RDF/XML vocabulary of the profile, shared by the model, the reader and the writer.

Namespaces, the table of text terms, qualified names, and the RDF/XML syntax rules for the
elements the profile does not define (kept as canonical fragments). Nothing here knows the
``Entry`` model, so the model can check its extra elements without importing the reader.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping

from lxml import etree

from ..errors import InvalidMetadata
from .xmlsafe import parse_xml

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DCTERMS = "http://purl.org/dc/terms/"
SLREQ = "http://mp.stratuslab.eu/slreq#"
SLTERMS = "http://mp.stratuslab.eu/slterms#"
DSIG = "http://www.w3.org/2000/09/xmldsig#"
XML = "http://www.w3.org/XML/1998/namespace"
BASE_URI = "http://mp.stratuslab.eu/"

NAMESPACES = {"rdf": RDF, "dcterms": DCTERMS, "slreq": SLREQ, "slterms": SLTERMS}
PREFIX_OF = {uri: prefix for prefix, uri in NAMESPACES.items()}

XML_BASE = f"{{{XML}}}base"
XML_LANG = f"{{{XML}}}lang"
ABOUT = f"{{{RDF}}}about"
PARSE_TYPE = f"{{{RDF}}}parseType"
DATATYPE = f"{{{RDF}}}datatype"
RESOURCE = f"{{{RDF}}}resource"
NODE_ID = f"{{{RDF}}}nodeID"
RDF_ID = f"{{{RDF}}}ID"


def qname(ns: str, local: str) -> str:
    return f"{{{NAMESPACES[ns]}}}{local}"


def prefixed(tag: str) -> str:
    """``{uri}local`` as ``prefix:local`` for messages (Clark notation for other URIs)."""
    if tag.startswith("{"):
        uri, local = tag[1:].split("}", 1)
        if uri in PREFIX_OF:
            return f"{PREFIX_OF[uri]}:{local}"
    return tag


# Text terms: Entry field -> (namespace prefix, local name).
TEXT_TERMS: Mapping[str, tuple[str, str]] = {
    "type": ("dcterms", "type"),
    "title": ("dcterms", "title"),
    "alternative": ("dcterms", "alternative"),
    "description": ("dcterms", "description"),
    "creator": ("dcterms", "creator"),
    "publisher": ("dcterms", "publisher"),
    "replaces": ("dcterms", "replaces"),
    "is_replaced_by": ("dcterms", "isReplacedBy"),
    "version": ("slterms", "version"),
    "hypervisor": ("slterms", "hypervisor"),
    "disks_bus": ("slterms", "disks-bus"),
    "os": ("slterms", "os"),
    "os_version": ("slterms", "os-version"),
    "os_arch": ("slterms", "os-arch"),
    "deprecated": ("slterms", "deprecated"),
}


# Terms after the head, by qualified name: (field, how to read it).
TEXT_BY_TAG = {qname(ns, local): field for field, (ns, local) in TEXT_TERMS.items()}
DATE_TERMS = {qname("dcterms", "valid"): "valid", qname("dcterms", "created"): "created"}
ENUM_TERMS = {
    qname("slterms", "kind"): "kind",
    qname("dcterms", "format"): "format",
    qname("dcterms", "compression"): "compression",
}
REPEATED = {
    qname("slterms", "location"): "locations",
    qname("slterms", "inbound-port"): "inbound_ports",
    qname("slterms", "outbound-port"): "outbound_ports",
    qname("slterms", "icmp"): "icmp",
}
INT_TERMS = {qname("slterms", "serial-number"): "serial_number"}
HEAD = {
    qname("dcterms", "identifier"),
    qname("slreq", "bytes"),
    qname("slreq", "checksum"),
    qname("slreq", "endorsement"),
}
KNOWN = set(TEXT_BY_TAG) | set(DATE_TERMS) | set(ENUM_TERMS) | set(REPEATED) | set(INT_TERMS)
# Rule for a repeated number that is not one (ranges are the Entry's to check).
NOT_A_NUMBER = {"inbound_ports": "bad-port", "outbound_ports": "bad-port", "icmp": "bad-icmp"}
# Namespaces whose every element the profile defines: anything unknown there is an error.
CLOSED_NAMESPACES = (RDF, SLREQ, SLTERMS, DSIG)


def in_profile_namespace(tag: str) -> bool:
    return any(tag.startswith("{" + ns + "}") for ns in CLOSED_NAMESPACES)


def child_elements(parent: etree._Element) -> Iterator[etree._Element]:
    """Element children only (comments and processing instructions are not content)."""
    for child in parent:
        if isinstance(child.tag, str):
            yield child


def char_content(el: etree._Element) -> str:
    """The character content of a literal element (comments inside are skipped)."""
    parts = [el.text or ""]
    parts.extend(child.tail or "" for child in el)
    return "".join(parts)


def check_no_text(el: etree._Element, where: str) -> None:
    if char_content(el).strip():
        raise InvalidMetadata("stray-text", f"text directly inside {where}")


# RDF/XML syntax for the elements the profile does not know (RDF/XML 1.1, section 7.2).
PROPERTY_SYNTAX_ATTRS = {XML_LANG, DATATYPE, RDF_ID, PARSE_TYPE, RESOURCE, NODE_ID}


def check_property(el: etree._Element) -> None:
    """Refuse a property element that is not well-formed RDF/XML."""
    name = prefixed(str(el.tag))
    if not str(el.tag).startswith("{"):
        raise InvalidMetadata("unqualified-element", f"element {name} has no namespace")
    parse_type = el.get(PARSE_TYPE)
    children = list(child_elements(el))
    if parse_type == "Literal":
        return
    if parse_type is not None:
        if parse_type != "Resource":
            raise InvalidMetadata("bad-parsetype", f"{name} has rdf:parseType={parse_type!r}")
        check_no_text(el, name)
        for child in children:
            check_property(child)
        return
    if children:
        # Without a parseType, element content is exactly one node element.
        if len(children) != 1 or char_content(el).strip():
            raise InvalidMetadata(
                "rdf-resource",
                f'{name} holds several elements without rdf:parseType="Resource"',
            )
        check_node(children[0])
        return
    if char_content(el).strip():
        for attr in el.attrib:
            if attr not in (XML_LANG, DATATYPE, RDF_ID):
                raise InvalidMetadata(
                    "rdf-attribute", f"attribute {prefixed(attr)} on {name}, which holds text"
                )
    # An empty property element may carry rdf:resource, rdf:nodeID or property attributes.


def check_node(el: etree._Element) -> None:
    name = prefixed(str(el.tag))
    if not str(el.tag).startswith("{"):
        raise InvalidMetadata("unqualified-element", f"element {name} has no namespace")
    if char_content(el).strip():
        raise InvalidMetadata("rdf-resource", f"node element {name} holds text")
    for child in child_elements(el):
        check_property(child)


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
    if tag in HEAD or tag in KNOWN:
        raise InvalidMetadata(
            "bad-extra", f"{prefixed(tag)} is a term of the profile, not an extra"
        )
    if in_profile_namespace(tag):
        raise InvalidMetadata("unknown-term", f"{prefixed(tag)} is not a term of the profile")
    if next(root.iter(f"{{{DSIG}}}Signature"), None) is not None:
        raise InvalidMetadata("misplaced-signature", "a Signature inside an extra element")
    check_property(root)
    return to_fragment(root)


def to_fragment(el: etree._Element) -> str:
    """An extra element as a self-contained canonical fragment (exclusive C14N declares the
    namespaces it uses and nothing inherited, so it reads the same wherever it is put).

    Layout whitespace between elements is dropped (insignificant in RDF/XML outside
    ``rdf:parseType="Literal"``), so the writer can indent the fragment like the rest.
    """
    copy = etree.fromstring(etree.tostring(el, with_tail=False))
    etree.strip_elements(copy, etree.Comment, etree.ProcessingInstruction, with_tail=False)
    strip_layout(copy)
    return etree.tostring(copy, method="c14n", exclusive=True, with_comments=False).decode()


def strip_layout(el: etree._Element) -> None:
    if el.get(PARSE_TYPE) == "Literal" or not len(el):
        return
    if el.text is not None and not el.text.strip():
        el.text = None
    for child in el:
        if child.tail is not None and not child.tail.strip():
            child.tail = None
        strip_layout(child)
