"""The StratusLab conformance corpus (tests/fixtures/stratuslab) through parse_entry and the XSD.

Every XML file of the corpus has a row below (a new file without one fails
``test_every_fixture_has_a_verdict``): valid files parse, each invalid file is refused
with the rule its name names. Decisions where the corpus README leaves room:

* ``partial-multiple-endorsements.xml``: refused as "multiple-endorsements". It is material
  for a re-signer, which keeps one endorsement and refills it before the entry is read.
* ``partial-multiple-signatures.xml``: refused as "multiple-signatures" (a verifier must
  refuse it; a re-signer strips the signatures first).
* ``autogen-endorsement-*.xml``: fragments for the signer's fill step, not entries (no
  identifier, one without ``xml:base``); reading them as entries is refused.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from imagekit.entry import SCHEMA_FILE, entry_to_bytes, parse_entry_bytes
from imagekit.errors import InvalidMetadata

CORPUS = Path(__file__).parent / "fixtures" / "stratuslab"
METADATA = Path(__file__).parent.parent / "metadata"

VALID = [
    "valid-ca-signed.xml",
    "valid-full-alt-cimi.xml",
    "valid-full-signature.xml",
    "valid-full.xml",
    "valid-minimal-empty-endorsement.xml",
    "valid-minimal-leading-zero-sha1.xml",
    "valid-minimal-signature.xml",
    "valid-minimal.xml",
    "client-manifest-cern-signed.xml",
]

# file -> (rule, a word the detail must contain: the term or value at fault)
INVALID = {
    "invalid-bad-about-id.xml": ("bad-about-id", "#MMZu9WvwKIro-rtBQ"),
    "invalid-bad-checksum-parsetype.xml": ("bad-parsetype", "slreq:checksum"),
    "invalid-bad-element-for-signature.xml": ("unexpected-root-child", "rdf:Description"),
    "invalid-bad-endorsement-parsetype.xml": ("bad-parsetype", "slreq:endorsement"),
    "invalid-bad-endorser-parsetype.xml": ("bad-parsetype", "slreq:endorser"),
    "invalid-bad-icmp-value.xml": ("icmp-out-of-range", "65536"),
    "invalid-bad-inbound-port.xml": ("port-out-of-range", "inbound-port"),
    "invalid-bad-outbound-port.xml": ("port-out-of-range", "outbound-port"),
    "invalid-bad-serial-number.xml": ("bad-serial-number", "'X'"),
    "invalid-bad-xml-base.xml": ("bad-xml-base", "/BAD"),
    "invalid-checksum-value.xml": ("bad-checksum-value", "XYZ"),
    "invalid-created-date-1.xml": ("bad-date", "dcterms:created"),
    "invalid-created-date-2.xml": ("bad-date", "dcterms:created"),
    "invalid-dcterms-type.xml": ("literal-expected", "dcterms:type"),
    "invalid-email.xml": ("bad-email", "jane.tester_at_example.org"),
    "invalid-inconsistent-checksum.xml": ("checksum-id-mismatch", "eefe"),
    "invalid-inconsistent-identifiers.xml": ("inconsistent-identifiers", "KO77"),
    "invalid-multiple-deprecated.xml": ("repeated-term", "slterms:deprecated"),
    "invalid-multiple-os-arch.xml": ("repeated-term", "slterms:os-arch"),
    "invalid-multiple-os-version.xml": ("repeated-term", "slterms:os-version"),
    "invalid-multiple-os.xml": ("repeated-term", "slterms:os "),
    "invalid-multiple-serial-numbers.xml": ("repeated-term", "slterms:serial-number"),
    "invalid-multiple-versions.xml": ("repeated-term", "slterms:version"),
    "invalid-no-content.xml": ("no-description", "rdf:Description"),
    "invalid-no-endorsement.xml": ("missing-endorsement", "slreq:endorsement"),
    "invalid-no-endorser.xml": ("missing-endorser", "endorser"),
    "invalid-no-xml-base.xml": ("missing-xml-base", "xml:base"),
    "invalid-rdf-attribute.xml": ("rdf-attribute", "badrdf"),
    "invalid-rdf-resource.xml": ("rdf-resource", "dummy"),
    "invalid-valid-date-1.xml": ("bad-date", "dcterms:valid"),
    "invalid-valid-date-2.xml": ("bad-date", "dcterms:valid"),
    "partial-multiple-endorsements.xml": ("multiple-endorsements", "5 endorsements"),
    "partial-multiple-signatures.xml": ("multiple-signatures", "Signature"),
    "autogen-endorsement-done.xml": ("missing-identifier", "dcterms:identifier"),
    "autogen-endorsement-not-done.xml": ("missing-xml-base", "xml:base"),
}

# Rules the XSD can express too: it must refuse these files (the others need code).
XSD_REFUSES = sorted(
    name
    for name, (rule, _) in INVALID.items()
    if rule
    not in {
        "checksum-id-mismatch",
        "inconsistent-identifiers",
        "repeated-term",
        "rdf-attribute",
        "rdf-resource",
    }
)


def test_every_fixture_has_a_verdict() -> None:
    assert sorted(p.name for p in CORPUS.glob("*.xml")) == sorted([*VALID, *INVALID])


@pytest.mark.parametrize("name", VALID)
def test_valid_fixture_is_read(name: str) -> None:
    entry = parse_entry_bytes((CORPUS / name).read_bytes())
    assert entry.identifier in (CORPUS / name).read_text()


@pytest.mark.parametrize("name", VALID)
def test_valid_fixture_round_trips(name: str) -> None:
    entry = parse_entry_bytes((CORPUS / name).read_bytes())
    assert parse_entry_bytes(entry_to_bytes(entry)) == entry


@pytest.mark.parametrize(("name", "rule", "detail"), [(n, *v) for n, v in INVALID.items()])
def test_invalid_fixture_is_refused_with_its_rule(name: str, rule: str, detail: str) -> None:
    with pytest.raises(InvalidMetadata) as e:
        parse_entry_bytes((CORPUS / name).read_bytes())
    assert (e.value.rule, detail in e.value.detail + " ") == (rule, True), e.value.detail


def test_details_of_the_corpus() -> None:
    full = parse_entry_bytes((CORPUS / "valid-full-alt-cimi.xml").read_bytes())
    assert full.tag == "linux-with-my-apps"
    assert (full.inbound_ports, full.outbound_ports, full.icmp) == ((443,), (25,), (8,))
    assert full.deprecated == "security issue with app" and full.serial_number == 0
    assert len(full.extra) == 5  # other-info, yet-more, relatedImages, accounts, CIMI
    draft = parse_entry_bytes((CORPUS / "valid-minimal-empty-endorsement.xml").read_bytes())
    assert draft.is_draft and draft.endorsement.endorser is None
    zero = parse_entry_bytes((CORPUS / "valid-minimal-leading-zero-sha1.xml").read_bytes())
    assert zero.sha1 == "c319bbd5afc0a22ba3eaed0507c39383ec28eeff"
    cern = parse_entry_bytes((CORPUS / "client-manifest-cern-signed.xml").read_bytes())
    assert cern.endorser_email == "Konstantin.Skaburskas@cern.ch"
    assert str(cern.compression) == "gz" and str(cern.format) == "raw"


# --- the XSD ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMA_FILE)))


EXAMPLES = sorted((METADATA / "examples").glob("*.xml"))


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", [CORPUS / n for n in VALID] + EXAMPLES, ids=lambda p: p.name)
def test_schema_accepts_valid_entries(schema: etree.XMLSchema, path: Path) -> None:
    assert schema.validate(etree.parse(str(path))), schema.error_log.last_error


@pytest.mark.parametrize("name", XSD_REFUSES)
def test_schema_refuses_what_it_can_express(schema: etree.XMLSchema, name: str) -> None:
    assert not schema.validate(etree.parse(str(CORPUS / name)))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid_and_in_written_form(path: Path) -> None:
    data = path.read_bytes()
    assert entry_to_bytes(parse_entry_bytes(data)) == data


def test_schema_accepts_what_imagekit_writes(schema: etree.XMLSchema) -> None:
    for name in VALID:
        written = entry_to_bytes(parse_entry_bytes((CORPUS / name).read_bytes()))
        assert schema.validate(etree.fromstring(written)), (name, schema.error_log.last_error)
