"""Marketplace server bench: search/list/GET latencies over many entries, and the entry
GET's throughput against nginx serving the same signed files, measured in the same run.

Backend: SQLite, or PostgreSQL (a temporary cluster) with ``BENCH_SERVER_BACKEND=postgresql``.
Data (``BENCH_SERVER_ENTRIES``, default 100,000; ``--quick``: 5,000): a pool of distinct,
genuinely signed entries (``BENCH_SERVER_SIGNED``, default 2,000; ECDSA P-256 keys of 20
endorsers, signed in parallel by ``imagekit.signing.sign.sign_entry``) goes through the server's
full ingest (verification included). The remaining rows are loaded with
``Storage.add_many``: each has its own identifier and its own mix of indexed columns
(endorser, OS, version, arch, kind, tag, words of title and description, validity,
deprecation), and reuses a pool entry's signed bytes as its stored XML. Searching costs
what the index columns cost, not what the signatures cost, and signing 100,000 entries
would take most of an hour on two shared cores.

Measured:
* p50/p99 of sequential httpx requests: filtered searches (``/api/entries`` with OS, arch,
  status, text), XML and JSON lists, single entry GETs (cache cold, then warm);
  target: filtered search p99 <= 50 ms;
* requests/s of one entry GET with ``wrk`` (32 connections) against the server (1 uvicorn
  worker, httptools, uvloop) and against nginx (1 worker) serving the same bytes from
  files under the same paths; target: >= 15% of nginx.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import random
import re
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from ._common import BenchArgs, Row, bench_dir, free_port, start_marketplace, stop_process

ROOT = Path(__file__).resolve().parents[1]
OSES = [
    ("debian", ["11", "12", "13"]),
    ("ubuntu", ["22.04", "24.04"]),
    ("alpine", ["3.19"]),
    ("fedora", ["39", "40"]),
    ("centos", ["7", "9"]),
    ("rocky", ["9"]),
]
ARCHES = ["x86_64", "x86_64", "x86_64", "aarch64", "i686"]
WORDS = [
    "web",
    "server",
    "database",
    "cache",
    "proxy",
    "minimal",
    "base",
    "desktop",
    "compute",
    "storage",
    "analytics",
    "notebook",
    "cluster",
    "gateway",
    "monitor",
    "builder",
    "runner",
    "mail",
    "dns",
    "ldap",
    "vpn",
    "ci",
    "edge",
]


def _fields(rng: random.Random, i: int) -> dict[str, Any]:
    os_name, versions = rng.choice(OSES)
    words = rng.sample(WORDS, 3)
    return {
        "title": f"{os_name} {words[0]} {words[1]} #{i}",
        "description": f"A {words[2]} appliance on {os_name}, build {i}",
        "os_name": os_name,
        "os_version": rng.choice(versions),
        "arch": rng.choice(ARCHES),
        "kind": "disk" if rng.random() < 0.1 else "machine",
        "tag": f"{os_name}-{words[0]}" if rng.random() < 0.3 else None,
    }


def _sign_chunk(args: tuple[list[tuple[bytes, bytes]], int, int, int]) -> list[bytes]:
    """Worker: sign entries ``start..stop`` (seeded, so the run is reproducible)."""
    from imagekit.signing.keys import load_signer
    from imagekit.signing.sign import sign_entry

    sys.path.insert(0, str(ROOT))
    from tests.plugins.market import draft_entry

    keys, start, stop, seed = args
    import tempfile

    signers = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, (key, cert) in enumerate(keys):
            (Path(tmp) / f"{n}.key").write_bytes(key)
            (Path(tmp) / f"{n}.crt").write_bytes(cert)
            signers.append(load_signer(key=Path(tmp) / f"{n}.key", cert=Path(tmp) / f"{n}.crt"))
    now = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    out = []
    for i in range(start, stop):
        rng = random.Random(seed * 1_000_003 + i)
        f = _fields(rng, i)
        valid = now + dt.timedelta(days=-1 if rng.random() < 0.1 else 365)
        draft = draft_entry(
            rng.randbytes(48),
            valid=valid,
            deprecated="superseded" if rng.random() < 0.05 else None,
            **f,
        )
        out.append(sign_entry(draft, signers[i % len(signers)], now=now))
    return out


def _make_keys(n: int) -> list[tuple[bytes, bytes]]:
    from imagekit.signing.keys import Signer, make_certificate, make_private_key

    keys = []
    for k in range(n):
        key = make_private_key("ec")
        cert = make_certificate(
            key,
            f"endorser{k}@bench.example.org",
            f"Bench {k}",
            30,
            now=dt.datetime.now(dt.UTC) - dt.timedelta(days=1),
        )
        s = Signer(key, cert)
        keys.append((s.key_pem(), s.cert_pem()))
    return keys


def _load(
    db_dir: Path, total: int, signed_count: int, db_url: str | None = None
) -> tuple[list[bytes], list[str]]:
    """Fill the database; return the signed pool and its entry paths."""
    from imagekit.entry import format_date
    from marketplace_server.config import ServerConfig
    from marketplace_server.ingest import Ingestor
    from marketplace_server.storage import NewEntry, Storage

    keys = _make_keys(20)
    workers = max(os.cpu_count() or 1, 1)
    step = (signed_count + workers - 1) // workers
    chunks = [(keys, s, min(s + step, signed_count), 7) for s in range(0, signed_count, step)]
    with ProcessPoolExecutor(workers) as pool:
        signed = [x for part in pool.map(_sign_chunk, chunks) for x in part]
    db_dir.mkdir(parents=True, exist_ok=True)
    config = ServerConfig(data_dir=db_dir, db=db_url)
    storage = Storage(config.database_url)
    storage.create_schema()
    ingestor = Ingestor(config)
    now = dt.datetime.now(dt.UTC)
    rows = [ingestor.ingest(x, now=now) for x in signed]
    storage.add_many(rows, now=now)
    paths = [f"/metadata/{r.identifier}/{r.email}/{r.created}" for r in rows]

    rng = random.Random(11)
    stamp = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)

    def filler() -> Any:
        for i in range(signed_count, total):
            f = _fields(rng, i)
            xml = signed[i % len(signed)]
            sha1 = hashlib.sha1(i.to_bytes(8, "big") + b"filler").hexdigest()
            from imagekit.image.identifier import sha1_to_id

            yield NewEntry(
                identifier=sha1_to_id(sha1),
                email=f"endorser{i % 20}@bench.example.org",
                created=format_date(stamp + dt.timedelta(seconds=i * 300)),
                xml=xml,
                etag=hashlib.sha256(xml).hexdigest(),
                sha1=sha1,
                bytes=48,
                valid=format_date(now + dt.timedelta(days=-1 if rng.random() < 0.1 else 365)),
                deprecated="superseded" if rng.random() < 0.05 else None,
                os=f["os_name"],
                os_version=f["os_version"],
                arch=f["arch"],
                kind=f["kind"],
                tag=f["tag"],
                title=f["title"],
                description=f["description"],
                locations=(f"https://images.example.org/{sha1}.qcow2.gz",),
            )

    storage.add_many(filler(), now=now)
    with storage.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    storage.close()
    return signed, paths


def _percentiles(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return s[len(s) // 2], s[min(len(s) - 1, int(len(s) * 0.99))]


def _latency(client: httpx.Client, urls: list[str]) -> tuple[float, float]:
    samples = []
    for url in urls:
        t = time.perf_counter()
        r = client.get(url)
        samples.append((time.perf_counter() - t) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"{url}: {r.status_code} {r.text[:200]}")
    return _percentiles(samples)


def _wrk(url: str, seconds: int) -> float:
    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", url],
        check=True,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m is None or errors:
        raise RuntimeError(f"wrk: {out}")
    return float(m.group(1))


def _start_nginx(work: Path, pool: list[bytes], paths: list[str]) -> tuple[Any, str]:
    root = work / "www"
    for data, path in zip(pool, paths, strict=True):
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(f"""
user root;
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    default_type application/xml;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {work}/nginx-tmp;
    proxy_temp_path {work}/nginx-tmp;
    fastcgi_temp_path {work}/nginx-tmp;
    uwsgi_temp_path {work}/nginx-tmp;
    scgi_temp_path {work}/nginx-tmp;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        etag on;
    }}
}}
""")
    proc = subprocess.Popen(
        ["nginx", "-c", str(conf), "-p", str(work)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _wait(f"http://127.0.0.1:{port}/", proc, ok_status=(200, 403, 404))
    return proc, f"http://127.0.0.1:{port}"


def _wait(url: str, proc: Any, ok_status: tuple[int, ...] = (200,)) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code in ok_status:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def run(args: BenchArgs) -> list[Row]:
    total = int(os.environ.get("BENCH_SERVER_ENTRIES", 5_000 if args.quick else 100_000))
    signed_count = min(total, int(os.environ.get("BENCH_SERVER_SIGNED", 2_000)))
    seconds = int(os.environ.get("BENCH_SERVER_WRK_SECONDS", 5 if args.quick else 10))
    rows: list[Row] = []
    name = "server"
    backend = os.environ.get("BENCH_SERVER_BACKEND", "sqlite")
    with bench_dir("bench-server", keep=args.keep) as work:
        cluster = db_url = None
        if backend == "postgresql":
            sys.path.insert(0, str(ROOT))
            from tests.plugins.market import PostgresCluster

            os.chmod(work, 0o755)  # the postgres user must reach its directory
            cluster = PostgresCluster(work / "pg")
            cluster.start()
            db_url = cluster.new_database()
            name = "server-pg"
        t = time.perf_counter()
        pool, paths = _load(work / "data", total, signed_count, db_url)
        load_s = time.perf_counter() - t
        rows.append(Row.make(name, f"load {total} entries ({signed_count} signed)", load_s, "s"))
        server, base = start_marketplace(work / "data", db=db_url)
        nginx = None
        try:
            rng = random.Random(5)
            searches = []
            for _ in range(300):
                os_name, versions = rng.choice(OSES)
                params = [
                    f"os={os_name}",
                    f"arch={rng.choice(ARCHES)}",
                    "status=valid",
                    f"q={rng.choice(WORDS)}",
                    "limit=20",
                ]
                if rng.random() < 0.5:
                    params.append(f"email=endorser{rng.randrange(20)}@bench.example.org")
                if rng.random() < 0.3:
                    params.append(f"os-version={rng.choice(versions)}")
                searches.append(base + "/api/entries?" + "&".join(params))
            lists_xml = [
                base + f"/metadata?limit=20&offset={rng.randrange(0, 5000)}" for _ in range(200)
            ]
            lists_json = [
                base + f"/api/entries?limit=20&os={rng.choice(OSES)[0]}" for _ in range(200)
            ]
            gets = [base + p for p in rng.sample(paths, min(len(paths), 500))]
            with httpx.Client(timeout=30) as client:
                _latency(client, searches[:20])  # warm up connections and page cache
                for metric, urls, target in (
                    ("filtered search", searches, "<= 50"),
                    ("list XML (20)", lists_xml, None),
                    ("list JSON (20)", lists_json, None),
                    ("GET entry, cold cache", gets, None),
                    ("GET entry, warm cache", gets, None),
                ):
                    p50, p99 = _latency(client, urls)
                    rows.append(Row.make(name, f"{metric} p50", p50, "ms"))
                    rows.append(Row.make(name, f"{metric} p99", p99, "ms", target=target))
            nginx, nginx_base = _start_nginx(work, pool, paths)
            path = paths[len(paths) // 2]
            assert httpx.get(nginx_base + path).content == httpx.get(base + path).content
            nginx_rps = _wrk(nginx_base + path, seconds)
            server_rps = _wrk(base + path, seconds)
            rows.append(Row.make(name, "GET entry nginx (1 worker)", nginx_rps, "req/s"))
            rows.append(
                Row.make(
                    name,
                    "GET entry server (1 worker)",
                    server_rps,
                    "req/s",
                    baseline=("nginx", nginx_rps),
                    target=">= 0.15",
                )
            )
        finally:
            stop_process(server)
            if nginx is not None:
                stop_process(nginx)
            if cluster is not None:
                cluster.stop()
    return rows


if __name__ == "__main__":
    from ._common import format_table

    print(format_table(run(BenchArgs(quick="--quick" in sys.argv))))
