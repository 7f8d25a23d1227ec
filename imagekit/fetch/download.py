"""Download an entry's image: locations tried in order, resumed with Range after a dropped
connection, decompressed and hashed while streaming, into a bounded temporary file that is
verified against the entry and only then renamed into place.

The bytes are read once: what arrives is decompressed (by the entry's ``compression``),
hashed and written in the same pass. The hashes are SHA-1, always, because the ID names the
bytes by their SHA-1 (whatever an entry claims, a download that is not the ID's bytes is
refused), and the policy's algorithms (its digest floor, SHA-256 by default, compared with
the signed entry's values). Decompression stops as soon as the output passes the entry's
``bytes`` (a bomb or a wrong file never fills the disk).

Location addresses are checked before connecting: private, loopback, link-local and other
non-global addresses are refused unless ``allow_private`` (the ``allow_private_locations``
setting), and the connection goes to the checked address itself, not to a second lookup.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import ipaddress
import os
import queue
import socket
import ssl
import stat
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import (
    ChecksumMismatch,
    ImagekitError,
    InputError,
    NetworkError,
    SizeMismatch,
    VerificationError,
)
from ..image.compression import Compression, CorruptData, Decompressor
from ..image.digests import DigestAlgorithm, Digests, MultiHasher
from ..image.identifier import id_to_sha1
from ..progress import Progress
from ..settings import s3_endpoint

# Half a MiB: each piece is received, hashed and written while it is still in the CPU's
# cache. Measured on a 1 GiB download from nginx on loopback (two cores): 1 MiB pieces
# took 1.2-2.5 s from run to run, 512 KiB 1.2-1.6 s, 128 KiB 1.4 s, 64 KiB 1.9 s.
CHUNK = 512 << 10
_REDIRECTS = 5


class PrivateAddress(NetworkError):
    """A location resolves to a private, loopback or link-local address."""


class _Transient(Exception):
    """A dropped connection or a timeout: resume from where we are."""


class _Restart(Exception):
    """The server ignored our Range request: start this location over."""


# --- address policy ---------------------------------------------------------------------


# IPv6 forms whose last 32 bits are the IPv4 address the packets end up at: NAT64's
# well-known prefix (RFC 6052), IPv4-translated (RFC 2765) and IPv4-compatible (deprecated,
# RFC 4291) addresses. IPv4-mapped, 6to4 and Teredo have their own accessors.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_COMPATIBLE = ipaddress.ip_network("::/96")
# NAT64 for local use (RFC 8215): translates to whatever the local network chooses
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address leads to (empty for a plain IPv6 address)."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)  # (server, client): traffic goes to both
    if ip in _NAT64 or ip in _TRANSLATED or (ip in _COMPATIBLE and int(ip) > 1):
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]  # (:: and ::1 are not)
    return []


def is_public_address(address: str) -> bool:
    """Whether ``address`` is a global unicast address; an IPv6 address that embeds an IPv4
    one (IPv4-mapped or -compatible, NAT64, 6to4, Teredo) is judged by that IPv4 address
    (``::127.0.0.1`` and ``64:ff9b::a00:1`` reach loopback and 10.0.0.1)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _LOCAL_NAT64:
            return False
        embedded = _embedded_ipv4(ip)
        if embedded:
            return all(v4.is_global and not v4.is_multicast for v4 in embedded)
    return ip.is_global and not ip.is_multicast


