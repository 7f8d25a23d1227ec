"""Open mode binds an endorser e-mail to the first certificate that publishes under it.

An impostor's self-signed certificate claiming someone's e-mail must not let it repoint their
tags, deprecate their images or lock them out with an endorsement dated 2099; the genuine
endorser is unaffected; an admin rebinds; a CA the server trusts vouches for a new
certificate. On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import os

import httpx
import pytest

from imagekit.signing.certs import certificate_fingerprint
from imagekit.signing.keys import Signer, make_certificate, make_private_key
from imagekit.signing.sign import sign_entry
from tests.plugins.market import Endorser, draft_entry, new_endorser, sign
from tests.plugins.signing import make_cert, pem

pytestmark = pytest.mark.timeout(300)

XML = {"Content-Type": "application/xml"}


@pytest.fixture
def http(market_server):
    with httpx.Client(base_url=market_server.url, timeout=30) as client:
        yield client


def impostor_of(victim: Endorser, tmp_path, *, days: int = 30) -> Endorser:
    """A fresh self-signed certificate that claims ``victim``'s e-mail."""
    key = make_private_key("ec")
    cert = make_certificate(
        key, victim.email, "Not Really", days, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    )
    signer = Signer(key, cert)
    cert_path = tmp_path / "impostor.crt"
    cert_path.write_bytes(signer.cert_pem())
    return Endorser(victim.email, signer, tmp_path / "impostor.key", cert_path)


def post(http, data: bytes) -> httpx.Response:
    return http.post("/metadata", content=data, headers=XML)


def refused_as_not_bound(r: httpx.Response, victim: Endorser) -> None:
    assert r.status_code == 403, r.text
    assert r.text.count("\n") == 1
    assert r.text.startswith(f"refused: endorser {victim.email} is bound to another certificate")
    assert certificate_fingerprint(victim.signer.certificate) in r.text


def test_impostor_cannot_repoint_a_tag(http, make_endorser, tmp_path):
    victim = make_endorser()
    genuine = sign(draft_entry(tag="debian-base", title="genuine"), victim, ago=120)
    assert post(http, genuine).status_code == 201
    evil = sign(draft_entry(tag="debian-base", title="evil"), impostor_of(victim, tmp_path), ago=60)
    refused_as_not_bound(post(http, evil), victim)
    assert http.get(f"/tag/{victim.email}/debian-base").content == genuine


def test_impostor_cannot_deprecate_an_image(http, make_endorser, tmp_path):
    victim = make_endorser()
    image = os.urandom(64)
    assert post(http, sign(draft_entry(image), victim, ago=120)).status_code == 201
    deprecation = sign(
        draft_entry(image, deprecated="withdrawn"), impostor_of(victim, tmp_path), ago=60
    )
    refused_as_not_bound(post(http, deprecation), victim)
    (summary,) = http.get("/api/entries", params={"email": victim.email}).json()["entries"]
    assert summary["status"] == "valid"


def test_impostor_entry_dated_2099_does_not_lock_out_the_endorser(http, make_endorser, tmp_path):
    victim = make_endorser()
    image = os.urandom(64)
    assert post(http, sign(draft_entry(image), victim, ago=300)).status_code == 201
    impostor = impostor_of(victim, tmp_path, days=30_000)  # valid in 2099
    future = sign_entry(
        draft_entry(image, valid=dt.datetime(2100, 1, 1, tzinfo=dt.UTC)),
        impostor.signer,
        now=dt.datetime(2099, 1, 1, tzinfo=dt.UTC),
    )
    r = post(http, future)
    assert r.status_code in (400, 403), r.text  # not bound (or dated beyond the clock skew)
    assert post(http, sign(draft_entry(image), victim, ago=60)).status_code == 201


def test_genuine_endorser_unaffected_and_fingerprint_shown(http, make_endorser):
    me = make_endorser()
    image = os.urandom(64)
    for ago in (300, 200, 100):
        assert post(http, sign(draft_entry(image), me, ago=ago)).status_code == 201
    fingerprint = certificate_fingerprint(me.signer.certificate)
    doc = http.get(f"/api/endorsers/{me.email}").json()
    assert (doc["fingerprint"], doc["bound_via"]) == (fingerprint, "first-use")
    listed = {e["email"]: e for e in http.get("/endorsers", params={"limit": 1000}).json()}
    assert listed[me.email]["fingerprint"] == fingerprint
    page = http.get(f"/endorsers/{me.email}", params={"media": "html"}).text
    assert f'<code class="fingerprint">{fingerprint}</code>' in page


