"""What the registry refuses at upload, and that bad input never becomes a 500."""

from __future__ import annotations

import httpx
import pytest

from tests.plugins.market import resign

pytestmark = pytest.mark.timeout(300)
XML = {"Content-Type": "application/xml"}

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">&lol3;</rdf:RDF>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"""


@pytest.fixture
def http(marketplace):
    with httpx.Client(base_url=marketplace.url, timeout=30) as client:
        yield client


def refused(response: httpx.Response, status: int = 400) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.count("\n") == 1
    return response.text.strip()


def tamper(data: bytes) -> bytes:
    assert b"An appliance for tests" in data
    return data.replace(b"An appliance for tests", b"An appliance for tests!")


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"<rdf:RDF", "not-well-formed"),
        (b"\x00\xff\xfe garbage", "not-well-formed"),
        (BILLION_LAUGHS, "unsafe-xml"),
        (EXTERNAL_ENTITY, "unsafe-xml"),
        (b"<x/>", "invalid metadata"),
        (b"   ", "empty body"),
    ],
    ids=["truncated", "binary", "billion-laughs", "external-entity", "not-an-entry", "blank"],
)
def test_malformed_and_hostile_xml(http, body, reason):
    assert reason in refused(http.post("/metadata", headers=XML, content=body))


def test_unsigned_entry_is_refused(http):
    from tests.plugins.market import draft_entry

    message = refused(http.post("/metadata", headers=XML, content=draft_entry()))
    assert message.startswith("invalid metadata: ")


def test_tampered_signature_is_refused(http, make_endorser, make_signed):
    data = tamper(make_signed(make_endorser(), ago=60))
    message = refused(http.post("/metadata", headers=XML, content=data))
    assert message.startswith("invalid metadata: ")
    assert http.get("/metadata", params={"media": "json", "q": "appliance"}).json()["total"] == 0


def test_invalid_entry_names_the_rule(http, asset):
    data = asset("stratuslab/invalid-bad-icmp-value.xml").read_bytes()
    message = refused(http.post("/metadata", headers=XML, content=data))
    assert message.startswith("invalid metadata: ")


def test_sha1_signature_refused_unless_allowed(http, asset):
    data = asset("stratuslab/valid-full-signature.xml").read_bytes()
    message = refused(http.post("/metadata", headers=XML, content=data))
    assert "invalid metadata" in message


def test_oversize_body_is_413(http):
    r = http.post("/metadata", headers=XML, content=b"<a>" + b"x" * (2 * 1024 * 1024) + b"</a>")
    refused(r, 413)


def test_oversize_chunked_body_is_413(http):
    def chunks():
        for _ in range(40):
            yield b"x" * 65536

    refused(http.post("/metadata", headers=XML, content=chunks()), 413)


def test_multipart_upload(http, make_endorser, make_signed):
    me = make_endorser()
    data = make_signed(me, ago=60)
    r = http.post("/metadata", files={"metadata": ("entry.xml", data, "application/xml")})
    assert r.status_code == 201, r.text
    assert http.get(r.headers["Location"]).content == data


def test_multipart_without_a_file(http):
    r = http.post("/metadata", data={"other": "x"}, files={"nothing": ("", b"", "text/plain")})
    assert refused(r).startswith("invalid")


def test_trusted_mode_refuses_unknown_endorsers(start_marketplace, make_endorser, make_signed):
    trusted = make_endorser()
    stranger = make_endorser()
    server = start_marketplace(trust=(str(trusted.cert_path),))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.post("/metadata", headers=XML, content=make_signed(trusted, ago=60))
        assert r.status_code == 201
        message = refused(
            http.post("/metadata", headers=XML, content=make_signed(stranger, ago=60))
        )
        assert message.startswith("invalid metadata: ")


def test_unknown_routes_and_methods_are_plain_errors(http):
    assert refused(http.get("/no/such/page"), 404).startswith("not found")
    refused(http.delete("/metadata"), 405)


def test_overlong_indexed_term_is_refused_not_truncated(http, make_endorser, make_signed):
    me = make_endorser()
    data = resign(
        make_signed(me, ago=60, os_name="debian"), me, b">debian<", b">" + b"x" * 300 + b"<"
    )
    message = refused(http.post("/metadata", headers=XML, content=data))
    assert message == "invalid metadata: too-long: slterms:os is longer than 200 characters"
