"""The Entry model and its XML form: validation when built, writing, reading, round trips."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from lxml import etree

from imagekit.entry import (
    Checksum,
    Endorsement,
    Endorser,
    Entry,
    Kind,
    entry_from_dict,
    entry_to_bytes,
    entry_to_dict,
    format_date,
    parse_date,
    parse_entry,
    parse_entry_bytes,
)
from imagekit.errors import InvalidMetadata, UnsafeXML
from imagekit.image.compression import Compression
from imagekit.image.digests import DigestAlgorithm
from imagekit.image.formats import DiskFormat
from imagekit.image.identifier import sha1_to_id

DATA = b"imagekit test image\n"
SHA1 = hashlib.sha1(DATA).hexdigest()
SHA256 = hashlib.sha256(DATA).hexdigest()
ID = sha1_to_id(SHA1)
WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
JANE = Endorser(
    "jane.tester@example.org",
    "CN=Jane Tester,OU=Testing Department,O=StratusLab Project,C=EU",
    "CN=Jane Tester,OU=Testing Department,O=StratusLab Project,C=EU",
)


def minimal(**changes: object) -> Entry:
    values: dict[str, object] = {
        "identifier": ID,
        "bytes": len(DATA),
        "checksums": (Checksum(DigestAlgorithm.SHA1, SHA1),),
        "type": "machine",
    }
    values.update(changes)
    return Entry(**values)  # type: ignore[arg-type]


def full() -> Entry:
    return Entry(
        identifier=ID,
        bytes=len(DATA),
        checksums=(
            Checksum(DigestAlgorithm.MD5, hashlib.md5(DATA).hexdigest()),
            Checksum(DigestAlgorithm.SHA1, SHA1),
            Checksum(DigestAlgorithm.SHA256, SHA256),
        ),
        endorsement=Endorsement(created=WHEN, endorser=JANE),
        type="machine",
        kind=Kind.MACHINE,
        valid=WHEN + timedelta(days=365),
        title="Debian 12 base",
        alternative="debian-base",
        description="Debian & <friends>",
        creator="Jane Tester",
        created=WHEN - timedelta(hours=1),
        publisher="Example Lab",
        format=DiskFormat.QCOW2,
        compression=Compression.GZ,
        replaces="MMZu9WvwKIro-rtBQfDk4PsKO7_",
        is_replaced_by="JcqGhHxmTRAEpHMmRF-xhSTM3TO",
        locations=("https://images.example.org/debian.qcow2.gz", "file:///srv/debian.qcow2.gz"),
        version="12.1",
        serial_number=7,
        hypervisor="kvm",
        disks_bus="virtio",
        inbound_ports=(22, 443),
        outbound_ports=(25,),
        icmp=(0, 8),
        os="debian",
        os_version="12",
        os_arch="x86_64",
        deprecated="superseded by 12.2",
        extra=('<ex:note xmlns:ex="http://example.org/">kept</ex:note>',),
    )


GOLDEN_FULL = f"""\
<?xml version="1.0" encoding="UTF-8"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" \
xmlns:dcterms="http://purl.org/dc/terms/" xmlns:slreq="http://mp.stratuslab.eu/slreq#" \
xmlns:slterms="http://mp.stratuslab.eu/slterms#" xml:base="http://mp.stratuslab.eu/">
  <rdf:Description rdf:about="#{ID}">
    <dcterms:identifier>{ID}</dcterms:identifier>
    <slreq:bytes>20</slreq:bytes>
    <slreq:checksum rdf:parseType="Resource">
      <slreq:algorithm>MD5</slreq:algorithm>
      <slreq:value>{hashlib.md5(DATA).hexdigest()}</slreq:value>
    </slreq:checksum>
    <slreq:checksum rdf:parseType="Resource">
      <slreq:algorithm>SHA-1</slreq:algorithm>
      <slreq:value>{SHA1}</slreq:value>
    </slreq:checksum>
    <slreq:checksum rdf:parseType="Resource">
      <slreq:algorithm>SHA-256</slreq:algorithm>
      <slreq:value>{SHA256}</slreq:value>
    </slreq:checksum>
    <slreq:endorsement rdf:parseType="Resource">
      <dcterms:created>2026-01-02T03:04:05Z</dcterms:created>
      <slreq:endorser rdf:parseType="Resource">
        <slreq:email>jane.tester@example.org</slreq:email>
        <slreq:subject>{JANE.subject}</slreq:subject>
        <slreq:issuer>{JANE.issuer}</slreq:issuer>
      </slreq:endorser>
    </slreq:endorsement>
    <dcterms:type>machine</dcterms:type>
    <slterms:kind>machine</slterms:kind>
    <dcterms:valid>2027-01-02T03:04:05Z</dcterms:valid>
    <dcterms:title>Debian 12 base</dcterms:title>
    <dcterms:alternative>debian-base</dcterms:alternative>
    <dcterms:description>Debian &amp; &lt;friends&gt;</dcterms:description>
    <dcterms:creator>Jane Tester</dcterms:creator>
    <dcterms:created>2026-01-02T02:04:05Z</dcterms:created>
    <dcterms:publisher>Example Lab</dcterms:publisher>
    <dcterms:format>qcow2</dcterms:format>
    <dcterms:compression>gz</dcterms:compression>
    <dcterms:replaces>MMZu9WvwKIro-rtBQfDk4PsKO7_</dcterms:replaces>
    <dcterms:isReplacedBy>JcqGhHxmTRAEpHMmRF-xhSTM3TO</dcterms:isReplacedBy>
    <slterms:location>https://images.example.org/debian.qcow2.gz</slterms:location>
    <slterms:location>file:///srv/debian.qcow2.gz</slterms:location>
    <slterms:version>12.1</slterms:version>
    <slterms:serial-number>7</slterms:serial-number>
    <slterms:hypervisor>kvm</slterms:hypervisor>
    <slterms:disks-bus>virtio</slterms:disks-bus>
    <slterms:inbound-port>22</slterms:inbound-port>
    <slterms:inbound-port>443</slterms:inbound-port>
    <slterms:outbound-port>25</slterms:outbound-port>
    <slterms:icmp>0</slterms:icmp>
    <slterms:icmp>8</slterms:icmp>
    <slterms:os>debian</slterms:os>
    <slterms:os-version>12</slterms:os-version>
    <slterms:os-arch>x86_64</slterms:os-arch>
    <slterms:deprecated>superseded by 12.2</slterms:deprecated>
    <ex:note xmlns:ex="http://example.org/">kept</ex:note>
  </rdf:Description>