def resolve_host(host: str, port: int, *, allow_private: bool) -> list[str]:
    """Addresses of ``host``; every one must be public unless ``allow_private``.

    Raises PrivateAddress (naming the address) or NetworkError (lookup failed).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise NetworkError(f"cannot resolve {host}: {e.strerror}") from e
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private:
        for a in addresses:
            if not is_public_address(a):
                raise PrivateAddress(
                    f"location host {host} resolves to non-public address {a}",
                    hint="set allow_private_locations = true to download from local networks",
                )
    return addresses


# --- sources: each yields raw (possibly compressed) chunks from an offset -----------------


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, addresses: Sequence[str], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._addresses = addresses

    def connect(self) -> None:
        self.sock = _connect_any(self._addresses, self.port, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, addresses: Sequence[str], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._addresses = addresses

    def connect(self) -> None:
        sock = _connect_any(self._addresses, self.port, self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _connect_any(addresses: Sequence[str], port: int, timeout: Any) -> socket.socket:
    last: OSError | None = None
    for a in addresses:
        try:
            return socket.create_connection((a, port), timeout)
        except OSError as e:
            last = e
    raise last or OSError("no address")


@dataclasses.dataclass
class _HttpSource:
    url: str
    allow_private: bool
    timeout: float
    validator: str | None = None  # ETag or Last-Modified of the first response (If-Range)

    def open(self, offset: int) -> Iterator[bytes]:
        url = self.url
        for _ in range(_REDIRECTS + 1):
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise InputError(f"unsupported location {url!r}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            addresses = resolve_host(parts.hostname, port, allow_private=self.allow_private)
            cls = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
            conn = cls(parts.hostname, port, addresses, self.timeout)
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            headers = {"User-Agent": "imagekit", "Accept-Encoding": "identity"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
                if self.validator:
                    headers["If-Range"] = self.validator
            try:
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise _Transient(f"{url}: {e}") from e
            if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
                url = urllib.parse.urljoin(url, resp.getheader("Location"))
                conn.close()
                continue
            return self._body(conn, resp, offset, url)
        raise NetworkError(f"{self.url}: too many redirects")

    def _body(
        self,
        conn: http.client.HTTPConnection,
        resp: http.client.HTTPResponse,
        offset: int,
        url: str,
    ) -> Iterator[bytes]:
        try:
            if offset and resp.status == 200:
                raise _Restart(f"{url}: server ignored the Range request")
            if offset and resp.status == 206:
                start = (resp.getheader("Content-Range") or "").removeprefix("bytes ").split("-")[0]
                if start != str(offset):
                    raise _Restart(f"{url}: unexpected Content-Range {start}")
            elif resp.status != 200:
                if resp.status in (408, 429, 500, 502, 503, 504):
                    raise _Transient(f"{url}: HTTP {resp.status}")
                raise NetworkError(f"{url}: HTTP {resp.status} {resp.reason}")
            if not offset:
                self.validator = resp.getheader("ETag") or resp.getheader("Last-Modified")
            length = resp.getheader("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            got = 0
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    raise _Transient(f"{url}: connection dropped after {offset + got} bytes") from e
                if not chunk:
                    break
                got += len(chunk)
                yield chunk
            if expected is not None and got < expected:
                raise _Transient(f"{url}: connection dropped after {offset + got} bytes")
        finally:
            conn.close()


@dataclasses.dataclass
class _FileSource:
    path: Path

    def open(self, offset: int) -> Iterator[bytes]:
        try:
            fp = open(self.path, "rb")  # noqa: SIM115 - closed by the generator
        except OSError as e:
            raise NetworkError(f"{self.path}: {e.strerror}") from e
        return self._read(fp, offset)

    def _read(self, fp: Any, offset: int) -> Iterator[bytes]:
        with fp:
            if not stat.S_ISREG(os.fstat(fp.fileno()).st_mode):
                raise NetworkError(f"{self.path}: not a regular file")
            fp.seek(offset)
            while chunk := fp.read(CHUNK):
                yield chunk


@dataclasses.dataclass
class _S3Source:
    bucket: str
    key: str

    def open(self, offset: int) -> Iterator[bytes]:
        import boto3
        import botocore.exceptions

        # the same endpoint the publisher uploads to
        client = boto3.client("s3", endpoint_url=s3_endpoint())
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key}
        if offset:
            kwargs["Range"] = f"bytes={offset}-"
        try:
            obj = client.get_object(**kwargs)
        except botocore.exceptions.ClientError as e:
            raise NetworkError(f"s3://{self.bucket}/{self.key}: {e}") from e
        except botocore.exceptions.BotoCoreError as e:
            raise _Transient(f"s3://{self.bucket}/{self.key}: {e}") from e
        return self._read(obj["Body"])

    def _read(self, body: Any) -> Iterator[bytes]:
        import botocore.exceptions

        try:
            while True:
                try:
                    chunk = body.read(CHUNK)
                except (OSError, botocore.exceptions.BotoCoreError) as e:
                    raise _Transient(f"s3://{self.bucket}/{self.key}: {e}") from e
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()


def _source(location: str, *, allow_private: bool, timeout: float) -> Any:
    parts = urllib.parse.urlsplit(location)
    if parts.scheme in ("http", "https"):
        return _HttpSource(location, allow_private, timeout)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InputError(f"file location with a host: {location!r}")
        return _FileSource(Path(urllib.parse.unquote(parts.path)))
    if parts.scheme == "s3":
        return _S3Source(parts.netloc, parts.path.lstrip("/"))
    raise InputError(f"unsupported location scheme {parts.scheme!r} in {location!r}")


def _prefetch(chunks: Iterable[bytes], depth: int = 8) -> Iterator[bytes]:
    """Read ahead in a thread, so the network and the hashing overlap (hashlib and socket
    reads release the GIL)."""
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def pump() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        q.put(("data", chunk), timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("end", None))
        except BaseException as e:
            q.put(("error", e))

    thread = threading.Thread(target=pump, name="imagekit-fetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "data":
                yield value
            elif kind == "end":
                return
            else:
                raise value
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                q.get_nowait()
        thread.join(timeout=5)


def check_locations(entry: Any, *, allow_private: bool) -> list[str]:
    """Precondition check (no download): the locations that could be used, in order.

    A location is usable if its scheme is supported and (for http/https) its host resolves
    to addresses the setting allows. Raises the reason of the first location when none is.
    """
    usable: list[str] = []
    first: ImagekitError | None = None
    for location in entry.locations:
        try:
            parts = urllib.parse.urlsplit(location)
            _source(location, allow_private=allow_private, timeout=1)
            if parts.scheme in ("http", "https"):
                if not parts.hostname:
                    raise InputError(f"location {location!r} has no host")
                port = parts.port or (443 if parts.scheme == "https" else 80)
                resolve_host(parts.hostname, port, allow_private=allow_private)
        except (InputError, NetworkError) as e:
            first = first or e
            continue
        except ValueError as e:  # a malformed port
            first = first or InputError(f"location {location!r}: {e}")
            continue
        usable.append(location)
    if not usable:
        if first is not None:
            raise first
        raise InputError(f"entry {entry.identifier} has no location to download from")
    return usable


# --- the download -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Fetched:
    digests: Digests
    location: str


_WRITEBACK_EVERY = 16 << 20


def _find_sync_file_range() -> Callable[[int, int, int], None]:
    """``sync_file_range(fd, offset, n, SYNC_FILE_RANGE_WRITE)``: start writing a range to
    disk without waiting (Linux); elsewhere a no-op. The final fsync then finds most of the
    file already on disk: the disk works while the download and the hashing go on."""
    try:
        import ctypes

        func = ctypes.CDLL(None, use_errno=True).sync_file_range
        func.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    except (OSError, AttributeError):
        return lambda fd, offset, n: None

    def start(fd: int, offset: int, n: int) -> None:
        func(fd, offset, n, 2)  # SYNC_FILE_RANGE_WRITE; a failure only costs speed

    return start


_start_writeback = _find_sync_file_range()


class _Sink:
    """Decompress, bound, hash, write: one pass over what arrives."""

    def __init__(self, entry: Any, algorithms: Sequence[DigestAlgorithm], fp: Any) -> None:
        self.entry = entry
        self.algorithms = list(algorithms)
        self.fp = fp
        self.hasher = MultiHasher(self.algorithms)  # replaced (and closed) by reset
        self.reset()

    def reset(self) -> None:
        self.hasher.close()
        self.fp.seek(0)
        self.fp.truncate()
        self.raw = 0
        self.written = 0
        self.synced = 0
        # Compressed input may be a little larger than its output, never much larger.
        self.raw_limit = self.entry.bytes + self.entry.bytes // 8 + (1 << 20)
        self.decompressor = Decompressor(
            self.entry.compression or Compression.NONE, max_output=self.entry.bytes
        )
        self.hasher = MultiHasher(self.algorithms)

    def feed(self, chunk: bytes, progress: Progress | None) -> None:
        self.raw += len(chunk)
        if self.raw > self.raw_limit:
            raise SizeMismatch(f"download exceeds the expected {self.entry.bytes} bytes")
        for piece in self.decompressor.feed_pieces(chunk):
            self.hasher.update(piece)
            self.fp.write(piece)
            self.written += len(piece)
            if self.written - self.synced >= _WRITEBACK_EVERY:
                self.fp.flush()
                _start_writeback(self.fp.fileno(), self.synced, self.written - self.synced)
                self.synced = self.written
            if progress:
                progress(len(piece))

    def finish(self) -> Digests:
        tail = self.decompressor.flush()
        if tail:
            self.hasher.update(tail)
            self.fp.write(tail)
        return self.hasher.finish()

    def close(self) -> None:
        self.hasher.close()


def _download_one(source: Any, sink: _Sink, *, progress: Progress | None, max_resumes: int) -> None:
    failures = 0
    while True:
        offset = sink.raw
        try:
            for chunk in _prefetch(source.open(offset)):
                sink.feed(chunk, progress)
            return
        except _Restart:
            sink.reset()
            failures += 1
        except _Transient as e:
            failures += 1
            if failures > max_resumes:
                raise NetworkError(f"{e} (gave up after {max_resumes} resumes)") from e
            time.sleep(min(2.0, 0.1 * 2**failures))
        if failures > max_resumes:
            raise NetworkError(f"gave up after {max_resumes} restarts")


def fetch_image(
    entry: Any,
    dest: Path,
    *,
    algorithms: Sequence[DigestAlgorithm],
    allow_private: bool = False,
    progress: Progress | None = None,
    timeout: float = 30.0,
    max_resumes: int = 5,
    check: Callable[[Any, Digests], None] | None = None,
) -> Fetched:
    """Download ``entry``'s image to ``dest`` (atomically), verified against the entry.

    The bytes are hashed with SHA-1 (checked against the SHA-1 the entry's ID encodes) and
    ``algorithms`` (checked against the entry's values), all in the one streaming pass.
    Locations are tried in order; a location whose bytes fail verification is skipped for
    the next one. ``check`` compares the digests with the entry (default
    ``imagekit.signing.verify.check_image_digests``). Nothing is left at ``dest`` or beside it
    unless every check passed.

    Raises SizeMismatch or ChecksumMismatch (bytes differ from the ID or the entry),
    PrivateAddress, NetworkError (no location could be read), InputError (no usable
    location).
    """
    if check is None:
        from ..signing.verify import check_image_digests

        check = check_image_digests
    if not entry.locations:
        raise InputError(f"entry {entry.identifier} has no location to download from")
    if not algorithms:
        raise InputError("no digest algorithm to check the image with")
    wanted = list(dict.fromkeys([DigestAlgorithm.SHA1, *algorithms]))
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors: list[ImagekitError] = []
    for location in entry.locations:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{entry.identifier}.", suffix=".part", dir=dest.parent
        )
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "w+b") as fp:
                sink = _Sink(entry, wanted, fp)
                try:
                    source = _source(location, allow_private=allow_private, timeout=timeout)
                    _download_one(source, sink, progress=progress, max_resumes=max_resumes)
                    digests = sink.finish()
                finally:
                    sink.close()
                if digests.size != entry.bytes:
                    raise SizeMismatch(
                        f"{location}: {digests.size} bytes, the entry says {entry.bytes}"
                    )
                _check_all(entry, digests, algorithms, location)
                check_identifier(entry, digests, location)
                check(entry, digests)
                fp.flush()
                os.fsync(fp.fileno())
            os.replace(tmp, dest)
            return Fetched(digests, location)
        except CorruptData as e:
            errors.append(ChecksumMismatch(f"{location}: {e}"))
        except (VerificationError, NetworkError, InputError) as e:
            errors.append(e)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    # The most telling reason: bytes that failed verification beat unreachable mirrors.
    for error in errors:
        if isinstance(error, VerificationError):
            raise error
    if len(errors) == 1:
        raise errors[0]
    raise NetworkError(
        f"no location of {entry.identifier} could be downloaded: "
        + "; ".join(str(e) for e in errors)
    )


def check_identifier(entry: Any, digests: Digests, where: str) -> None:
    """The bytes' SHA-1 must be the one the entry's ID encodes (ChecksumMismatch)."""
    expected = id_to_sha1(entry.identifier)
    got = digests.sha1
    if int(got, 16) != int(expected, 16):
        raise ChecksumMismatch(
            f"{where}: these bytes are not image {entry.identifier}: their SHA-1 is {got}, "
            f"the ID names {expected}"
        )


def _check_all(entry: Any, digests: Digests, wanted: Sequence[DigestAlgorithm], where: str) -> None:
    """Every computed digest the entry also lists must match (numerically)."""
    for algorithm in wanted:
        expected = entry.checksum(algorithm)
        if expected is None:
            continue
        got = digests.values[algorithm]
        if int(got, 16) != int(expected.value, 16):
            raise ChecksumMismatch(
                f"{where}: {algorithm} of the bytes is {got}, the entry says {expected.hex}"
            )
