"""describe_image: one read of an image file gives a valid, unsigned draft entry."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import imagekit.entry.describe as describe_module
from imagekit.entry import Kind, entry_to_bytes, parse_entry_bytes
from imagekit.entry.describe import describe_image
from imagekit.errors import InputError, InvalidMetadata, NotFound
from imagekit.image.compression import Compression
from imagekit.image.digests import DigestAlgorithm
from imagekit.image.formats import DiskFormat
from imagekit.image.identifier import sha1_to_id

NOW = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
# A qcow2 header's magic and version, then filler: enough for format detection.
QCOW2 = b"QFI\xfb\x00\x00\x00\x03" + bytes(range(256)) * 64


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_raw_image_gives_a_complete_draft(tmp_path: Path) -> None:
    data = b"\x00" * 5000 + b"raw image"
    entry = describe_image(_write(tmp_path / "disk.img", data), now=NOW)
    assert entry.identifier == sha1_to_id(hashlib.sha1(data).hexdigest())
    assert entry.bytes == len(data)
    assert [(str(c.algorithm), c.value) for c in entry.checksums] == [
        ("MD5", hashlib.md5(data).hexdigest()),
        ("SHA-1", hashlib.sha1(data).hexdigest()),
        ("SHA-256", hashlib.sha256(data).hexdigest()),
        ("SHA-512", hashlib.sha512(data).hexdigest()),
    ]
    assert entry.format is DiskFormat.RAW and entry.compression is Compression.NONE
    assert entry.is_draft
    assert entry.created == NOW and entry.valid == NOW + timedelta(days=365)


@pytest.mark.parametrize(
    ("suffix", "compress", "compression"),
    [
        ("gz", gzip.compress, Compression.GZ),
        ("bz2", bz2.compress, Compression.BZ2),
        ("xz", lzma.compress, Compression.XZ),
    ],
)
def test_compressed_image_is_described_by_its_uncompressed_bytes(
    tmp_path: Path, suffix: str, compress: Any, compression: Compression
) -> None:
    path = _write(tmp_path / f"disk.qcow2.{suffix}", compress(QCOW2))
    entry = describe_image(path, now=NOW)
    assert entry.compression is compression
    assert entry.bytes == len(QCOW2)
    assert entry.sha1 == hashlib.sha1(QCOW2).hexdigest()
    assert entry.format is DiskFormat.QCOW2  # magic of the uncompressed head


def test_compression_and_format_can_be_given(tmp_path: Path) -> None:
    path = _write(tmp_path / "download.bin", gzip.compress(b"plain bytes"))
    entry = describe_image(path, compression="gz", format="vmdk", now=NOW)
    assert entry.compression is Compression.GZ and entry.format is DiskFormat.VMDK
    assert entry.bytes == len(b"plain bytes")


def test_algorithms_are_selectable_and_sha1_always_included(tmp_path: Path) -> None:
    entry = describe_image(_write(tmp_path / "a.img", b"x"), algorithms=["sha256"], now=NOW)
    assert [str(c.algorithm) for c in entry.checksums] == ["SHA-1", "SHA-256"]


def test_image_is_hashed_in_one_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[DigestAlgorithm]] = []
    real = describe_module.digest_file

    def counting(path: Any, algorithms: Any, **kwargs: Any) -> Any:
        calls.append(list(algorithms))
        return real(path, algorithms, **kwargs)

    monkeypatch.setattr(describe_module, "digest_file", counting)
    describe_image(_write(tmp_path / "a.img", b"abc" * 1000), now=NOW)
    assert calls == [list(DigestAlgorithm)]


def test_progress_reports_every_byte_read(tmp_path: Path) -> None:
    data = bytes(3 << 20)
    seen: list[int] = []
    describe_image(_write(tmp_path / "big.img", data), now=NOW, progress=seen.append)
    assert sum(seen) == len(data)


def test_defaults_fill_the_terms_older_clients_require(tmp_path: Path) -> None:
    machine = describe_image(_write(tmp_path / "m.img", b"m"), now=NOW)
    assert (machine.kind, machine.type, machine.os, machine.os_arch) == (
        Kind.MACHINE,
        "machine",
        "unknown",
        "unknown",
    )
    assert machine.version == "1.0" and machine.description == "machine image m.img"
    disk = describe_image(_write(tmp_path / "d.iso", b"d"), kind="disk", now=NOW)
    assert (disk.kind, disk.type, disk.os, disk.os_version, disk.os_arch) == (
        Kind.DISK,
        "disk",
        "none",
        "none",
        "none",
    )


def test_fields_are_passed_through(tmp_path: Path) -> None:
    entry = describe_image(
        _write(tmp_path / "a.img", b"a"),
        now=NOW,
        valid_days=10,
        tag="debian-base",
        os="debian",
        os_version="12",
        locations=["http://example.org/a.img"],
        inbound_ports=[22],
        serial_number=4,
    )
    assert entry.tag == "debian-base" and entry.os == "debian" and entry.os_version == "12"
    assert entry.locations == ("http://example.org/a.img",) and entry.inbound_ports == (22,)
    assert entry.valid == NOW + timedelta(days=10) and entry.serial_number == 4


def test_explicit_valid_wins_over_valid_days(tmp_path: Path) -> None:
    until = NOW + timedelta(days=2)
    assert describe_image(_write(tmp_path / "a.img", b"a"), now=NOW, valid=until).valid == until


def test_described_entry_round_trips_through_xml(tmp_path: Path) -> None:
    entry = describe_image(_write(tmp_path / "a.qcow2", QCOW2), now=NOW, tag="t", icmp=[8])
    assert parse_entry_bytes(entry_to_bytes(entry)) == entry


def test_bad_field_is_refused_before_the_image_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the image was read")

    monkeypatch.setattr(describe_module, "digest_file", fail)
    with pytest.raises(InvalidMetadata) as e:
        describe_image(_write(tmp_path / "a.img", b"a"), now=NOW, inbound_ports=[70000])
    assert e.value.rule == "port-out-of-range"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        pytest.param({"colour": "red"}, InputError, id="unknown-field"),
        pytest.param({"tag": "a", "alternative": "b"}, InputError, id="tag-and-alternative"),
        pytest.param({"kind": "vm"}, InvalidMetadata, id="bad-kind"),
        pytest.param({"compression": "zstd"}, InputError, id="bad-compression"),
        pytest.param({"format": "floppy"}, InputError, id="bad-format"),
        pytest.param({"algorithms": ["sha3"]}, InputError, id="bad-algorithm"),
        pytest.param({"valid_days": 0}, InputError, id="zero-valid-days"),
        pytest.param({"identifier": "x"}, InputError, id="computed-field"),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        describe_image(_write(tmp_path / "a.img", b"a"), now=NOW, **kwargs)


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        describe_image(tmp_path / "missing.img")


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a regular file"):
        describe_image(tmp_path)
