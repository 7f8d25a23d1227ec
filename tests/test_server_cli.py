"""``imagekit serve | search | show | deprecate`` end to end."""

from __future__ import annotations

import json

import httpx
import pytest

from imagekit.entry import parse_entry_bytes
from imagekit.market.client import MarketplaceClient
from imagekit.signing.trust import TrustStore
from imagekit.signing.verify import verify_entry

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def market(marketplace, monkeypatch):
    monkeypatch.setenv("IMAGEKIT_MARKETPLACE", marketplace.url)
    return MarketplaceClient(marketplace.url)


def test_serve_command_runs_the_registry(start_marketplace, make_endorser, make_signed):
    server = start_marketplace(via_cli=True)
    data = make_signed(make_endorser(), ago=60)
    r = httpx.post(
        server.url + "/metadata", content=data, headers={"Content-Type": "application/xml"}
    )
    assert r.status_code == 201
    assert (server.data_dir / "marketplace.sqlite3").exists()
    assert httpx.get(server.url + r.headers["Location"]).content == data


def test_search(cli, market, make_endorser, make_signed):
    me = make_endorser()
    market.upload(make_signed(me, ago=60, title="cli debian", os_name="debian"))
    market.upload(make_signed(me, ago=60, title="cli alpine", os_name="alpine"))
    market.upload(make_signed(me, ago=60, title="cli gone", os_name="debian", deprecated="x"))
    r = cli("search", "--os", "debian", "--endorser", me.email, "--status", "valid", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["total"] == 1 and doc["entries"][0]["title"] == "cli debian"
    r = cli("search", "alpine", "--endorser", me.email)
    assert r.exit_code == 0
    assert "cli alpine" in r.stdout and "cli debian" not in r.stdout
    assert r.stderr.strip() == "1 entry"
    r = cli("search", "--status", "bogus")
    assert r.exit_code == 2


def test_show_and_history(cli, market, make_endorser):
    from tests.plugins.market import draft_entry, sign

    me = make_endorser()
    draft = draft_entry(title="shown box")
    market.upload(sign(draft, me, ago=200))
    path = market.upload(sign(draft, me, ago=100))
    ident = path.split("/")[2]
    r = cli("show", ident[:24])
    assert r.exit_code == 0, r.stderr
    assert "shown box  [valid]" in r.stdout and me.email in r.stdout
    r = cli("show", ident, "--history", "--json")
    assert [e["latest"] for e in json.loads(r.stdout)] == [True, False]
    r = cli("show", ident, "--xml")
    assert r.stdout.encode() == market.get_path(path)
    r = cli("show", "Z" * 27)
    assert r.exit_code == 2 and r.stderr.startswith("imagekit: error: no entry")


def test_deprecate_publishes_a_newer_signed_entry(cli, market, make_endorser, make_signed):
    me = make_endorser()
    original = make_signed(me, ago=60, title="to deprecate")
    path = market.upload(original)
    ident = path.split("/")[2]
    r = cli(
        "deprecate",
        ident,
        "--reason",
        "CVE-2024-0001",
        "--key",
        me.key_path,
        "--cert",
        me.cert_path,
    )
    assert r.exit_code == 0, r.stderr
    current = market.current(ident)
    assert len(current) == 1 and current[0].deprecated == "CVE-2024-0001"
    assert current[0].created > path.split("/")[4]
    data = market.get_path(current[0].path)
    trust = TrustStore(pinned=(me.signer.certificate,))
    import datetime as dt

    verified = verify_entry(data, trust, now=dt.datetime.now(dt.UTC))
    assert verified.entry.deprecated == "CVE-2024-0001"
    assert verified.entry.title == "to deprecate"
    assert parse_entry_bytes(market.get_path(path)).deprecated is None  # history kept
    r = cli("deprecate", ident, "--reason", "again", "--key", me.key_path, "--cert", me.cert_path)
    assert r.exit_code == 2 and "already deprecated" in r.stderr


def test_deprecate_refuses_someone_elses_entry(cli, market, make_endorser, make_signed):
    owner, other = make_endorser(), make_endorser()
    ident = market.upload(make_signed(owner, ago=60)).split("/")[2]
    r = cli(
        "deprecate",
        ident,
        "--reason",
        "mine now",
        "--key",
        other.key_path,
        "--cert",
        other.cert_path,
    )
    assert r.exit_code == 2
    assert f"endorsed by {other.email}" in r.stderr
