"""Downloading images: resume, decompression, hashing in one pass, bounds, address checks.

Faults come from a real HTTP server on loopback (tests/plugins/launch.py), so these tests
allow private locations except where the refusal itself is tested.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import hashlib
import lzma
import os
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from imagekit.entry.model import Checksum
from imagekit.errors import (
    ChecksumMismatch,
    InputError,
    NetworkError,
    PolicyRefused,
    SizeMismatch,
)
from imagekit.fetch.download import PrivateAddress, fetch_image, is_public_address, resolve_host
from imagekit.image.digests import DigestAlgorithm
from tests.plugins.launch import Fault

SHA256 = [DigestAlgorithm.SHA256]
DATA = os.urandom(3 << 20) + b"tail"


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_download_verifies_and_renames(http_files, image_entry, tmp_path: Path):
    entry = image_entry(DATA, locations=[http_files.add("img", DATA)])
    seen: list[int] = []
    dest = tmp_path / "cache" / "image"
    fetched = fetch_image(entry, dest, algorithms=SHA256, allow_private=True, progress=seen.append)
    assert dest.read_bytes() == DATA
    assert fetched.digests.size == len(DATA)
    assert fetched.digests.values[DigestAlgorithm.SHA256] == entry.checksum("SHA-256").hex
    assert sum(seen) == len(DATA)
    assert leftovers(dest.parent) == ["image"]


def test_dropped_connection_resumes_with_range(http_files, image_entry, tmp_path: Path):
    url = http_files.add("img", DATA, Fault(drop_after=1_000_000, drops=2))
    entry = image_entry(DATA, locations=[url])
    dest = tmp_path / "image"
    fetch_image(entry, dest, algorithms=SHA256, allow_private=True)
    assert dest.read_bytes() == DATA
    ranges = [r for _, r in http_files.requests]
    assert ranges[0] is None
    assert ranges[1:] == ["bytes=1000000-", "bytes=2000000-"]


def test_server_ignoring_range_restarts_cleanly(http_files, image_entry, tmp_path: Path):
    url = http_files.add("img", DATA, Fault(drop_after=1_500_000, ignore_range=True))
    entry = image_entry(DATA, locations=[url])
    fetch_image(entry, tmp_path / "image", algorithms=SHA256, allow_private=True)
    assert (tmp_path / "image").read_bytes() == DATA
    # the Range request got the whole file (200): start over from byte 0
    assert [r for _, r in http_files.requests] == [None, "bytes=1500000-", None]


def test_wrong_bytes_checksum_mismatch_nothing_left(http_files, image_entry, tmp_path: Path):
    tampered = bytearray(DATA)
    tampered[12345] ^= 1
    entry = image_entry(DATA, locations=[http_files.add("img", bytes(tampered))])
    dest = tmp_path / "cache" / "image"
    with pytest.raises(ChecksumMismatch, match="SHA-256"):
        fetch_image(entry, dest, algorithms=SHA256, allow_private=True)
    assert leftovers(dest.parent) == []


def test_oversize_download_stops_early(http_files, image_entry, tmp_path: Path):
    small = DATA[:100_000]
    entry = image_entry(small, locations=[http_files.add("img", DATA)])
    with pytest.raises(SizeMismatch, match="exceeds"):
        fetch_image(entry, tmp_path / "image", algorithms=SHA256, allow_private=True)
    assert leftovers(tmp_path) == []


def test_short_download_is_size_mismatch(http_files, image_entry, tmp_path: Path):
    entry = image_entry(DATA, locations=[http_files.add("img", DATA[:-1])])
    with pytest.raises(SizeMismatch):
        fetch_image(entry, tmp_path / "image", algorithms=SHA256, allow_private=True)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "compression, compress",
    [("gz", gzip.compress), ("bz2", bz2.compress), ("xz", lzma.compress)],
    ids=["gz", "bz2", "xz"],
)
def test_compressed_location_decompressed_while_streaming(
    compression, compress, http_files, image_entry, tmp_path: Path
):
    data = DATA[:200_000] * 4  # compressible
    url = http_files.add(f"img.{compression}", compress(data), Fault(drop_after=100_000))
    entry = image_entry(data, locations=[url], compression=compression)
    fetched = fetch_image(entry, tmp_path / "image", algorithms=SHA256, allow_private=True)
    assert (tmp_path / "image").read_bytes() == data
    assert fetched.digests.size == len(data)


def test_decompression_bomb_stopped(http_files, image_entry, tmp_path: Path):
    bomb = gzip.compress(b"\0" * (256 << 20), compresslevel=9)  # ~250 KB -> 256 MiB
    entry = image_entry(b"\0" * 1000, locations=[http_files.add("bomb.gz", bomb)], compression="gz")
    with pytest.raises(SizeMismatch):
        fetch_image(entry, tmp_path / "image", algorithms=SHA256, allow_private=True)
    assert leftovers(tmp_path) == []


def test_corrupt_compressed_data_is_a_mismatch(http_files, image_entry, tmp_path: Path):
    entry = image_entry(
        DATA[:1000], locations=[http_files.add("x.gz", b"\x1f\x8bnot gzip")], compression="gz"
    )
    with pytest.raises(ChecksumMismatch, match="gzip"):
        fetch_image(entry, tmp_path / "image", algorithms=SHA256, allow_private=True)


def test_locations_tried_in_order(http_files, image_entry, tmp_path: Path):
    bad = bytearray(DATA)
    bad[0] ^= 0xFF
    urls = [
        f"{http_files.base}/missing",
        http_files.add("bad", bytes(bad)),
        http_files.add("good", DATA),
    ]
    entry = image_entry(DATA, locations=urls)
    fetched = fetch_image(entry, tmp_path / "image", algorithms=SHA256, allow_private=True)
    assert fetched.location == urls[2]
    assert [p for p, _ in http_files.requests] == ["missing", "bad", "good"]


def test_all_locations_bad_reports_the_verification_failure(http_files, image_entry, tmp_path):
    urls = [f"{http_files.base}/missing", http_files.add("bad", DATA[::-1])]
    entry = image_entry(DATA, locations=urls)
    with pytest.raises(ChecksumMismatch):
        fetch_image(entry, tmp_path / "image", algorithms=SHA256, allow_private=True)


def test_private_address_refused_before_connecting(http_files, image_entry, tmp_path: Path):
    entry = image_entry(DATA, locations=[http_files.add("img", DATA)])
    with pytest.raises(PrivateAddress, match=r"127\.0\.0\.1"):
        fetch_image(entry, tmp_path / "image", algorithms=SHA256)
    assert http_files.requests == []
    assert leftovers(tmp_path) == []


def test_host_name_resolving_to_loopback_refused():
    with pytest.raises(PrivateAddress, match="localhost"):
        resolve_host("localhost", 80, allow_private=False)
    assert resolve_host("localhost", 80, allow_private=True)


@pytest.mark.parametrize(
    "address, public",
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("192.168.0.1", False),
        ("172.16.5.4", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("224.0.0.1", False),
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
    ],
)
def test_address_classification(address: str, public: bool):
    assert is_public_address(address) is public


def test_file_location(image_entry, tmp_path: Path):
    src = tmp_path / "src.img"
    src.write_bytes(DATA)
    entry = image_entry(DATA, locations=[src.as_uri()])
    fetch_image(entry, tmp_path / "out", algorithms=SHA256)
    assert (tmp_path / "out").read_bytes() == DATA


def test_file_location_must_be_regular(image_entry, tmp_path: Path):
    entry = image_entry(DATA[:10], locations=["file:///dev/zero"])
    with pytest.raises(NetworkError, match="regular file"):
        fetch_image(entry, tmp_path / "out", algorithms=SHA256)


def test_unknown_scheme_and_no_location(image_entry, tmp_path: Path):
    with pytest.raises(InputError, match="ftp"):
        fetch_image(image_entry(DATA, locations=["ftp://x/y"]), tmp_path / "o", algorithms=SHA256)
    with pytest.raises(InputError, match="no location"):
        fetch_image(image_entry(DATA), tmp_path / "o", algorithms=SHA256)


@pytest.mark.slow
def test_s3_location(s3_endpoint, image_entry, tmp_path: Path):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="images")
    client.put_object(Bucket="images", Key="a/disk.img", Body=DATA)
    entry = image_entry(DATA, locations=["s3://images/a/disk.img"])
    fetch_image(entry, tmp_path / "out", algorithms=SHA256)
    assert (tmp_path / "out").read_bytes() == DATA


# --- the ID is the bytes -----------------------------------------------------------------


def _claiming_id_of(entry_a, data_b: bytes, location: str):
    """Another endorser's entry under ``entry_a``'s ID (its SHA-1, as the model demands) but
    with its own size, SHA-256 and location: the bytes it points at are ``data_b``."""
    return dataclasses.replace(
        entry_a,
        bytes=len(data_b),
        checksums=(
            entry_a.checksum("SHA-1"),
            Checksum("SHA-256", hashlib.sha256(data_b).hexdigest()),
        ),
        locations=(location,),
    )


def test_bytes_not_named_by_the_id_refused(http_files, image_entry, tmp_path: Path):
    genuine = image_entry(DATA)
    other = os.urandom(1 << 20)
    forged = _claiming_id_of(genuine, other, http_files.add("other", other))
    dest = tmp_path / "cache" / "image"
    with pytest.raises(ChecksumMismatch, match=f"not image {genuine.identifier}: their SHA-1"):
        fetch_image(forged, dest, algorithms=SHA256, allow_private=True)
    assert leftovers(dest.parent) == []


def test_denied_sha1_bytes_behind_another_id_refused(http_files, image_entry, tmp_path: Path):
    """``deny-sha1`` names bytes; an entry that points at them under another ID passes the
    list (its ID is not denied) and must then fail on the bytes."""
    from imagekit.policy.rules import Listed, ListKind

    denied = os.urandom(1 << 20)
    genuine = image_entry(DATA)
    forged = _claiming_id_of(genuine, denied, http_files.add("denied", denied))
    rule = Listed.of(ListKind.SHA1, [hashlib.sha1(denied).hexdigest()], allow=False)
    rule.check(SimpleNamespace(entry=forged, certificate=None), now=datetime.now(UTC))
    with pytest.raises(ChecksumMismatch):
        fetch_image(forged, tmp_path / "image", algorithms=SHA256, allow_private=True)
    assert not (tmp_path / "image").exists()
    with pytest.raises(PolicyRefused, match="denied"):
        rule.check(
            SimpleNamespace(entry=image_entry(denied), certificate=None), now=datetime.now(UTC)
        )


def test_sha1_and_the_policy_digest_hashed_in_one_pass(http_files, image_entry, tmp_path):
    entry = image_entry(DATA, locations=[http_files.add("img", DATA)])
    fetched = fetch_image(entry, tmp_path / "image", algorithms=SHA256, allow_private=True)
    assert set(fetched.digests.values) == {DigestAlgorithm.SHA1, DigestAlgorithm.SHA256}
    assert fetched.digests.sha1 == entry.sha1
    assert len(http_files.requests) == 1


@pytest.mark.parametrize(
    ("address", "public"),
    [
        pytest.param("64:ff9b::7f00:1", False, id="nat64-loopback"),
        pytest.param("64:ff9b::a9fe:a9fe", False, id="nat64-metadata-service"),
        pytest.param("64:ff9b::808:808", True, id="nat64-public"),
        pytest.param("64:ff9b:1::a00:1", False, id="local-use-nat64"),
        pytest.param("2002:7f00:1::1", False, id="6to4-loopback"),
        pytest.param("2002:c0a8:1::1", False, id="6to4-private"),
        pytest.param("2002:808:808::1", True, id="6to4-public"),
        pytest.param("::127.0.0.1", False, id="ipv4-compatible-loopback"),
        pytest.param("::10.0.0.1", False, id="ipv4-compatible-private"),
        pytest.param("::ffff:10.0.0.1", False, id="ipv4-mapped-private"),
        pytest.param("::ffff:0:7f00:1", False, id="ipv4-translated-loopback"),
        pytest.param("2001:0:4136:e378:8000:63bf:80ff:fffe", False, id="teredo-loopback-client"),
    ],
)
def test_ipv6_embedding_a_private_ipv4_address_refused(address: str, public: bool):
    assert is_public_address(address) is public
