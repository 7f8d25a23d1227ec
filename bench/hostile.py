"""Hostile uploads: the server's CPU per request for documents built to be expensive, against
the CPU of ingesting an ordinary signed entry, measured in the same run on the same server.

A real ``marketplace_server`` process (open registry, SQLite) on loopback receives, one
request at a time over HTTP (``POST /metadata``, ``application/xml``):

* ordinary entries: distinct, genuinely signed (ECDSA P-256), each stored (201);
* hostile documents of about 1 MiB (``BENCH_HOSTILE_BYTES``), each a signed entry grown one
  way: namespace declarations on ``rdf:RDF`` (canonicalization and libxmlsec1 are quadratic
  in them: 8,000 took ~10 s before the parser's limits), certificates in ``KeyInfo`` (each
  one a candidate issuer of each other), deep nesting, one long text, and a document that
  stays within every limit (64 namespace declarations, many elements, texts just under the
  text limit) with a forged signature, so that it reaches canonicalization and the digest.

The server's CPU is read from ``/proc/<pid>/task/*/schedstat`` (nanoseconds; else
``/proc/<pid>/stat``) around each batch;
per-request CPU is the batch's CPU over its requests. Target: a hostile request costs at
most 20 times an ordinary one. Alone: ``.venv/bin/python -m bench hostile``.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from ._common import BenchArgs, Row, bench_dir, env_bytes, start_marketplace, stop_process

NAME = "hostile"
ROOT = Path(__file__).resolve().parents[1]
TARGET = "<= 20"


def _cpu_seconds(pid: int) -> float:
    """CPU time of the process's threads, in nanoseconds where the kernel keeps it
    (``schedstat``: the threads of the server's pool), else in clock ticks (``stat``)."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
        if total:
            return total / 1e9
    except (OSError, ValueError):
        pass
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # after the command: state [0] ... utime [11], stime [12] (proc(5) fields 14, 15)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _signer(work: Path):  # type: ignore[no-untyped-def]
    from imagekit.signing.keys import load_signer, make_self_signed

    key, cert = make_self_signed(
        "bench@hostile.example.org",
        "Bench",
        30,
        key_type="ec",
        now=dt.datetime.now(dt.UTC) - dt.timedelta(days=1),
    )
    (work / "k.pem").write_bytes(key)
    (work / "c.pem").write_bytes(cert)
    return load_signer(key=work / "k.pem", cert=work / "c.pem")


def _ordinary(signer, n: int) -> list[bytes]:  # type: ignore[no-untyped-def]
    from imagekit.signing.sign import sign_entry

    sys.path.insert(0, str(ROOT))
    from tests.plugins.market import draft_entry

    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    return [
        sign_entry(
            draft_entry(os.urandom(64), title=f"ordinary {i}"),
            signer,
            now=start + dt.timedelta(seconds=i),
        )
        for i in range(n)
    ]


def _grow_root(entry: bytes, size: int) -> bytes:
    each = len(b' xmlns:n00000="urn:x:00000"')
    decl = "".join(f' xmlns:n{i:05d}="urn:x:{i:05d}"' for i in range(size // each)).encode()
    return entry.replace(b"<rdf:RDF ", b"<rdf:RDF" + decl + b" ", 1)


def _certificates(entry: bytes, size: int) -> bytes:
    start = entry.index(b"<X509Certificate>")
    end = entry.index(b"</X509Certificate>") + len(b"</X509Certificate>")
    one = entry[start:end]
    return entry[:end] + one * (size // len(one)) + entry[end:]


def _nesting(entry: bytes, size: int) -> bytes:
    depth = size // len(b"<x:d></x:d>")
    deep = b'<x:d xmlns:x="urn:x">' + b"<x:d>" * depth + b"</x:d>" * (depth + 1)
    return entry.replace(b"</rdf:Description>", deep + b"</rdf:Description>", 1)


def _long_text(entry: bytes, size: int) -> bytes:
    text = b"<dcterms:description>" + b"t" * size + b"</dcterms:description>"
    return entry.replace(b"</dcterms:description>", b"</dcterms:description>" + text, 1)


def _within_limits(entry: bytes, size: int) -> bytes:
    """Everything the parser lets through, and a signature that is false (the digest of
    the whole document is computed before that is found)."""
    from imagekit.entry.xmlsafe import MAX_NAMESPACE_DECLARATIONS, MAX_TEXT_CHARS

    spare = MAX_NAMESPACE_DECLARATIONS - 8
    decl = "".join(f' xmlns:e{i}="urn:e:{i}"' for i in range(spare)).encode()
    text = "u" * (MAX_TEXT_CHARS - 16)
    budget = size - len(entry) - len(decl)
    body: list[bytes] = []
    used = i = 0
    while True:
        p = f"e{i % spare}"
        piece = f"<{p}:t{i}>{text}</{p}:t{i}>" + "".join(f"<{p}:s{i}_{j}/>" for j in range(40))
        if used + len(piece) > budget:
            break
        body.append(piece.encode())
        used += len(piece)
        i += 1
    grown = entry.replace(b"<rdf:RDF ", b"<rdf:RDF" + decl + b" ", 1)
    return grown.replace(b"</rdf:Description>", b"".join(body) + b"</rdf:Description>", 1)


HOSTILE: dict[str, Callable[[bytes, int], bytes]] = {
    "namespace declarations": _grow_root,
    "KeyInfo certificates": _certificates,
    "deep nesting": _nesting,
    "one long text": _long_text,
    "within the limits, forged signature": _within_limits,
}


def _post_all(client: httpx.Client, pid: int, docs: list[bytes]) -> tuple[float, set[int]]:
    """CPU seconds the server spent per document, and the statuses it answered."""
    statuses: set[int] = set()
    before = _cpu_seconds(pid)
    for doc in docs:
        r = client.post("/metadata", content=doc, headers={"Content-Type": "application/xml"})
        statuses.add(r.status_code)
    time.sleep(0.05)  # let the server finish its bookkeeping for the last request
    return (_cpu_seconds(pid) - before) / len(docs), statuses


def run(args: BenchArgs) -> list[Row]:
    size = env_bytes("BENCH_HOSTILE_BYTES", 1_000_000)
    n_ordinary = 40 if args.quick else 200
    n_hostile = 5 if args.quick else 20
    rows: list[Row] = []
    with bench_dir("bench-hostile", keep=args.keep) as work:
        signer = _signer(work)
        ordinary = _ordinary(signer, n_ordinary + 20)
        template = ordinary[-1]
        hostile = {name: make(template, size) for name, make in HOSTILE.items()}
        server, url = start_marketplace(work / "data")
        try:
            with httpx.Client(base_url=url, timeout=120) as client:
                _post_all(client, server.pid, ordinary[n_ordinary:])  # warm up
                base, statuses = _post_all(client, server.pid, ordinary[:n_ordinary])
                if statuses != {201}:
                    raise RuntimeError(f"ordinary uploads answered {sorted(statuses)}")
                rows.append(Row.make(NAME, "server CPU: ordinary signed entry", base * 1000, "ms"))
                for name, doc in hostile.items():
                    cpu, statuses = _post_all(client, server.pid, [doc] * n_hostile)
                    if 201 in statuses:
                        raise RuntimeError(f"the server stored a hostile document ({name})")
                    rows.append(
                        Row.make(
                            NAME,
                            f"server CPU: {len(doc) >> 10} KiB, {name}",
                            cpu * 1000,
                            "ms",
                            baseline=("ordinary signed entry", base * 1000),
                            target=TARGET,
                        )
                    )
        finally:
            stop_process(server)
    return rows


if __name__ == "__main__":
    from ._common import format_table

    print(format_table(run(BenchArgs(quick="--quick" in sys.argv))))
