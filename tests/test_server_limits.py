"""What a slow, greedy or long-winded client can make the registry spend: bounded.

Slow headers and bodies are cut off, header floods refused, connections capped, lists
streamed, endorsers paged, free texts limited. Real servers on loopback ports.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import select
import socket
import time
import tracemalloc
from urllib.parse import urlsplit

import httpx
import pytest

from tests.plugins.market import draft_entry, resign, sign

pytestmark = pytest.mark.timeout(300)

XML = {"Content-Type": "application/xml"}
BOUND = 1.5  # the header/body timeout the tests start servers with
SLACK = 3.0  # a loaded machine is late; without the bound the trickle lasts 10 s


def connect(server) -> socket.socket:
    parts = urlsplit(server.url)
    s = socket.create_connection((parts.hostname, parts.port), timeout=10)
    s.setblocking(True)
    return s


def closed_by_server(s: socket.socket) -> bytes | None:
    """What the server sent before closing, if it closed; None while it is open."""
    readable, _, _ = select.select([s], [], [], 0)
    if not readable:
        return None
    data = b""
    s.settimeout(2)
    try:
        while chunk := s.recv(4096):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def trickle(s: socket.socket, pieces: list[bytes], *, every: float = 0.25) -> tuple[float, bytes]:
    """Send ``pieces`` one by one until the server closes; (seconds it took, what it said).
    The loop is bounded by the pieces given."""
    start = time.monotonic()
    for piece in pieces:
        answer = closed_by_server(s)
        if answer is not None:
            return time.monotonic() - start, answer
        try:
            s.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - start, b""
        time.sleep(every)
    pytest.fail(f"the server kept the connection for {time.monotonic() - start:.1f} s")


@pytest.fixture(scope="module")
def bounded(tmp_path_factory):
    from tests.plugins.market import _start_server

    server = _start_server(
        tmp_path_factory.mktemp("bounded"),
        extra=("--header-timeout", str(BOUND), "--body-timeout", str(BOUND)),
    )
    yield server
    server.stop()


def test_slowloris_headers_are_cut_off(bounded):
    with connect(bounded) as s:
        s.sendall(b"GET /browse HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        took, answer = trickle(s, [b"X-Slow: %d\r\n" % i for i in range(40)])
    assert took < BOUND + SLACK
    assert answer.startswith(b"HTTP/1.1 408")


def test_idle_connection_is_cut_off(bounded):
    with connect(bounded) as s:
        took, _ = trickle(s, [b""] * 40)
    assert took < BOUND + SLACK


def test_slow_body_is_cut_off(bounded):
    with connect(bounded) as s:
        s.sendall(
            b"POST /metadata HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/xml\r\nContent-Length: 100000\r\n\r\n<"
        )
        took, _ = trickle(s, [b"x"] * 40)
    assert took < BOUND + SLACK


def test_next_request_on_a_kept_alive_connection_has_the_same_bound(bounded):
    with connect(bounded) as s:
        s.sendall(b"GET /api/endorsers HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        s.settimeout(5)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        s.sendall(b"GET /browse HTTP/1.1\r\n")
        took, answer = trickle(s, [b"X-Slow: 1\r\n"] * 40)
    assert b"HTTP/1.1 408" in answer  # after the rest of the first response
    assert took < BOUND + SLACK


def test_header_flood_is_refused(bounded):
    with connect(bounded) as s:
        s.sendall(b"GET /browse HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        _, answer = trickle(
            s, [b"X-Flood-%d: %s\r\n" % (i, b"a" * 8000) for i in range(40)], every=0
        )
    assert answer.startswith(b"HTTP/1.1 431")


def test_connections_are_capped(start_marketplace):
    server = start_marketplace(extra=("--max-connections", "4", "--header-timeout", "30"))
    idle = [connect(server) for _ in range(4)]
    try:
        time.sleep(0.2)
        r = httpx.get(server.url + "/api/endorsers", timeout=10)
        assert r.status_code == 503
    finally:
        for s in idle:
            s.close()
    time.sleep(0.2)
    assert httpx.get(server.url + "/api/endorsers", timeout=10).status_code == 200


def fake_rows(n: int, *, xml_bytes: int = 0, endorsers: int = 1):
    from marketplace_server.storage import NewEntry

    for i in range(n):
        sha1 = hashlib.sha1(b"%d" % i).hexdigest()
        xml = b"<rdf:RDF>" + b"x" * xml_bytes + b"</rdf:RDF>"
        yield NewEntry(
            identifier=f"A{i:026d}",
            email=f"bulk{i % endorsers}@example.org",
            created="2026-01-01T00:00:00Z",
            xml=xml,
            etag=hashlib.sha256(xml).hexdigest(),
            sha1=sha1,
            bytes=1,
            title=f"bulk {i}",
        )


def test_a_list_of_a_thousand_entries_is_streamed(tmp_path):
    """``GET /metadata?limit=1000``: the entries' bytes are read a few at a time, so a page
    of large entries never sits in memory whole."""
    from marketplace_server.api import xml_list
    from marketplace_server.storage import Query, Storage

    storage = Storage(f"sqlite:///{tmp_path / 'm.sqlite3'}")
    storage.create_schema()
    storage.add_many(fake_rows(200, xml_bytes=200_000), now=dt.datetime.now(dt.UTC))
    page = storage.find(Query(limit=1000), now=dt.datetime.now(dt.UTC))
    assert len(page.entries) == 200  # 40 MB of XML
    tracemalloc.start()
    size = 0
    for chunk in xml_list(storage, page.entries):
        size += len(chunk)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    storage.close()
    assert size > 200 * 200_000
    assert peak < 20_000_000, f"peak {peak} bytes"


def test_list_response_is_chunked(marketplace, make_endorser):
    me = make_endorser()
    httpx.post(marketplace.url + "/metadata", content=sign(draft_entry(), me, ago=60), headers=XML)
    r = httpx.get(marketplace.url + "/metadata", params={"limit": 1000, "email": me.email})
    assert r.status_code == 200
    assert r.headers.get("transfer-encoding") == "chunked"
    assert r.content.count(b"<rdf:RDF") == 1


def test_overlong_title_is_refused(marketplace, make_endorser):
    me = make_endorser()
    # longer than the model's 200, shorter than the parser's cost limit on one text (which
    # would refuse it first, as unsafe-xml)
    data = resign(
        sign(draft_entry(title="short"), me, ago=60), me, b">short<", b">" + b"t" * 10_000 + b"<"
    )
    r = httpx.post(marketplace.url + "/metadata", content=data, headers=XML)
    assert (r.status_code, r.text) == (
        400,
        "invalid metadata: too-long: dcterms:title is longer than 200 characters\n",
    )


def test_overlong_description_is_refused_by_the_model():
    from imagekit.errors import InvalidMetadata

    with pytest.raises(InvalidMetadata, match="too-long: dcterms:description is longer than 8192"):
        draft_entry(description="d" * 9000)


def test_endorsers_are_paged(start_marketplace, make_endorser):
    server = start_marketplace()
    emails = []
    for _ in range(3):
        me = make_endorser()
        emails.append(me.email)
        r = httpx.post(
            server.url + "/metadata", content=sign(draft_entry(), me, ago=60), headers=XML
        )
        assert r.status_code == 201
    for route in ("/endorsers", "/api/endorsers"):
        first = httpx.get(server.url + route, params={"limit": 2})
        assert [e["email"] for e in first.json()] == sorted(emails)[:2]
        assert first.headers["x-more"] == "true"
        rest = httpx.get(server.url + route, params={"limit": 2, "offset": 2})
        assert [e["email"] for e in rest.json()] == sorted(emails)[2:]
        assert rest.headers["x-more"] == "false"
    page = httpx.get(server.url + "/endorsers", params={"media": "html", "limit": 2}).text
    assert 'rel="next" href="/endorsers?media=html&amp;offset=2&amp;limit=2"' in page
    assert httpx.get(server.url + "/endorsers", params={"limit": 5000}).status_code == 400


def test_catalogue_does_not_load_every_endorser(start_marketplace):
    from marketplace_server.html import MENU_ENDORSERS
    from marketplace_server.storage import Storage

    server = start_marketplace()
    storage = Storage(f"sqlite:///{server.data_dir / 'marketplace.sqlite3'}")
    storage.add_many(
        fake_rows(MENU_ENDORSERS + 50, endorsers=MENU_ENDORSERS + 50), now=dt.datetime.now(dt.UTC)
    )
    storage.close()
    page = httpx.get(server.url + "/browse").text
    menu = page.split('<select name="email">', 1)[1].split("</select>", 1)[0]
    assert menu.count("<option") == MENU_ENDORSERS + 1  # "any" and the first endorsers
    chosen = httpx.get(server.url + "/browse", params={"email": "bulk99@example.org"}).text
    assert '<option value="bulk99@example.org" selected>' in chosen


def test_entry_page_shows_a_bounded_history(start_marketplace, make_endorser):
    from marketplace_server.html import HISTORY_ROWS
    from marketplace_server.storage import NewEntry, Storage

    server = start_marketplace()
    me = make_endorser()
    image = b"one image, many endorsements"
    path = httpx.post(
        server.url + "/metadata", headers=XML, content=sign(draft_entry(image), me, ago=60)
    ).headers["Location"]
    identifier = path.split("/")[2]
    storage = Storage(f"sqlite:///{server.data_dir / 'marketplace.sqlite3'}")
    rows = (
        NewEntry(
            identifier=identifier,
            email=f"e{i}@example.org",
            created="2026-01-01T00:00:00Z",
            xml=b"<x/>",
            etag="0" * 64,
            sha1=hashlib.sha1(image).hexdigest(),
            bytes=len(image),
        )
        for i in range(HISTORY_ROWS + 20)
    )
    storage.add_many(rows, now=dt.datetime.now(dt.UTC))
    storage.close()
    page = httpx.get(server.url + path, params={"media": "html"}).text
    assert page.count('class="entry-link"') == HISTORY_ROWS
    assert 'class="more-history"' in page
