"""Parse untrusted XML safely and cheaply.

Metadata arrives from strangers: no DTD, no entity expansion, no network, no XInclude, no
huge trees. A document carrying a DOCTYPE is refused outright rather than parsed with its
entities ignored, so what we verify is exactly what the author sent.

Cost: every document is held to ``LIMITS`` while it is parsed, and parsing stops at the
first one exceeded, before anything canonicalizes it or checks a signature. Parsing is
linear in the size of the input; canonicalization and libxmlsec1 are not (they are
quadratic in namespace declarations: 8,000 ``xmlns:`` attributes on ``rdf:RDF``, 190 KB,
cost about 10 s of CPU). This parser is the one every untrusted entry goes through: the
server's ingest, ``imagekit verify``, the launcher's resolver (all by way of
``imagekit.signing.verify.verify_entry``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from lxml import etree

from ..errors import InvalidMetadata, UnsafeXML

# --- cost limits: the one table ----------------------------------------------------------
# Measured on the StratusLab corpus and on what imagekit writes: at most 9 namespace
# declarations, 88 elements, 26 attributes, depth 6, a 2.7 KB text (a base64 certificate),
# 1 or 2 certificates in KeyInfo. Each limit leaves ample room for extension elements, many
# locations and a certificate chain, and bounds what a hostile document can make the
# canonicalizer and libxmlsec1 do.
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
MAX_NAMESPACE_DECLARATIONS = 64  # xmlns and xmlns:p attributes, in the whole document
MAX_ELEMENTS = 2048  # elements, comments and processing instructions
MAX_ATTRIBUTES = 2048  # in the whole document (namespace declarations not included)
MAX_ATTRIBUTES_PER_ELEMENT = 32
MAX_DEPTH = 32  # element nesting
MAX_TEXT_CHARS = 64 * 1024  # one text node, attribute value, comment or namespace URI
MAX_KEYINFO_CERTIFICATES = 8  # X509Certificate elements in the signature's KeyInfo

LIMITS: dict[str, int] = {
    "document bytes": MAX_DOCUMENT_BYTES,
    "namespace declarations": MAX_NAMESPACE_DECLARATIONS,
    "elements": MAX_ELEMENTS,
    "attributes": MAX_ATTRIBUTES,
    "attributes per element": MAX_ATTRIBUTES_PER_ELEMENT,
    "depth": MAX_DEPTH,
    "text characters": MAX_TEXT_CHARS,
    "KeyInfo certificates": MAX_KEYINFO_CERTIFICATES,
}

_OPTIONS: dict[str, Any] = dict(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_blank_text=False,
    remove_comments=False,
    remove_pis=False,
    collect_ids=False,
)
# Fed in pieces, so that a limit passed early stops the parse early.
_FEED = 64 * 1024
_EVENTS = ("start", "end", "start-ns", "comment", "pi")

# What a namespace declaration looks like in the bytes of an ASCII-compatible encoding
# (UTF-8, Latin-1, ...), value included. Counted before parsing: libxml2 takes ~30 ms per
# MiB of declarations on one start tag, all read before it reports any. The count is an
# upper bound (the text xmlns="..." in a comment counts too), which only matters for a
# document near the limit.
_DECLARATION = re.compile(rb"""xmlns(?::[^\s=/>]*)?\s*=\s*(?:"[^"]*"|'[^']*')""")
XINCLUDE_NS = "http://www.w3.org/2001/XInclude"
_XINCLUDE_PREFIX = "{" + XINCLUDE_NS + "}"


def _too_long(what: str, value: str | None) -> None:
    if value is not None and len(value) > MAX_TEXT_CHARS:
        raise UnsafeXML(f"{what} of {len(value)} characters (at most {MAX_TEXT_CHARS})")


