"""Parse untrusted XML safely.

Metadata arrives from strangers: no DTD, no entity expansion, no network, no XInclude, no
huge trees. A document carrying a DOCTYPE is refused outright rather than parsed with its
entities ignored, so what we verify is exactly what the author sent.
"""

from __future__ import annotations

from lxml import etree

from ..errors import UnsafeXML

MAX_DOCUMENT_BYTES = 4 * 1024 * 1024

_PARSER = etree.XMLParser(
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

XINCLUDE_NS = "http://www.w3.org/2001/XInclude"


def parse_xml(data: bytes) -> etree._Element:
    """Return the root element of ``data``; raise UnsafeXML or InvalidMetadata otherwise."""
    from ..errors import InvalidMetadata

    if len(data) > MAX_DOCUMENT_BYTES:
        raise UnsafeXML(f"document larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as e:
        raise InvalidMetadata("not-well-formed", str(e).splitlines()[0]) from e
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise UnsafeXML("DOCTYPE declarations are not allowed")
    for node in root.iter():
        if isinstance(node, etree._Entity):
            raise UnsafeXML("entity references are not allowed")
        if isinstance(node.tag, str) and node.tag.startswith("{" + XINCLUDE_NS + "}"):
            raise UnsafeXML("XInclude is not allowed")
    return root