</rdf:RDF>
"""


# --- writing --------------------------------------------------------------------------


def test_full_entry_writes_the_golden_xml() -> None:
    assert entry_to_bytes(full()).decode() == GOLDEN_FULL


def test_full_entry_round_trips() -> None:
    entry = full()
    assert parse_entry_bytes(entry_to_bytes(entry)) == entry


def test_writing_is_stable() -> None:
    once = entry_to_bytes(full())
    assert entry_to_bytes(parse_entry_bytes(once)) == once


def test_minimal_entry_still_writes_the_terms_older_clients_require() -> None:
    root = etree.fromstring(entry_to_bytes(minimal()))
    desc = root[0]
    names = [etree.QName(el).localname for el in desc]
    assert names[:4] == ["identifier", "bytes", "checksum", "endorsement"]
    for required in (
        "valid",
        "type",
        "created",
        "description",
        "compression",
        "os",
        "os-version",
        "os-arch",
        "version",
    ):
        assert names.count(required) == 1, required
    assert parse_entry_bytes(entry_to_bytes(minimal())) == minimal()


def test_draft_writes_an_empty_endorsement_with_parsetype() -> None:
    root = etree.fromstring(entry_to_bytes(minimal()))
    endorsement = root.find(".//{http://mp.stratuslab.eu/slreq#}endorsement")
    assert endorsement is not None and len(endorsement) == 0
    assert endorsement.get("{http://www.w3.org/1999/02/22-rdf-syntax-ns#}parseType") == "Resource"


def test_empty_deprecated_reason_still_means_deprecated() -> None:
    entry = minimal(deprecated="")
    again = parse_entry_bytes(entry_to_bytes(entry))
    assert again.deprecated == "" and again.is_deprecated
    assert not minimal().is_deprecated


# --- reading --------------------------------------------------------------------------


def _doc(body: str, *, root_extra: str = "", after: str = "", prefix: str = "rdf") -> bytes:
    return f"""<?xml version="1.0"?>
