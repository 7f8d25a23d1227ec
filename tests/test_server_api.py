"""The registry's HTTP API against a real server process, on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
import os

import httpx
import pytest
from lxml import etree

from imagekit.image.identifier import sha1_to_id

pytestmark = pytest.mark.timeout(300)
XML = {"Content-Type": "application/xml"}


@pytest.fixture
def http(market_server):
    with httpx.Client(base_url=market_server.url, timeout=30) as client:
        yield client


def upload(http, data: bytes) -> str:
    r = http.post("/metadata", content=data, headers=XML)
    assert r.status_code == 201, r.text
    return r.headers["Location"]


def test_upload_then_get_returns_the_original_bytes(http, make_endorser, make_signed):
    me = make_endorser()
    data = make_signed(me, ago=60)
    location = upload(http, data)
    identifier = location.split("/")[2]
    assert location.startswith(f"/metadata/{identifier}/{me.email}/")
    r = http.get(location)
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["content-type"] == "application/xml"
    assert r.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert "immutable" in r.headers["cache-control"]
    again = http.get(location)  # served from the cache this time
    assert again.content == data
    r = http.get(location, headers={"If-None-Match": r.headers["etag"]})
    assert r.status_code == 304 and r.content == b""
    assert http.head(location).headers["content-length"] == str(len(data))


def test_entry_as_json_and_html(http, make_endorser, make_signed):
    me = make_endorser()
    location = upload(http, make_signed(me, ago=60, title="JSON me", os_name="alpine"))
    doc = http.get(location, headers={"Accept": "application/json"}).json()
    assert doc["title"] == "JSON me" and doc["os"] == "alpine" and doc["status"] == "valid"
    assert doc["entry"]["title"] == "JSON me"
    assert doc["entry"]["endorsement"]["endorser"]["email"] == me.email
    assert http.get(location, params={"media": "json"}).json()["path"] == location
    page = http.get(location, headers={"Accept": "text/html,application/xml;q=0.9"})
    assert page.headers["content-type"].startswith("text/html")
    assert "JSON me" in page.text
    assert http.get(location, params={"media": "xml"}).content.startswith(b"<?xml")


def test_list_is_xml_wrapped_in_metadata(http, make_endorser, make_signed):
    me = make_endorser()
    signed = [make_signed(me, ago=60, title=f"list {i}") for i in range(3)]
    for data in signed:
        upload(http, data)
    r = http.get("/metadata", params={"email": me.email})
    assert r.status_code == 200 and r.headers["x-total-count"] == "3"
    assert r.content.count(b"<?xml") == 1
    root = etree.fromstring(r.content)
    assert root.tag == "metadata"
    assert len(root) == 3
    titles = {e.findtext(".//{http://purl.org/dc/terms/}title") for e in root}
    assert titles == {"list 0", "list 1", "list 2"}


def test_filters(http, make_endorser, make_signed):
    me = make_endorser()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    upload(
        http,
        make_signed(
            me,
            ago=60,
            title="deb box",
            os_name="debian",
            arch="x86_64",
            locations=("http://files.example.org/deb.img",),
        ),
    )
    upload(
        http,
        make_signed(me, ago=60, title="alpine box", os_name="alpine", arch="aarch64", kind="disk"),
    )
    upload(
        http,
        make_signed(
            me, ago=60, title="old box", os_name="debian", valid=now - dt.timedelta(days=1)
        ),
    )
    upload(http, make_signed(me, ago=60, title="bad box", os_name="debian", deprecated="broken"))

    def titles(**params):
        r = http.get("/api/entries", params={"email": me.email, **params})
        assert r.status_code == 200, r.text
        return sorted(e["title"] for e in r.json()["entries"])

    assert titles() == ["alpine box", "bad box", "deb box", "old box"]
    assert titles(os="debian") == ["bad box", "deb box", "old box"]
    assert titles(arch="aarch64") == ["alpine box"]
    assert titles(kind="disk") == ["alpine box"]
    assert titles(status="valid") == ["alpine box", "deb box"]
    assert titles(status="expired") == ["old box"]
    assert titles(status="deprecated") == ["bad box"]
    assert titles(q="alp") == ["alpine box"]
    assert titles(q="BOX old") == ["old box"]
    assert titles(q="deb") == ["bad box", "deb box", "old box"]  # os debian
    assert titles(q="nothing-like-this") == []
    assert titles(location="http://files.example.org/deb.img") == ["deb box"]
    page1 = http.get("/api/entries", params={"email": me.email, "limit": 3}).json()
    page2 = http.get("/api/entries", params={"email": me.email, "limit": 3, "offset": 3}).json()
    counted = http.get("/api/entries", params={"email": me.email, "limit": 3, "count": "1"})
    assert (page1["total"], page1["more"]) == (None, True)
    assert (page2["total"], page2["more"]) == (4, False)
    assert counted.json()["total"] == 4
    assert len(page1["entries"]) == 3 and len(page2["entries"]) == 1
    assert {e["title"] for e in page1["entries"] + page2["entries"]} == {
        "alpine box",
        "bad box",
        "deb box",
        "old box",
    }
    # path parts are classified: e-mail, then ID + e-mail
    r = http.get(f"/metadata/{me.email}", params={"media": "json", "os": "alpine"})
    assert [e["title"] for e in r.json()["entries"]] == ["alpine box"]
    ident = r.json()["entries"][0]["identifier"]
    r = http.get(f"/metadata/{ident}/{me.email}", params={"media": "json"})
    assert r.json()["total"] == 1


def test_append_only_history_and_refusal_of_older(http, make_endorser, make_signed):
    from tests.plugins.market import draft_entry, sign

    me = make_endorser()
    image = os.urandom(100)
    first = sign(draft_entry(image, title="v1"), me, ago=300)
    second = sign(draft_entry(image, title="v2"), me, ago=200)
    older = sign(draft_entry(image, title="v0"), me, ago=400)
    loc1 = upload(http, first)
    loc2 = upload(http, second)
    r = http.post("/metadata", headers=XML, content=older)
    assert r.status_code == 409
    assert r.text.count("\n") <= 1 and "append-only" in r.text
    r = http.post("/metadata", headers=XML, content=second)  # the same key again
    assert r.status_code == 409
    ident = loc1.split("/")[2]
    current = http.get(f"/api/entries/{ident}").json()
    assert [e["title"] for e in current] == ["v2"]
    history = http.get(f"/api/entries/{ident}", params={"history": "true"}).json()
    assert [(e["title"], e["latest"]) for e in history] == [("v2", True), ("v1", False)]
    assert http.get(loc1).content == first  # superseded entries stay readable
    assert http.get(loc2).content == second


def test_identifier_prefixes(http, make_endorser, make_signed):
    me = make_endorser()
    seen: dict[str, bytes] = {}
    while True:  # two images whose IDs share a first character
        image = os.urandom(32)
        ident = sha1_to_id(hashlib.sha1(image).hexdigest())
        if ident[0] in seen:
            break
        seen[ident[0]] = image
    from tests.plugins.market import draft_entry, sign

    loc_a = upload(http, sign(draft_entry(seen[ident[0]]), me, ago=60))
    upload(http, sign(draft_entry(image), me, ago=60))
    full = loc_a.split("/")[2]
    email, created = loc_a.split("/")[3:5]
    r = http.get(f"/metadata/{full[:20]}/{email}/{created}")
    assert r.status_code == 200 and r.headers["content-location"] == loc_a
    r = http.get(f"/metadata/{full[:1]}", params={"email": me.email, "media": "json"})
    assert r.status_code == 409 and "ambiguous" in r.text
    assert r.headers["x-imagekit-error"] == "Ambiguous"
    r = http.get("/metadata/ZZZZZZZZZZZZZZZZZZZZZZZZ")
    assert r.status_code == 404 and r.text.count("\n") == 1


def test_tag_is_the_newest_non_deprecated(http, make_endorser, make_signed):
    me = make_endorser()
    old = make_signed(me, ago=600, tag="debian-base", title="old")
    new = make_signed(me, ago=300, tag="debian-base", title="new")
    newest_deprecated = make_signed(
        me, ago=100, tag="debian-base", title="broken", deprecated="oops"
    )
    for data in (old, new, newest_deprecated):
        upload(http, data)
    r = http.get(f"/tag/{me.email}/debian-base")
    assert r.status_code == 200 and r.content == new
    r = http.get("/api/entries", params={"email": me.email, "tag": "debian-base"})
    assert r.json()["entries"][0]["title"] == "new"
    assert http.get(f"/tag/{me.email}/no-such-tag").status_code == 404


def test_endorsers(http, make_endorser, make_signed):
    me = make_endorser()
    upload(http, make_signed(me, ago=60))
    upload(http, make_signed(me, ago=60))
    everyone = http.get("/endorsers").json()
    assert {"email": me.email, "entries": 2}.items() <= next(
        e for e in everyone if e["email"] == me.email
    ).items()
    detail = http.get(f"/endorsers/{me.email}").json()
    assert detail["entries"] == 2 and len(detail["history"]) == 2
    assert http.get("/endorsers/nobody@example.org").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/metadata?limit=abc",
        "/metadata?limit=0",
        "/metadata?limit=100000",
        "/metadata?offset=-1",
        "/metadata?status=bogus",
        "/metadata?created=yesterday",
        "/metadata?media=pdf",
        "/api/entries?history=maybe",
        "/metadata/a@b.org/c@d.org",
        "/metadata?email=%00",
        "/api/entries?os=a%00b",
        "/endorsers/x%00@y.org",
        "/metadata/AAAAAAAAAAAAAAAAAAAAAAAAAAA/a%00@b.org/2024-01-01T00:00:00Z",
    ],
    ids=[
        "limit-text",
        "limit-zero",
        "limit-huge",
        "offset-negative",
        "status",
        "created",
        "media",
        "history-bool",
        "two-emails",
        "nul-email",
        "nul-os",
        "nul-endorser",
        "nul-key",
    ],
)
def test_bad_query_values_are_400_one_line(http, path):
    r = http.get(path)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text.endswith("\n") and r.text.count("\n") == 1


def test_openapi_documents_the_json_routes(http):
    doc = http.get("/openapi.json").json()
    for path in (
        "/api/entries",
        "/api/entries/{identifier}/{email}/{created}",
        "/api/tag/{email}/{tag}",
        "/api/endorsers",
        "/metadata",
    ):
        assert path in doc["paths"]
    summary = doc["components"]["schemas"]["EntrySummary"]  # one declaration, both sides
    fields = set(summary["properties"])
    assert {"identifier", "email", "created", "sha1", "status", "path"} <= fields
    upload_body = doc["paths"]["/metadata"]["post"]["requestBody"]["content"]
    assert "application/xml" in upload_body


def test_email_with_url_characters(http, make_endorser, make_signed):
    me = make_endorser(f"odd?{os.urandom(3).hex()}#x%y@example.org")
    data = make_signed(me, ago=60)
    location = upload(http, data)
    assert "?" not in location and "#" not in location
    assert http.get(location).content == data
    assert http.get(location, params={"media": "json"}).json()["email"] == me.email
    assert http.get("/api/entries", params={"email": me.email}).json()["total"] == 1


def test_racing_uploads_of_one_key_store_one(market_server, make_endorser):
    from concurrent.futures import ThreadPoolExecutor

    from tests.plugins.market import draft_entry, sign

    me = make_endorser()
    image = os.urandom(40)
    # eight endorsements of one (ID, endorser), all sent at once
    versions = [sign(draft_entry(image, title=f"r{i}"), me, ago=100 + i) for i in range(8)]

    def post(data: bytes) -> int:
        return httpx.post(
            market_server.url + "/metadata", content=data, headers=XML, timeout=30
        ).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(post, versions))
    assert set(codes) <= {201, 409} and 201 in codes
    ident = sha1_to_id(hashlib.sha1(image).hexdigest())
    history = httpx.get(
        market_server.url + f"/api/entries/{ident}", params={"history": "true"}
    ).json()
    assert len(history) == codes.count(201)
    assert [e["latest"] for e in history] == [True] + [False] * (len(history) - 1)
    created = [e["created"] for e in history]
    assert created == sorted(created, reverse=True)
