"""Compression: names, suffixes, magic, incremental and streaming decompression, bombs."""

from __future__ import annotations

import bz2
import functools
import gzip
import io
import lzma
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.errors import InputError, SizeMismatch
from imagekit.image.compression import Compression, CorruptData, Decompressor, open_decompressed

COMPRESSORS: dict[Compression, Callable[[bytes], bytes]] = {
    Compression.GZ: gzip.compress,
    Compression.BZ2: bz2.compress,
    Compression.XZ: lzma.compress,
}
TOOLS = {Compression.GZ: "gzip", Compression.BZ2: "bzip2", Compression.XZ: "xz"}
ALL = list(COMPRESSORS)

# Compressible and incompressible stretches; longer than a read and than a piece (tests
# that check piece bounds pass smaller pieces).
DATA = os.urandom(200_000) + bytes(1 << 20) + os.urandom(70_000) + b"tail"
BOMB_SIZE = 16 << 20


@functools.cache
def _compressed(compression: Compression, what: str = "data") -> bytes:
    return COMPRESSORS[compression](DATA if what == "data" else bytes(BOMB_SIZE))


def _feed_in_chunks(dec: Decompressor, data: bytes, size: int) -> bytes:
    out = b"".join(dec.feed(data[i : i + size]) for i in range(0, len(data), size))
    return out + dec.flush()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gz", Compression.GZ),
        ("GZIP", Compression.GZ),
        (".gz", Compression.GZ),
        ("bzip2", Compression.BZ2),
        ("xz", Compression.XZ),
        ("", Compression.NONE),
        (None, Compression.NONE),
        ("none", Compression.NONE),
    ],
)
def test_parse_accepts_names_and_suffixes(text: str | None, expected: Compression) -> None:
    assert Compression.parse(text) is expected


def test_parse_refuses_unknown_compression_naming_the_supported_ones() -> None:
    with pytest.raises(InputError, match=r"unsupported compression 'zstd'; supported: gz, bz2"):
        Compression.parse("zstd")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("disk.qcow2.gz", Compression.GZ),
        ("disk.img.BZ2", Compression.BZ2),
        ("/a/b.c/disk.raw.xz", Compression.XZ),
        ("disk.qcow2", Compression.NONE),
        ("disk", Compression.NONE),
        ("/dir.gz/disk", Compression.NONE),
    ],
)
def test_from_suffix(name: str, expected: Compression) -> None:
    assert Compression.from_suffix(name) is expected


@pytest.mark.parametrize(("name", "what"), [("d.img.zst", "zstd"), ("d.zip", "zip")])
def test_from_suffix_refuses_unsupported_compression(name: str, what: str) -> None:
    with pytest.raises(InputError, match=f"{what} compression is not supported"):
        Compression.from_suffix(name)


@pytest.mark.parametrize("compression", ALL)
def test_from_magic_recognises_each_format(compression: Compression) -> None:
    assert Compression.from_magic(COMPRESSORS[compression](b"x")[:8]) is compression


def test_from_magic_of_plain_data_is_none() -> None:
    assert Compression.from_magic(b"QFI\xfb\0\0\0\3") is Compression.NONE
    assert Compression.from_magic(b"") is Compression.NONE


def test_from_magic_refuses_zstd() -> None:
    with pytest.raises(InputError, match="zstd compressed data is not supported"):
        Compression.from_magic(b"\x28\xb5\x2f\xfd\x00")


@pytest.mark.parametrize("compression", ALL)
@pytest.mark.parametrize("chunk", [1, 1000, 65536, 10 << 20], ids=["1B", "1000B", "64K", "all"])
def test_decompressor_gives_back_the_data_whatever_the_chunking(
    compression: Compression, chunk: int
) -> None:
    compressed = _compressed(compression)
    if chunk == 1:
        compressed = COMPRESSORS[compression](DATA[:5000])  # byte-at-a-time: keep it quick
        assert _feed_in_chunks(Decompressor(compression), compressed, 1) == DATA[:5000]
        return
    assert _feed_in_chunks(Decompressor(compression), compressed, chunk) == DATA


@pytest.mark.parametrize("compression", ALL)
def test_decompressor_reads_concatenated_streams(compression: Compression) -> None:
    compress = COMPRESSORS[compression]
    compressed = compress(b"first ") + compress(b"second ") + compress(b"third")
    for chunk in (3, len(compressed)):
        dec = Decompressor(compression)
        assert _feed_in_chunks(dec, compressed, chunk) == b"first second third"


@pytest.mark.parametrize("compression", ALL)
def test_decompressor_matches_the_command_line_tool(
    compression: Compression, tmp_path: Path
) -> None:
    tool = TOOLS[compression]
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed")
    compressed = subprocess.run([tool, "-c"], input=DATA, capture_output=True, check=True).stdout
    assert _feed_in_chunks(Decompressor(compression), compressed, 65536) == DATA