class _Budget:
    """Counts what the parser reports and refuses the first limit passed."""

    def __init__(self) -> None:
        self.namespaces = 0
        self.nodes = 0
        self.attributes = 0
        self.depth = 0

    def take(self, events: Iterable[tuple[str, Any]]) -> None:
        for event, item in events:
            if event == "start":
                self._start(item)
            elif event == "end":
                self.depth -= 1
                _too_long("a text", item.text)
                for child in item:
                    _too_long("a text", child.tail)
            elif event == "start-ns":
                self.namespaces += 1
                if self.namespaces > MAX_NAMESPACE_DECLARATIONS:
                    raise UnsafeXML(
                        f"more than {MAX_NAMESPACE_DECLARATIONS} namespace declarations"
                    )
                _too_long("a namespace URI", item[1])
            else:  # comment, pi
                self._count_node()
                _too_long("a comment or processing instruction", item.text)

    def _count_node(self) -> None:
        self.nodes += 1
        if self.nodes > MAX_ELEMENTS:
            raise UnsafeXML(f"more than {MAX_ELEMENTS} elements")

    def _start(self, element: etree._Element) -> None:
        self._count_node()
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise UnsafeXML(f"elements nested deeper than {MAX_DEPTH}")
        tag = element.tag
        if isinstance(tag, str) and tag.startswith(_XINCLUDE_PREFIX):
            raise UnsafeXML("XInclude is not allowed")
        attrib = element.attrib
        n = len(attrib)
        if n > MAX_ATTRIBUTES_PER_ELEMENT:
            raise UnsafeXML(
                f"an element with {n} attributes (at most {MAX_ATTRIBUTES_PER_ELEMENT})"
            )
        self.attributes += n
        if self.attributes > MAX_ATTRIBUTES:
            raise UnsafeXML(f"more than {MAX_ATTRIBUTES} attributes")
        for value in attrib.values():
            _too_long("an attribute value", value)


def _ascii_compatible(data: bytes) -> bool:
    """Whether ``data`` starts the way a document in UTF-8 (or another ASCII-compatible
    encoding) does: ``<`` after an optional UTF-8 BOM and white space, no NUL nearby (the
    byte scan sees such documents exactly; in UTF-16 and the like only the parser counts)."""
    head = data[:64]
    return b"\0" not in head and head.removeprefix(b"\xef\xbb\xbf").lstrip()[:1] == b"<"


def _check_declarations(data: bytes) -> None:
    """Namespace declarations in the bytes: at most the limit, each value within the text
    limit (counted in bytes before character references: an upper bound)."""
    for n, match in enumerate(_DECLARATION.finditer(data)):
        if n >= MAX_NAMESPACE_DECLARATIONS:
            raise UnsafeXML(f"more than {MAX_NAMESPACE_DECLARATIONS} namespace declarations")
        quoted = match.group().partition(b"=")[2].strip()
        _too_long("a namespace URI", quoted[1:-1].decode("latin-1"))


def _parse_in_pieces(data: bytes, budget: _Budget) -> etree._Element:
    parser = etree.XMLPullParser(events=_EVENTS, **_OPTIONS)
    view = memoryview(data)
    for offset in range(0, len(data), _FEED):
        parser.feed(bytes(view[offset : offset + _FEED]))
        budget.take(parser.read_events())
    root: etree._Element = parser.close()
    budget.take(parser.read_events())
    return root


def parse_xml(data: bytes) -> etree._Element:
    """Return the root element of ``data``, within ``LIMITS``.

    A UTF-8 document's namespace declarations are first counted in the bytes; then the
    parser reads the document in pieces and stops at the first limit passed.
    Raises UnsafeXML (DTD, entities, XInclude, a limit passed) or InvalidMetadata (not
    well-formed).
    """
    if len(data) > MAX_DOCUMENT_BYTES:
        raise UnsafeXML(f"document larger than {MAX_DOCUMENT_BYTES} bytes")
    budget = _Budget()
    try:
        if _ascii_compatible(data):
            _check_declarations(data)
        root = _parse_in_pieces(data, budget)
    except etree.XMLSyntaxError as e:
        raise InvalidMetadata("not-well-formed", str(e).splitlines()[0]) from e
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise UnsafeXML("DOCTYPE declarations are not allowed")
    for _ in root.iter(etree.Entity):
        raise UnsafeXML("entity references are not allowed")
    return root
