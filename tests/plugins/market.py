"""Shared fixtures of the marketplace: real servers, PostgreSQL, an S3 endpoint, entries.

- ``marketplace``: a real ``python -m marketplace_server`` process on a free loopback port
  with a temporary SQLite database (module scope; give each test its own endorser e-mail).
  Its ``.url`` is the base URL; ``.files_dir`` is served at ``/files/``.
- ``market_server``: the same, parametrized over SQLite and PostgreSQL (core API tests).
- ``start_marketplace(backend=..., trust=...)``: a fresh server for one test.
- ``postgres_url``: a fresh database in a PostgreSQL cluster started (as the ``postgres``
  user: PostgreSQL refuses root) from Debian's binaries for the session.
- ``s3_endpoint``: ``moto_server`` on a loopback port; sets dummy AWS credentials.
- ``make_endorser(email)`` → ``Endorser`` (EC key, self-signed cert files) and
  ``make_signed(endorser, ...)`` → signed entry bytes for random image bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(
    url: str, proc: subprocess.Popen[bytes] | None, timeout: float = 60, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = log.read_text(errors="replace") if log is not None and log.exists() else ""
            raise RuntimeError(f"server exited with {proc.returncode}: {out[-2000:]}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- PostgreSQL ------------------------------------------------------------------------


class PostgresCluster:
    """A throwaway cluster owned by ``postgres`` in a temporary directory (trust auth)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.port = free_port()
        self._count = 0

    def _as_postgres(self, *argv: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv],
            check=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.base, "postgres", "postgres")
        os.chmod(self.base, 0o700)
        self._as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        )
        self._as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.base / "log"),
            "-w",
            "-t",
            "60",
            "start",
            "-o",
            f"-p {self.port} -h 127.0.0.1 -k {self.base} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off",
        )

    def stop(self) -> None:
        pid = None
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
        with contextlib.suppress(subprocess.SubprocessError):
            self._as_postgres(
                str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"
            )
        if pid is not None:
            # never leave a postmaster behind, even if pg_ctl could not stop it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)  # PostgreSQL's immediate shutdown
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    os.kill(pid, 0)
                    time.sleep(0.1)
                os.kill(pid, signal.SIGKILL)

    def new_database(self) -> str:
        self._count += 1
        name = f"imagekit_{os.getpid()}_{self._count}"
        self._as_postgres(
            str(PG_BIN / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            name,
        )
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="session")
def postgres_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresCluster]:
    base = tmp_path_factory.mktemp("pg")
    # pytest's temp dirs are 0700 root: the postgres user needs to reach its directory.
    for parent in (base, *base.parents):
        if parent == Path("/"):
            break
        if parent.stat().st_uid == 0 and str(parent).startswith(("/tmp", "/var/tmp")):
            os.chmod(parent, parent.stat().st_mode | 0o711)
    cluster = PostgresCluster(base / "cluster")
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """The URL of a new, empty database (``postgresql://postgres@127.0.0.1:PORT/NAME``)."""
    return postgres_cluster.new_database()


# --- marketplace servers ---------------------------------------------------------------


@dataclasses.dataclass
class MarketServer:
    url: str
    backend: str
    data_dir: Path
    files_dir: Path
    proc: subprocess.Popen[bytes]
    log: Path
    db_url: str | None = None  # PostgreSQL; None for SQLite in data_dir

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        stop(self.proc)


def _start_server(
    tmp: Path,
    *,
    backend: str = "sqlite",
    db_url: str | None = None,
    trust: tuple[str, ...] = (),
    extra: tuple[str, ...] = (),
    via_cli: bool = False,
) -> MarketServer:
    port = free_port()
    data_dir = tmp / "data"
    files_dir = tmp / "files"
    files_dir.mkdir(parents=True, exist_ok=True)
    head = (
        [str(Path(sys.executable).parent / "imagekit"), "serve"]
        if via_cli
        else [sys.executable, "-m", "marketplace_server"]
    )
    argv = [
        *head,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--files-dir",
        str(files_dir),
        *extra,
    ]
    if db_url:
        argv += ["--db", db_url]
    for t in trust:
        argv += ["--trust", t]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEKIT_")}
    env["PYTHONPATH"] = str(ROOT)
    log = tmp / "server.log"
    with log.open("wb") as out:  # a file, not a pipe nobody reads (a full pipe blocks)
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=ROOT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/api/endorsers", proc, log=log)
    except Exception:
        stop(proc)
        raise
    return MarketServer(url, backend, data_dir, files_dir, proc, log, db_url)