<{prefix}:RDF xmlns:{prefix}="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
  xmlns:dcterms="http://purl.org/dc/terms/" xmlns:slreq="http://mp.stratuslab.eu/slreq#"
  xmlns:slterms="http://mp.stratuslab.eu/slterms#" xmlns:ex="http://example.org/"
  xml:base="http://mp.stratuslab.eu/" {root_extra}>
 <{prefix}:Description {prefix}:about="#{ID}">
  <dcterms:identifier>{ID}</dcterms:identifier>
  <slreq:bytes>20</slreq:bytes>
  <slreq:checksum {prefix}:parseType="Resource">
   <slreq:algorithm>SHA-1</slreq:algorithm><slreq:value>{SHA1}</slreq:value>
  </slreq:checksum>
  <slreq:endorsement {prefix}:parseType="Resource"/>
  <dcterms:type>machine</dcterms:type>
  {body}
 </{prefix}:Description>{after}
</{prefix}:RDF>""".encode()


def test_reading_accepts_any_prefixes() -> None:
    data = f"""<r:RDF xmlns:r="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
      xmlns:d="http://purl.org/dc/terms/" xmlns:q="http://mp.stratuslab.eu/slreq#"
      xmlns="http://mp.stratuslab.eu/slterms#" xml:base="http://mp.stratuslab.eu/">
     <r:Description r:about="#{ID}"><d:identifier>{ID}</d:identifier><q:bytes>20</q:bytes>
      <q:checksum r:parseType="Resource"><q:value>{SHA1}</q:value><q:algorithm>SHA-1</q:algorithm>
      </q:checksum><q:endorsement r:parseType="Resource"/><d:type>machine</d:type>
      <os>debian</os><inbound-port>22</inbound-port></r:Description></r:RDF>""".encode()
    entry = parse_entry_bytes(data)
    assert (entry.os, entry.inbound_ports, entry.sha1) == ("debian", (22,), SHA1)


def test_parse_entry_takes_a_parsed_root() -> None:
    assert parse_entry(etree.fromstring(_doc(""))).identifier == ID


def test_unknown_elements_in_other_namespaces_are_kept_and_rewritten() -> None:
    body = '<ex:a>1</ex:a><ex:b rdf:parseType="Resource"><ex:c>2</ex:c></ex:b>'
    entry = parse_entry_bytes(_doc(body))
    assert len(entry.extra) == 2
    written = entry_to_bytes(entry)
    assert b"<ex:c>2</ex:c>" in written
    assert parse_entry_bytes(written).extra == entry.extra


def test_unknown_profile_term_is_refused() -> None:
    with pytest.raises(InvalidMetadata) as e:
        parse_entry_bytes(_doc("<slterms:colour>red</slterms:colour>"))
    assert e.value.rule == "unknown-term"


def test_empty_signature_as_last_child_is_ignored() -> None:
    data = _doc("", after='<Signature xmlns="http://www.w3.org/2000/09/xmldsig#"/>')
    assert parse_entry_bytes(data) == parse_entry_bytes(_doc(""))


@pytest.mark.parametrize(
    ("body", "after", "rule"),
    [
        pytest.param(
            "",
            '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"/>'
            '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"/>',
            "multiple-signatures",
            id="two-signatures",
        ),
        pytest.param(
            "",
            '<Signature xmlns="http://example.org/wrong"/>',
            "unexpected-root-child",
            id="signature-in-wrong-namespace",
        ),
        pytest.param(
            "",
            '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"/><ex:x/>',
            "unexpected-root-child",
            id="signature-not-last",
        ),
        pytest.param(
            '<ex:wrap><ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"/></ex:wrap>',
            "",
            "misplaced-signature",
            id="signature-inside-extra",
        ),
        pytest.param(
            '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"/>',
            "",
            "misplaced-signature",
            id="signature-inside-description",
        ),
    ],
)
def test_signature_placement_rules(body: str, after: str, rule: str) -> None:
    with pytest.raises(InvalidMetadata) as e:
        parse_entry_bytes(_doc(body, after=after))
    assert e.value.rule == rule


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        pytest.param("<slterms:kind>vm</slterms:kind>", "bad-kind", id="kind"),
        pytest.param("<dcterms:format>floppy</dcterms:format>", "bad-format", id="format"),
        pytest.param(
            "<dcterms:compression>zip</dcterms:compression>", "bad-compression", id="compression"
        ),
        pytest.param(
            "<slterms:inbound-port>-1</slterms:inbound-port>", "bad-port", id="negative-port"
        ),
        pytest.param("<slterms:icmp>256</slterms:icmp>", "icmp-out-of-range", id="icmp"),
        pytest.param(
            "<dcterms:valid>2026-01-02T03:04:05.5Z</dcterms:valid>",
            "bad-date",
            id="date-with-fraction",
        ),
        pytest.param(
            "<dcterms:valid>2026-02-30T03:04:05Z</dcterms:valid>", "bad-date", id="impossible-date"
        ),
        pytest.param("<dcterms:type>disk</dcterms:type>", "repeated-term", id="two-types"),
        pytest.param(
            "<slterms:hypervisor>a</slterms:hypervisor><slterms:hypervisor>b</slterms:hypervisor>",
            "repeated-term",
            id="two-hypervisors",
        ),
        pytest.param(
            '<dcterms:title rdf:resource="http://x/">t</dcterms:title>',
            "rdf-attribute",
            id="rdf-resource-on-known-term",
        ),
        pytest.param(
            '<dcterms:title ex:a="b">t</dcterms:title>',
            "rdf-attribute",
            id="foreign-attribute-on-known-term",
        ),
        pytest.param("<slreq:bytes>20</slreq:bytes>", "head-order", id="head-term-after-head"),
        pytest.param(
            "<dcterms:identifier>x</dcterms:identifier>", "head-order", id="second-identifier"
        ),
        pytest.param("<plain>x</plain>", "unqualified-element", id="no-namespace"),
        pytest.param(
            "<ex:a><ex:Node>text</ex:Node></ex:a>", "rdf-resource", id="node-element-with-text"
        ),
        pytest.param(
            '<ex:a rdf:parseType="Other"><ex:b/></ex:a>',
            "bad-parsetype",
            id="unknown-parsetype-on-extra",
        ),
        pytest.param("<slterms:location/>", "bad-location", id="empty-location"),
    ],
)
def test_bad_free_terms_name_their_rule(body: str, rule: str) -> None:
    with pytest.raises(InvalidMetadata) as e:
        parse_entry_bytes(_doc(body))
    assert e.value.rule == rule


def test_rdf_xml_forms_of_extra_elements_are_accepted() -> None:
    body = (
        '<ex:ref rdf:resource="http://example.org/x"/>'
        '<ex:typed><ex:Thing rdf:about="#t"><ex:p>v</ex:p></ex:Thing></ex:typed>'
        '<ex:lit rdf:parseType="Literal"><b>bold</b> text</ex:lit>'
        '<ex:lang xml:lang="en">hello</ex:lang>'
    )
    entry = parse_entry_bytes(_doc(body))
    assert len(entry.extra) == 4
    assert parse_entry_bytes(entry_to_bytes(entry)) == entry


def test_endorser_without_created_is_refused() -> None:
    data = _doc("").replace(
        b'<slreq:endorsement rdf:parseType="Resource"/>',
        b'<slreq:endorsement rdf:parseType="Resource"><slreq:endorser rdf:parseType="Resource">'
        b"<slreq:email>a@b.org</slreq:email><slreq:subject>CN=a</slreq:subject>"
        b"<slreq:issuer>CN=a</slreq:issuer></slreq:endorser></slreq:endorsement>",
    )
    with pytest.raises(InvalidMetadata) as e:
        parse_entry_bytes(data)
    assert e.value.rule == "missing-endorsement-created"


def test_endorser_lacking_a_field_is_refused() -> None:
    data = _doc("").replace(
        b'<slreq:endorsement rdf:parseType="Resource"/>',
        b'<slreq:endorsement rdf:parseType="Resource">'
        b"<dcterms:created>2026-01-01T00:00:00Z</dcterms:created>"
        b'<slreq:endorser rdf:parseType="Resource"><slreq:email>a@b.org</slreq:email>'
        b"</slreq:endorser></slreq:endorsement>",
    )
    with pytest.raises(InvalidMetadata) as e:
        parse_entry_bytes(data)
    assert e.value.rule == "incomplete-endorser"


def test_missing_type_is_refused() -> None:
    data = _doc("").replace(b"<dcterms:type>machine</dcterms:type>", b"")
    with pytest.raises(InvalidMetadata) as e:
        parse_entry_bytes(data)
    assert e.value.rule == "missing-type"


def test_doctype_is_refused_before_reading() -> None:
    data = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]>' + _doc("").split(b"?>", 1)[1]
    with pytest.raises(UnsafeXML):
        parse_entry_bytes(data)


def test_malformed_xml_is_invalid_metadata() -> None:
    with pytest.raises(InvalidMetadata) as e:
        parse_entry_bytes(b"<rdf:RDF")
    assert e.value.rule == "not-well-formed"


def test_wrong_root_is_refused() -> None:
    with pytest.raises(InvalidMetadata) as e:
        parse_entry_bytes(b"<metadata/>")
    assert e.value.rule == "not-rdf"


# --- the model --------------------------------------------------------------------------


def test_sha1_must_equal_the_identifier() -> None:
    other = hashlib.sha1(b"other").hexdigest()
    with pytest.raises(InvalidMetadata) as e:
        minimal(checksums=(Checksum("SHA-1", other),))
    assert e.value.rule == "checksum-id-mismatch"


def test_sha1_is_compared_as_a_number() -> None:
    padded = "000" + SHA1
    entry = minimal(checksums=(Checksum("SHA-1", padded),))
    assert entry.sha1 == SHA1
    assert entry.checksum("SHA-1").value == padded  # kept as written


@pytest.mark.parametrize(
    ("checksums", "rule"),
    [
        pytest.param((), "missing-checksum", id="none"),
        pytest.param((Checksum("SHA-256", SHA256),), "missing-sha1", id="no-sha1"),
        pytest.param(
            (Checksum("SHA-1", SHA1), Checksum("SHA-1", SHA1)), "duplicate-algorithm", id="two-sha1"
        ),
    ],
)
def test_checksum_set_rules(checksums: tuple[Checksum, ...], rule: str) -> None:
    with pytest.raises(InvalidMetadata) as e:
        minimal(checksums=checksums)
    assert e.value.rule == rule


@pytest.mark.parametrize(
    ("algorithm", "value", "rule"),
    [
        pytest.param("SHA-3", SHA1, "bad-algorithm", id="unknown-algorithm"),
        pytest.param("sha1", SHA1, "bad-algorithm", id="algorithm-not-in-xml-spelling"),
        pytest.param("SHA-1", SHA1.upper(), "bad-checksum-value", id="upper-case"),
        pytest.param("SHA-1", "1" + SHA1, "bad-checksum-value", id="too-long"),
        pytest.param("MD5", "", "bad-checksum-value", id="empty"),
    ],
)
def test_checksum_value_rules(algorithm: str, value: str, rule: str) -> None:
    with pytest.raises(InvalidMetadata) as e:
        Checksum(algorithm, value)  # type: ignore[arg-type]
    assert e.value.rule == rule


def test_checksum_hex_is_fixed_length() -> None:
    assert Checksum("MD5", "ff").hex == "0" * 30 + "ff"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        pytest.param({"inbound_ports": (65536,)}, "port-out-of-range", id="inbound"),
        pytest.param({"outbound_ports": (-1,)}, "port-out-of-range", id="outbound-negative"),
        pytest.param({"icmp": (300,)}, "icmp-out-of-range", id="icmp"),
        pytest.param({"serial_number": -1}, "bad-serial-number", id="serial"),
        pytest.param({"bytes": -5}, "bad-bytes", id="bytes"),
        pytest.param({"identifier": "short"}, "bad-identifier", id="identifier"),
        pytest.param({"kind": "vm"}, "bad-kind", id="kind"),
        pytest.param({"title": "bell\x07"}, "bad-text", id="control-character"),
    ],
)
def test_values_are_validated_when_built(changes: dict[str, object], rule: str) -> None:
    with pytest.raises(InvalidMetadata) as e:
        minimal(**changes)
    assert e.value.rule == rule


@pytest.mark.parametrize(
    ("created", "endorser", "rule"),
    [
        pytest.param(WHEN, None, "missing-endorser", id="date-only"),
        pytest.param(None, JANE, "missing-endorsement-created", id="endorser-only"),
    ],
)
def test_endorsement_is_complete_or_empty(
    created: datetime | None, endorser: Endorser | None, rule: str
) -> None:
    with pytest.raises(InvalidMetadata) as e:
        Endorsement(created=created, endorser=endorser)
    assert e.value.rule == rule


@pytest.mark.parametrize(
    "email", ["jane.tester_at_example.org", "jane@", "@example.org", "a b@example.org", "a@b..c"]
)
def test_bad_endorser_email_is_refused(email: str) -> None:
    with pytest.raises(InvalidMetadata) as e:
        Endorser(email, "CN=a", "CN=a")
    assert e.value.rule == "bad-email"


def test_strings_become_enums_and_lists_become_tuples() -> None:
    entry = minimal(kind="disk", format="raw", compression="xz", locations=["http://a/"])
    assert entry.kind is Kind.DISK and entry.format is DiskFormat.RAW
    assert entry.compression is Compression.XZ and entry.locations == ("http://a/",)
    assert hash(entry) == hash(
        minimal(kind="disk", format="raw", compression="xz", locations=("http://a/",))
    )


def test_empty_strings_mean_absent() -> None:
    assert minimal(title="", os="").title is None


def test_dates_are_utc_whole_seconds() -> None:
    local = datetime(2026, 1, 2, 5, 4, 5, 999, tzinfo=timezone(timedelta(hours=2)))
    assert minimal(valid=local).valid == WHEN


def test_properties() -> None:
    entry = full()
    assert entry.sha1 == SHA1
    assert entry.tag == "debian-base"
    assert entry.endorser_email == "jane.tester@example.org"
    assert entry.endorsement_created == WHEN
    assert not entry.is_draft and minimal().is_draft
    assert entry.digests[DigestAlgorithm.SHA256] == SHA256
    assert minimal().endorser_email is None and minimal().endorsement_created is None


def test_is_expired_at_and_after_valid() -> None:
    entry = minimal(valid=WHEN)
    assert not entry.is_expired(WHEN - timedelta(seconds=1))
    assert entry.is_expired(WHEN)
    assert not minimal().is_expired(datetime(9999, 1, 1, tzinfo=UTC))


def test_replace_validates() -> None:
    assert full().replace(os="alpine").os == "alpine"
    with pytest.raises(InvalidMetadata):
        full().replace(icmp=(999,))


def test_entries_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        full().os = "x"  # type: ignore[misc]


# --- dates and the dict form --------------------------------------------------------------


def test_date_round_trip() -> None:
    assert parse_date("2026-01-02T03:04:05Z") == WHEN
    assert format_date(WHEN) == "2026-01-02T03:04:05Z"
    assert format_date(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"  # naive = UTC


@pytest.mark.parametrize(
    "text",
    [
        "2011-01-24X09:59:42Z",
        "2011-01-24T99:59:42Z",
        "2011-01-24T09:59:42",
        "2011-1-24T09:59:42Z",
        "2011-01-24T09:59:42+00:00",
        "",
    ],
)
def test_bad_dates_are_refused(text: str) -> None:
    with pytest.raises(InvalidMetadata) as e:
        parse_date(text)
    assert e.value.rule == "bad-date"


def test_dict_form_round_trips() -> None:
    data = entry_to_dict(full())
    assert data["valid"] == "2027-01-02T03:04:05Z"
    assert data["checksums"][1] == {"algorithm": "SHA-1", "value": SHA1}
    assert data["endorsement"]["endorser"]["email"] == "jane.tester@example.org"
    assert data["format"] == "qcow2" and data["inbound_ports"] == [22, 443]
    assert entry_from_dict(data) == full()
    assert entry_from_dict(entry_to_dict(minimal())) == minimal()


def test_dict_form_refuses_unknown_fields() -> None:
    data = entry_to_dict(minimal())
    data["colour"] = "red"
    with pytest.raises(InvalidMetadata) as e:
        entry_from_dict(data)
    assert e.value.rule == "unknown-field"


# --- extra elements built in code ----------------------------------------------------------


def test_extra_fragments_are_normalised_so_round_trips_hold() -> None:
    loose = '<ex:b xmlns:ex="http://example.org/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"\n rdf:parseType="Resource">\n  <ex:c>2</ex:c>\n</ex:b>'  # noqa: E501
    entry = minimal(extra=[loose])
    assert entry.extra == (
        '<ex:b xmlns:ex="http://example.org/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"'
        ' rdf:parseType="Resource"><ex:c>2</ex:c></ex:b>',
    )
    assert parse_entry_bytes(entry_to_bytes(entry)) == entry


@pytest.mark.parametrize(
    ("fragment", "rule"),
    [
        pytest.param(
            '<dcterms:title xmlns:dcterms="http://purl.org/dc/terms/">t</dcterms:title>',
            "bad-extra",
            id="known-term",
        ),
        pytest.param(
            '<s:os xmlns:s="http://mp.stratuslab.eu/slterms#">x</s:os>',
            "bad-extra",
            id="known-slterms-term",
        ),
        pytest.param(
            '<s:colour xmlns:s="http://mp.stratuslab.eu/slterms#">x</s:colour>',
            "unknown-term",
            id="unknown-profile-term",
        ),
        pytest.param(
            '<ex:a xmlns:ex="http://example.org/"><ds:Signature '
            'xmlns:ds="http://www.w3.org/2000/09/xmldsig#"/></ex:a>',
            "misplaced-signature",
            id="signature",
        ),
        pytest.param("<ex:a>", "not-well-formed", id="malformed"),
        pytest.param(
            '<ex:a xmlns:ex="http://example.org/" ex:x="1">text</ex:a>',
            "rdf-attribute",
            id="rdf-attribute",
        ),
    ],
)
def test_extra_fragments_built_in_code_are_validated(fragment: str, rule: str) -> None:
    with pytest.raises(InvalidMetadata) as e:
        minimal(extra=[fragment])
    assert e.value.rule == rule


def test_extra_fragment_with_an_entity_is_refused() -> None:
    fragment = '<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a xmlns="urn:x">&x;</a>'
    with pytest.raises(UnsafeXML):
        minimal(extra=[fragment])