def test_decompressor_none_passes_data_through() -> None:
    dec = Decompressor(Compression.NONE)
    assert dec.feed(b"abc") + dec.feed(bytearray(b"def")) + dec.flush() == b"abcdef"
    assert list(Decompressor("").feed_pieces(b"abcdefg", piece=3)) == [b"abc", b"def", b"g"]


def test_decompressor_none_also_stops_at_max_output() -> None:
    dec = Decompressor(Compression.NONE, max_output=5)
    assert dec.feed(b"abc") == b"abc"
    with pytest.raises(SizeMismatch):
        dec.feed(b"def")


@pytest.mark.parametrize("compression", ALL)
def test_zero_padding_after_the_last_stream_is_ignored(compression: Compression) -> None:
    compressed = _compressed(compression) + bytes(1000)
    assert _feed_in_chunks(Decompressor(compression), compressed, 333) == DATA


def test_trailing_garbage_is_refused() -> None:
    with pytest.raises(CorruptData):
        _feed_in_chunks(Decompressor("gz"), gzip.compress(b"data") + b"garbage", 1 << 20)


@pytest.mark.parametrize("compression", ALL)
def test_truncated_data_is_refused_at_flush(compression: Compression) -> None:
    compressed = _compressed(compression)
    dec = Decompressor(compression)
    with pytest.raises(CorruptData, match=r"truncated|corrupt"):
        dec.feed(compressed[: len(compressed) // 2])
        dec.flush()


@pytest.mark.parametrize("compression", ALL)
def test_wrong_format_is_refused(compression: Compression) -> None:
    with pytest.raises(CorruptData, match="corrupt"):
        Decompressor(compression).feed(b"this is not compressed at all" * 10)


@pytest.mark.parametrize("compression", ALL)
def test_empty_input_is_refused(compression: Compression) -> None:
    with pytest.raises(CorruptData, match="empty input"):
        Decompressor(compression).flush()


def test_damaged_gzip_is_refused_by_its_crc() -> None:
    compressed = bytearray(gzip.compress(DATA))
    compressed[-8] ^= 0xFF  # CRC-32 in the trailer
    with pytest.raises(CorruptData):
        _feed_in_chunks(Decompressor(Compression.GZ), bytes(compressed), 1 << 20)


@pytest.mark.parametrize("compression", ALL)
def test_bomb_stops_at_max_output(compression: Compression) -> None:
    # 16 MiB of zeros compress to a few KiB; a cap of 1 MiB must stop it right there.
    bomb = _compressed(compression, "bomb")
    dec = Decompressor(compression, max_output=1 << 20)
    produced = 0
    with pytest.raises(SizeMismatch, match=f"exceeds the expected {1 << 20} bytes"):
        for piece in dec.feed_pieces(bomb):
            produced += len(piece)
    assert produced <= 1 << 20  # the piece that passed the cap was never handed out
    assert dec.output_size == (1 << 20) + 1


@pytest.mark.parametrize("compression", ALL)
def test_max_output_allows_exactly_that_size(compression: Compression) -> None:
    dec = Decompressor(compression, max_output=len(DATA))
    assert _feed_in_chunks(dec, _compressed(compression), 1 << 20) == DATA


@pytest.mark.parametrize("compression", ALL)
def test_feed_pieces_bounds_each_piece(compression: Compression) -> None:
    dec = Decompressor(compression)
    pieces = list(dec.feed_pieces(_compressed(compression), piece=100_000))
    assert max(len(p) for p in pieces) <= 100_000
    assert b"".join(pieces) == DATA


@pytest.mark.parametrize("compression", ALL)
def test_open_decompressed_streams(compression: Compression) -> None:
    fp = io.BytesIO(_compressed(compression))
    out = open_decompressed(fp, compression)
    assert out.read(10) == DATA[:10]
    rest = bytearray()
    while chunk := out.read(12345):
        rest += chunk
    assert bytes(rest) == DATA[10:]


def test_open_decompressed_of_none_is_the_file_itself() -> None:
    fp = io.BytesIO(b"abc")
    assert open_decompressed(fp, Compression.NONE) is fp


def test_open_decompressed_refuses_truncated_stream() -> None:
    fp = io.BytesIO(gzip.compress(DATA)[:-100])
    with pytest.raises(CorruptData, match="truncated"):
        open_decompressed(fp, "gz").read()


def test_open_decompressed_stops_a_bomb() -> None:
    fp = io.BytesIO(_compressed(Compression.GZ, "bomb"))
    with pytest.raises(SizeMismatch):
        open_decompressed(fp, "gz", max_output=1000).read()


def test_suffix_property() -> None:
    assert Compression.GZ.suffix == ".gz"
    assert Compression.NONE.suffix == ""
