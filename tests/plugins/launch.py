"""Launcher fixtures: image entries made from bytes, a local HTTP server with faults, and a
guard that no qemu process outlives a test.

    def test_x(image_entry, http_files):
        url = http_files.add("disk.img", data)
        entry = image_entry(data, locations=[url])
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.server
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest


def make_entry(
    data: bytes,
    *,
    locations: tuple[str, ...] | list[str] = (),
    compression: str = "",
    algorithms: tuple[str, ...] = ("SHA-1", "SHA-256", "SHA-512"),
    valid: datetime | None = None,
    **fields: Any,
) -> Any:
    """An unsigned draft Entry describing ``data`` (uncompressed bytes)."""
    from imagekit.entry import Checksum, Entry
    from imagekit.image.identifier import sha1_to_id

    names = {"SHA-1": "sha1", "SHA-256": "sha256", "SHA-512": "sha512", "MD5": "md5"}
    sums = tuple(Checksum(a, hashlib.new(names[a], data).hexdigest()) for a in algorithms)
    fields.setdefault("kind", "machine")
    fields.setdefault("format", "raw")
    fields.setdefault("os", "linux")
    fields.setdefault("os_version", "1")
    fields.setdefault("os_arch", "x86_64")
    fields.setdefault("version", "1.0")
    fields.setdefault("description", "test image")
    fields.setdefault("type", "image")
    return Entry(
        identifier=sha1_to_id(hashlib.sha1(data).hexdigest()),
        bytes=len(data),
        checksums=sums,
        locations=tuple(locations),
        compression=compression,
        valid=valid or datetime.now(UTC).replace(microsecond=0) + timedelta(days=30),
        **fields,
    )


@pytest.fixture
def image_entry() -> Callable[..., Any]:
    return make_entry


@pytest.fixture
def signed_entry(sign_xml: Callable[..., bytes]) -> Callable[..., bytes]:
    """``signed_entry(data, **fields) -> bytes``: the entry for ``data``, signed now."""
    from imagekit.entry import entry_to_bytes

    def make(data: bytes, *, now: datetime | None = None, **fields: Any) -> bytes:
        return sign_xml(entry_to_bytes(make_entry(data, **fields)), now=now)

    return make


# --- HTTP server with faults -------------------------------------------------------------


@dataclasses.dataclass
class Fault:
    drop_after: int | None = None  # close the connection after this many body bytes, once
    ignore_range: bool = False
    drops: int = 1


class HttpFiles:
    """Serves in-memory files on 127.0.0.1, with Range support and injectable faults."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, Fault] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        files, faults, requests = self.files, self.faults, self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                requests.append((name, rng))
                data = files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                fault = faults.get(name, Fault())
                start = 0
                if rng and not fault.ignore_range and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("ETag", '"' + hashlib.sha1(data).hexdigest() + '"')
                self.end_headers()
                body = data[start:]
                if fault.drop_after is not None and fault.drops > 0:
                    fault.drops -= 1
                    with contextlib.suppress(OSError):
                        self.wfile.write(body[: fault.drop_after])
                        self.wfile.flush()
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(2)
                    return
                with contextlib.suppress(OSError):
                    self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, name: str, data: bytes, fault: Fault | None = None) -> str:
        self.files[name] = data
        if fault:
            self.faults[name] = fault
        return f"{self.base}/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_files() -> Iterator[HttpFiles]:
    server = HttpFiles()
    try:
        yield server
    finally:
        server.close()


# --- no stray qemu ---------------------------------------------------------------------


def qemu_pids(*markers: str) -> list[int]:
    """PIDs of qemu processes whose command line mentions one of ``markers`` (default: every
    qemu imagekit started: their -name carries ``imagekit-<id>``)."""
    markers = markers or ("imagekit-",)
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            cmdline
            and cmdline[0].endswith(b"qemu-system-x86_64")
            and any(m.encode() in part for part in cmdline for m in markers)
        ):
            pids.append(int(proc.name))
    return pids


@pytest.fixture
def no_stray_qemu(tmp_path: Path, isolated_home: Path) -> Iterator[Callable[[], list[int]]]:
    """Yields a function listing qemu processes started under this test's directories (its
    tmp_path and its isolated HOME, where the default state_dir lives); kills any left at
    the end of the test (and fails the test if there were some)."""
    markers = (str(tmp_path) + "/", str(isolated_home) + "/")
    before = set(qemu_pids(*markers))

    def started() -> list[int]:
        return [p for p in qemu_pids(*markers) if p not in before]

    yield started
    leftovers = started()
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while started() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not leftovers, f"qemu processes left running: {leftovers}"


@pytest.fixture(scope="session", autouse=True)
def _kill_test_qemu_at_exit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Whatever a test left behind: no qemu started under this session's temporary
    directory survives the session (other sessions' processes are left alone)."""
    base = str(tmp_path_factory.getbasetemp()) + "/"
    yield
    for pid in qemu_pids(base):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