def test_admin_rebind_moves_the_binding(http, market_server, cli, make_endorser, tmp_path):
    old = make_endorser()
    assert post(http, sign(draft_entry(), old, ago=120)).status_code == 201
    new = impostor_of(old, tmp_path)  # say the endorser lost their key
    refused_as_not_bound(post(http, sign(draft_entry(), new, ago=60)), old)
    where = (
        ["--db", market_server.db_url]
        if market_server.db_url
        else ["--data-dir", market_server.data_dir]
    )
    r = cli("serve-admin", "rebind", old.email, "--cert", new.cert_path, *where)
    assert r.exit_code == 0, r.stderr
    fingerprint = certificate_fingerprint(new.signer.certificate)
    assert r.stderr.startswith(f"{old.email} bound to SHA-256 {fingerprint} (was ")
    assert post(http, sign(draft_entry(), new, ago=50)).status_code == 201
    refused_as_not_bound(post(http, sign(draft_entry(), old, ago=40)), new)
    assert http.get(f"/api/endorsers/{old.email}").json()["bound_via"] == "admin"


def test_rebind_bad_input_is_one_line(cli, tmp_path):
    (tmp_path / "marketplace.sqlite3").touch()
    (tmp_path / "x.crt").write_text("not a certificate")
    r = cli(
        "serve-admin",
        "rebind",
        "a@example.org",
        "--cert",
        tmp_path / "x.crt",
        "--data-dir",
        tmp_path,
    )
    assert r.exit_code == 2
    assert r.stderr.splitlines()[0].startswith("imagekit: error: not a certificate")
    me = new_endorser(tmp_path / "keys")
    r = cli(
        "serve-admin",
        "rebind",
        me.email,
        "--cert",
        me.cert_path,
        "--data-dir",
        tmp_path / "nowhere",
    )
    assert r.stderr.splitlines()[0] == (
        f"imagekit: error: no marketplace database in {tmp_path}/nowhere"
    )
    r = cli(
        "serve-admin", "rebind", "not an address", "--cert", me.cert_path, "--data-dir", tmp_path
    )
    assert r.stderr.splitlines() == ["imagekit: error: not an e-mail address: 'not an address'"]


def test_trusted_ca_vouches_for_a_new_certificate(start_marketplace, tmp_path):
    ca = make_cert("Site CA", ca=True, days=365)
    (tmp_path / "ca.pem").write_bytes(pem(ca[1]))
    email = "images@site.example.org"
    server = start_marketplace(trust=(str(tmp_path / "ca.pem"),))
    signers = []
    for n in (1, 2):
        key, cert = make_cert(f"Images {n}", issuer=ca, email=email)
        signers.append(Endorser(email, Signer(key, cert), tmp_path / "k", tmp_path / "c"))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert post(http, sign(draft_entry(), signers[0], ago=120)).status_code == 201
        assert post(http, sign(draft_entry(), signers[1], ago=60)).status_code == 201, "renewed"
        doc = http.get(f"/api/endorsers/{email}").json()
    assert doc["fingerprint"] == certificate_fingerprint(signers[1].signer.certificate)
    assert doc["bound_via"] == "trusted"


def test_endorsers_stored_before_bindings_are_bound_at_start(tmp_path):
    """An upgraded registry binds each old endorser to its first upload's certificate, so
    no impostor can claim the e-mail first."""
    from sqlalchemy import create_engine, text

    from marketplace_server.app import create_app
    from marketplace_server.config import ServerConfig
    from marketplace_server.ingest import Ingestor

    config = ServerConfig(data_dir=tmp_path)
    app = create_app(config)
    me = new_endorser(tmp_path / "keys")
    now = dt.datetime.now(dt.UTC)
    app.storage.add(Ingestor(config).ingest(sign(draft_entry(), me, ago=60), now=now), now=now)
    app.storage.close()
    engine = create_engine(config.database_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE endorser_bindings"))  # as before this change
    engine.dispose()
    again = create_app(config)
    binding = again.storage.binding(me.email)
    assert binding is not None and binding.via == "first-use"
    assert binding.fingerprint == certificate_fingerprint(me.signer.certificate)
    again.storage.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_racing_first_uploads_by_different_certificates_bind_one(
    start_marketplace, backend, tmp_path
):
    """Eight certificates claim one new e-mail at once, through two worker processes: one
    binds it, the others are refused."""
    from concurrent.futures import ThreadPoolExecutor

    server = start_marketplace(backend=backend, extra=("--workers", "2"))
    victim = new_endorser(tmp_path / "keys")
    claimants = [impostor_of(victim, tmp_path) for _ in range(8)]
    uploads = [sign(draft_entry(), c, ago=60) for c in claimants]

    def post_one(data: bytes) -> int:
        return httpx.post(
            server.url + "/metadata", content=data, headers=XML, timeout=30
        ).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(post_one, uploads))
    assert codes == [201] + [403] * 7
    bound = httpx.get(f"{server.url}/api/endorsers/{victim.email}").json()["fingerprint"]
    assert bound in {certificate_fingerprint(c.signer.certificate) for c in claimants}


