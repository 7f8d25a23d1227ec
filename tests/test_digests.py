"""Checksums in one read, on several threads, through decompression."""

from __future__ import annotations

import bz2
import gc
import gzip
import hashlib
import io
import lzma
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from imagekit.errors import InputError, NotFound
from imagekit.image.compression import CorruptData
from imagekit.image.digests import (
    ALL_ALGORITHMS,
    CHUNK_SIZE,
    DigestAlgorithm,
    Digests,
    MultiHasher,
    _Pipeline,
    compute_digests,
    digest_file,
)
from imagekit.image.identifier import sha1_to_id

# A few chunks and a ragged end, so the threaded pipeline and the last short chunk both run.
DATA = os.urandom(2 * CHUNK_SIZE + 12345)
# More than a chunk once uncompressed, yet quick to compress: mostly zeros.
SPARSE = os.urandom(100_000) + bytes(CHUNK_SIZE + (1 << 19)) + os.urandom(1000)


def _expected(data: bytes, algorithms=ALL_ALGORITHMS) -> Digests:
    return Digests(
        len(data), {a: hashlib.new(a.hashlib_name, data).hexdigest() for a in algorithms}
    )


def _digest_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("imagekit-digest")]


class CountingReader(io.RawIOBase):
    """A file object that counts what is read from it (and can fail or stop midway)."""

    def __init__(self, data: bytes, *, fail_after: int | None = None) -> None:
        self._fp = io.BytesIO(data)
        self.bytes_read = 0
        self.calls = 0
        self._fail_after = fail_after

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._fail_after is not None and self.bytes_read >= self._fail_after:
            raise OSError(5, "Input/output error")
        n = self._fp.readinto(buffer)
        self.bytes_read += n
        self.calls += 1
        return n


# --- algorithms --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sha1", DigestAlgorithm.SHA1),
        ("SHA1", DigestAlgorithm.SHA1),
        ("SHA-1", DigestAlgorithm.SHA1),
        ("sha_256", DigestAlgorithm.SHA256),
        ("Sha-512", DigestAlgorithm.SHA512),
        ("md5", DigestAlgorithm.MD5),
    ],
)
def test_parse_accepts_spellings(text: str, expected: DigestAlgorithm) -> None:
    assert DigestAlgorithm.parse(text) is expected


@pytest.mark.parametrize("text", ["sha384", "crc32", "", "sha"])
def test_parse_refuses_unknown_algorithm(text: str) -> None:
    with pytest.raises(InputError, match="unknown checksum algorithm"):
        DigestAlgorithm.parse(text)


def test_values_are_the_metadata_names() -> None:
    assert [a.value for a in DigestAlgorithm] == ["MD5", "SHA-1", "SHA-256", "SHA-512"]


def test_strength_orders_weakest_to_strongest() -> None:
    ordered = sorted(DigestAlgorithm, key=lambda a: a.strength)
    assert ordered == [
        DigestAlgorithm.MD5,
        DigestAlgorithm.SHA1,
        DigestAlgorithm.SHA256,
        DigestAlgorithm.SHA512,
    ]


# --- the Digests value -----------------------------------------------------------------------


def test_digests_value_gives_id_and_dict() -> None:
    d = _expected(b"")
    assert d.identifier == "No5o-5ea0sNMlW_75VgGJCv2AcJ"
    assert d["sha1"] == d.sha1 == d.values[DigestAlgorithm.SHA1]
    assert list(d.to_dict()) == ["bytes", "MD5", "SHA-1", "SHA-256", "SHA-512"]
    assert d == _expected(b"") and hash(d) == hash(_expected(b""))


def test_digests_value_is_immutable() -> None:
    d = _expected(b"x")
    with pytest.raises(TypeError):
        d.values[DigestAlgorithm.MD5] = "0" * 32  # type: ignore[index]


@pytest.mark.parametrize(
    "values",
    [{"SHA-1": "A" * 40}, {"SHA-1": "a" * 39}, {"MD5": "g" * 32}],
    ids=["upper-case", "short", "not-hex"],
)
def test_digests_value_refuses_bad_hex(values: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="lower-case hex"):
        Digests(1, values)  # type: ignore[arg-type]


# --- computing them ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [0, 1, 2047, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, len(DATA)],
)
def test_digests_match_hashlib(size: int) -> None:
    assert compute_digests(io.BytesIO(DATA[:size])) == _expected(DATA[:size])


def test_digests_match_coreutils(tmp_path: Path) -> None:
    path = tmp_path / "image.raw"
    path.write_bytes(DATA)
    d = digest_file(path)
    for algorithm, tool in [
        (DigestAlgorithm.MD5, "md5sum"),
        (DigestAlgorithm.SHA1, "sha1sum"),
        (DigestAlgorithm.SHA256, "sha256sum"),
        (DigestAlgorithm.SHA512, "sha512sum"),
    ]:
        out = subprocess.run([tool, str(path)], capture_output=True, text=True, check=True)
        assert d[algorithm] == out.stdout.split()[0]
    assert d.size == path.stat().st_size
    assert d.identifier == sha1_to_id(hashlib.sha1(DATA).hexdigest())