@pytest.fixture
def start_marketplace(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Callable[..., MarketServer]]:
    """Start a fresh server: ``start_marketplace(backend="postgresql", trust=(...))``."""
    started: list[MarketServer] = []

    def start(*, backend: str = "sqlite", **kwargs: Any) -> MarketServer:
        db_url = None
        if backend == "postgresql":
            db_url = request.getfixturevalue("postgres_cluster").new_database()
        server = _start_server(
            tmp_path_factory.mktemp("market"), backend=backend, db_url=db_url, **kwargs
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def marketplace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MarketServer]:
    """A running server on SQLite, shared by a module's tests."""
    server = _start_server(tmp_path_factory.mktemp("market"))
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def market_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MarketServer]:
    """A running server on each backend in turn, shared by a module's tests."""
    db_url = None
    if request.param == "postgresql":
        db_url = request.getfixturevalue("postgres_cluster").new_database()
    server = _start_server(tmp_path_factory.mktemp("market"), backend=request.param, db_url=db_url)
    yield server
    server.stop()


# --- S3 ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _moto_server() -> Iterator[str]:
    port = free_port()
    moto = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/moto-api/", proc)
        yield url
    finally:
        stop(proc)


@pytest.fixture
def s3_endpoint(_moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """An S3 endpoint (moto in server mode) with dummy credentials in the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("IMAGEKIT_S3_ENDPOINT", _moto_server)
    return _moto_server


# --- endorsers and entries ---------------------------------------------------------------


@dataclasses.dataclass
class Endorser:
    email: str
    signer: Any
    key_path: Path
    cert_path: Path


def new_endorser(directory: Path, email: str | None = None, *, key_type: str = "ec") -> Endorser:
    from imagekit.signing.keys import Signer, make_certificate, make_private_key

    email = email or f"e{uuid.uuid4().hex[:10]}@example.org"
    key = make_private_key(key_type)
    # valid from two days ago: tests sign entries "in the past" to stay ahead of later ones
    cert = make_certificate(
        key, email, f"Tester {email}", 30, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    )
    signer = Signer(key, cert)
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / f"{email}.key"
    cert_path = directory / f"{email}.crt"
    key_path.write_bytes(signer.key_pem())
    cert_path.write_bytes(signer.cert_pem())
    return Endorser(email, signer, key_path, cert_path)


def draft_entry(
    image: bytes | None = None,
    *,
    title: str = "Test appliance",
    description: str = "An appliance for tests",
    os_name: str = "debian",
    os_version: str = "12",
    arch: str = "x86_64",
    kind: str = "machine",
    tag: str | None = None,
    valid: dt.datetime | None = None,
    deprecated: str | None = None,
    locations: tuple[str, ...] = (),
    **terms: Any,
) -> bytes:
    """An unsigned entry for ``image`` (random bytes by default), built by the library;
    ``terms``: other Entry fields (``disks_bus``, ``inbound_ports``, ``hypervisor``...)."""
    from imagekit.entry import Checksum, Entry, entry_to_bytes
    from imagekit.image.digests import DigestAlgorithm
    from imagekit.image.identifier import sha1_to_id

    image = os.urandom(64) if image is None else image
    sha1 = hashlib.sha1(image).hexdigest()
    entry = Entry(
        identifier=sha1_to_id(sha1),
        bytes=len(image),
        checksums=(
            Checksum(DigestAlgorithm.SHA1, sha1),
            Checksum(DigestAlgorithm.SHA256, hashlib.sha256(image).hexdigest()),
        ),
        type="image",
        kind=kind,  # type: ignore[arg-type]
        valid=valid or dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=30),
        title=title,
        alternative=tag,
        description=description,
        format="raw",  # type: ignore[arg-type]
        compression="",  # type: ignore[arg-type]
        locations=locations,
        version="1.0",
        os=os_name,
        os_version=os_version,
        os_arch=arch,
        deprecated=deprecated,
        **terms,
    )
    return entry_to_bytes(entry)


def sign(draft: bytes, endorser: Endorser, *, ago: float = 0) -> bytes:
    """Sign ``draft`` as ``endorser``, endorsed ``ago`` seconds in the past."""
    from imagekit.signing.sign import sign_entry

    when = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=ago)
    return sign_entry(draft, endorser.signer, now=when)


@pytest.fixture
def make_endorser(tmp_path: Path) -> Callable[..., Endorser]:
    return lambda email=None, **kw: new_endorser(tmp_path / "keys", email, **kw)


@pytest.fixture
def make_signed() -> Callable[..., bytes]:
    """``make_signed(endorser, ago=0, image=None, **draft_fields)`` → signed bytes."""

    def make(
        endorser: Endorser, *, ago: float = 0, image: bytes | None = None, **fields: Any
    ) -> bytes:
        return sign(draft_entry(image, **fields), endorser, ago=ago)

    return make


def resign(signed: bytes, endorser: Endorser, old: bytes, new: bytes) -> bytes:
    """``signed`` with ``old`` replaced by ``new`` and signed again, without the library's
    entry checks: what a hostile endorser, who need not use imagekit, can upload."""
    from lxml import etree

    from imagekit.entry.xmlsafe import parse_xml
    from imagekit.signing.sign import append_signature, strip_signatures

    assert old in signed
    root = parse_xml(signed.replace(old, new))
    strip_signatures(root)
    append_signature(root, endorser.signer)
    return etree.tostring(root.getroottree(), encoding="UTF-8", xml_declaration=True)