def test_bulk_load_binds_like_uploads(tmp_path):
    from marketplace_server.storage import CertificateNotBound, NewEntry, SignerCert, Storage

    storage = Storage(f"sqlite:///{tmp_path / 'm.sqlite3'}")
    storage.create_schema()
    now = dt.datetime.now(dt.UTC)

    def row(i: int, fingerprint: str) -> NewEntry:
        return NewEntry(
            identifier=f"B{i:026d}",
            email="bulk@example.org",
            created="2026-01-01T00:00:00Z",
            xml=b"<x/>",
            etag="0" * 64,
            sha1="0" * 40,
            bytes=1,
            signer=SignerCert(fingerprint, "CN=x"),
        )

    with pytest.raises(CertificateNotBound):
        storage.add_many([row(1, "a" * 64), row(2, "b" * 64)], now=now)
    assert storage.binding("bulk@example.org") is None  # the batch rolled back whole
    assert storage.add_many([row(1, "a" * 64), row(2, "a" * 64)], now=now) == 2
    with pytest.raises(CertificateNotBound):
        storage.add_many([row(3, "b" * 64)], now=now)
    storage.close()


def test_start_survives_stored_rows_without_a_certificate(tmp_path):
    """Rows loaded in bulk without a signature (benchmarks, imports) are left unbound."""
    from marketplace_server.app import create_app
    from marketplace_server.config import ServerConfig
    from marketplace_server.storage import NewEntry

    config = ServerConfig(data_dir=tmp_path)
    app = create_app(config)
    app.storage.add_many(
        [
            NewEntry(
                identifier="C" * 27,
                email="bare@example.org",
                created="2026-01-01T00:00:00Z",
                xml=b"<x>no children</x>",
                etag="0" * 64,
                sha1="0" * 40,
                bytes=1,
            )
        ],
        now=dt.datetime.now(dt.UTC),
    )
    app.storage.close()
    again = create_app(config)
    assert again.storage.binding("bare@example.org") is None
    again.storage.close()


def test_client_reports_an_unbound_certificate_as_untrusted(marketplace, make_endorser, tmp_path):
    from imagekit.errors import Untrusted
    from imagekit.market.client import MarketplaceClient

    victim = make_endorser()
    client = MarketplaceClient(marketplace.url)
    client.upload(sign(draft_entry(), victim, ago=120))
    with pytest.raises(
        Untrusted,
        match=f"^marketplace refused the entry: endorser {victim.email} "
        "is bound to another certificate",
    ):
        client.upload(sign(draft_entry(), impostor_of(victim, tmp_path), ago=60))


def test_open_mode_vouching_ca_takes_back_a_squatted_email(start_marketplace, tmp_path):
    """Open registry with --vouch: someone claimed the site's address first; a certificate
    from the site's CA takes it over, and the squatter is refused from then on."""
    ca = make_cert("Site CA", ca=True, days=365)
    (tmp_path / "ca.pem").write_bytes(pem(ca[1]))
    email = "images@site.example.org"
    server = start_marketplace(extra=("--vouch", str(tmp_path / "ca.pem")))
    key, cert = make_cert("Images", issuer=ca, email=email)
    genuine = Endorser(email, Signer(key, cert), tmp_path / "k", tmp_path / "c")
    squatter = impostor_of(genuine, tmp_path)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert post(http, sign(draft_entry(), squatter, ago=300)).status_code == 201
        assert post(http, sign(draft_entry(), genuine, ago=200)).status_code == 201
        refused_as_not_bound(post(http, sign(draft_entry(), squatter, ago=100)), genuine)
        doc = http.get(f"/api/endorsers/{email}").json()
        # an unrelated self-signed certificate is not vouched for: open mode still binds
        other = new_endorser(tmp_path / "others")
        assert post(http, sign(draft_entry(), other, ago=100)).status_code == 201
        assert (
            post(http, sign(draft_entry(), impostor_of(other, tmp_path), ago=50)).status_code == 403
        )
    assert (doc["fingerprint"], doc["bound_via"]) == (certificate_fingerprint(cert), "trusted")