def test_only_the_chosen_algorithms(tmp_path: Path) -> None:
    path = tmp_path / "image.raw"
    path.write_bytes(DATA)
    d = digest_file(path, ["sha256", "md5"])
    assert set(d.values) == {DigestAlgorithm.SHA256, DigestAlgorithm.MD5}
    assert d == _expected(DATA, [DigestAlgorithm.MD5, DigestAlgorithm.SHA256])


def test_no_algorithm_is_refused() -> None:
    with pytest.raises(InputError, match="no checksum algorithm"):
        MultiHasher([])


def test_one_read_of_the_file() -> None:
    fp = CountingReader(DATA)
    assert compute_digests(fp) == _expected(DATA)
    assert fp.bytes_read == len(DATA)
    # Big reads straight into the chunk buffers: a handful of calls, not one per hash.
    assert fp.calls <= len(DATA) // CHUNK_SIZE + 2


@pytest.mark.parametrize(
    ("suffix", "compress"),
    [
        (".gz", lambda d: gzip.compress(d, 1)),
        (".bz2", lambda d: bz2.compress(d, 1)),
        (".xz", lambda d: lzma.compress(d, preset=0)),
    ],
    ids=["gz", "bz2", "xz"],
)
def test_digests_of_compressed_file_are_of_uncompressed_bytes(
    tmp_path: Path, suffix: str, compress: Any
) -> None:
    path = tmp_path / f"image.raw{suffix}"
    path.write_bytes(compress(SPARSE))
    seen: list[int] = []
    assert digest_file(path, progress=seen.append) == _expected(SPARSE)
    # Progress counts what was read from disk: the compressed size, for a bar's total.
    assert sum(seen) == path.stat().st_size


def test_digests_of_gzip_made_by_the_gzip_tool(tmp_path: Path) -> None:
    if shutil.which("gzip") is None:
        pytest.skip("gzip not installed")
    path = tmp_path / "image.raw"
    path.write_bytes(SPARSE)
    subprocess.run(["gzip", "-1", str(path)], check=True)
    assert digest_file(tmp_path / "image.raw.gz") == _expected(SPARSE)


def test_explicit_compression_overrides_the_suffix(tmp_path: Path) -> None:
    path = tmp_path / "image.bin"
    path.write_bytes(gzip.compress(SPARSE, 1))
    assert digest_file(path, compression="gz") == _expected(SPARSE)
    assert digest_file(path) == _expected(path.read_bytes())


def test_corrupt_gzip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "image.raw.gz"
    path.write_bytes(gzip.compress(SPARSE, 1)[:-1000])
    with pytest.raises(CorruptData):
        digest_file(path)
    assert not _digest_threads()


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no such file"):
        digest_file(tmp_path / "absent.img")


def test_progress_reports_every_byte_read() -> None:
    seen: list[int] = []
    compute_digests(io.BytesIO(DATA), progress=seen.append)
    assert sum(seen) == len(DATA)
    assert len(seen) > 1


# --- incremental use (a download) -------------------------------------------------------------


@pytest.mark.parametrize("piece", [1000, 65536, 1 << 20, 3 << 20], ids=["1K", "64K", "1M", "3M"])
def test_multihasher_fed_in_pieces(piece: int) -> None:
    with MultiHasher() as hasher:
        for i in range(0, len(DATA), piece):
            hasher.update(DATA[i : i + piece])
        assert hasher.finish() == _expected(DATA)
        assert hasher.size == len(DATA)


def test_multihasher_copies_buffers_the_caller_reuses() -> None:
    buffer = bytearray(300_000)
    view = memoryview(buffer)
    with MultiHasher() as hasher:
        for i in range(0, len(DATA), len(buffer)):
            piece = DATA[i : i + len(buffer)]
            buffer[: len(piece)] = piece
            hasher.update(view[: len(piece)])
            buffer[:] = bytes(len(buffer))  # the caller scribbles over it at once
        assert hasher.finish() == _expected(DATA)


def test_multihasher_finish_twice_gives_the_same_result_and_refuses_more_data() -> None:
    hasher = MultiHasher(["sha1"])
    hasher.update(b"abc")
    first = hasher.finish()
    assert hasher.finish() is first
    assert first.sha1 == hashlib.sha1(b"abc").hexdigest()
    with pytest.raises(ValueError, match="finished or closed"):
        hasher.update(b"more")


def test_small_input_starts_no_thread() -> None:
    started: list[threading.Thread] = []
    original = threading.Thread.start

    def spy(self: threading.Thread) -> None:
        started.append(self)
        original(self)

    threading.Thread.start = spy  # type: ignore[method-assign]
    try:
        d = compute_digests(io.BytesIO(b"tiny"))
    finally:
        threading.Thread.start = original  # type: ignore[method-assign]
    assert d == _expected(b"tiny")
    assert not [t for t in started if t.name.startswith("imagekit-digest")]


def test_closing_an_abandoned_hasher_stops_its_threads() -> None:
    hasher = MultiHasher()
    hasher.update(DATA)
    assert _digest_threads()
    hasher.close()
    assert not _digest_threads()
    with pytest.raises(ValueError):
        hasher.finish()


# --- the scheduler -------------------------------------------------------------------------------


class RecordingHash:
    """A stand-in hash that records which chunks it saw, in which thread, and takes time."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.seen: list[bytes] = []
        self.threads: set[int] = set()
        self.active = 0
        self.lock = threading.Lock()

    def update(self, data: Any) -> None:
        with self.lock:
            self.active += 1
            assert self.active == 1, "a hash object was fed by two threads at once"
        self.threads.add(threading.get_ident())
        self.seen.append(bytes(data))
        time.sleep(self.delay)  # releases the GIL, like hashlib on a big buffer
        with self.lock:
            self.active -= 1

    def hexdigest(self) -> str:
        return ""


def test_each_hash_sees_every_chunk_in_order_while_threads_share_the_work() -> None:
    # Three equal hashes on two threads: no fixed split balances, so hashes must move.
    hashes = [RecordingHash(0.002), RecordingHash(0.002), RecordingHash(0.002)]
    pipeline = _Pipeline(hashes, threads=2, chunk_size=16)  # type: ignore[arg-type]
    chunks = [i.to_bytes(4, "big") for i in range(60)]
    for chunk in chunks:
        pipeline.submit(chunk)
    pipeline.close()
    for h in hashes:
        assert h.seen == chunks
    assert len(set().union(*(h.threads for h in hashes))) == 2
    assert any(len(h.threads) == 2 for h in hashes)  # some hash moved between threads
    assert not _digest_threads()


def _schedule_time(costs: list[float], chunks: int) -> float:
    """Best of three wall times for the pipeline to feed ``chunks`` chunks to such hashes."""
    best = float("inf")
    for _ in range(3):
        hashes = [RecordingHash(cost) for cost in costs]
        pipeline = _Pipeline(hashes, threads=2, chunk_size=16)  # type: ignore[arg-type]
        start = time.perf_counter()
        for i in range(chunks):
            pipeline.submit(i.to_bytes(4, "big"))
        pipeline.close()
        best = min(best, time.perf_counter() - start)
    return best


def test_slowest_hash_is_never_left_waiting() -> None:
    # 1 slow + 3 fast on 2 threads: 4.5 units of work per chunk, 3 of them sequential in the
    # slow hash. Furthest-behind-first keeps it busy: about 3 units per chunk, not 4.5.
    unit, chunks = 0.002, 60
    elapsed = _schedule_time([3 * unit, 0.5 * unit, 0.5 * unit, 0.5 * unit], chunks)
    assert elapsed < chunks * unit * 3 * 1.35


def test_moving_hashes_between_threads_beats_any_fixed_split() -> None:
    # 3 equal hashes on 2 threads: a fixed split needs 2 units per chunk, sharing 1.5.
    unit, chunks = 0.004, 40
    elapsed = _schedule_time([unit, unit, unit], chunks)
    assert elapsed < chunks * unit * 1.85


def test_keyboard_interrupt_stops_worker_threads() -> None:
    calls = 0

    def progress(n: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compute_digests(io.BytesIO(DATA * 2), progress=progress)
    assert not _digest_threads()


def test_read_error_midway_propagates_and_stops_threads() -> None:
    fp = CountingReader(DATA * 2, fail_after=CHUNK_SIZE * 2)
    with pytest.raises(OSError, match="Input/output error"):
        compute_digests(fp)
    assert not _digest_threads()


def test_hash_error_in_a_worker_reaches_the_caller() -> None:
    class Broken(RecordingHash):
        def update(self, data: Any) -> None:
            raise MemoryError("boom")

    pipeline = _Pipeline([Broken(0), RecordingHash(0)], threads=2, chunk_size=16)  # type: ignore[list-item]
    with pytest.raises(MemoryError, match="boom"):
        for i in range(50):
            pipeline.submit(i.to_bytes(4, "big"))
        pipeline.close()
    pipeline.abort()
    assert not _digest_threads()


def test_a_dropped_hasher_stops_its_threads() -> None:
    hasher = MultiHasher()
    hasher.update(DATA)
    threads = _digest_threads()
    assert threads
    del hasher
    gc.collect()
    for thread in threads:
        thread.join(timeout=10)
    assert not _digest_threads()
