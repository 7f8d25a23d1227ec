"""Disk format detection by magic bytes, on images made by qemu-img and genisoimage."""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
from pathlib import Path

import pytest

from imagekit.errors import InputError, NotFound
from imagekit.image.formats import HEAD_SIZE, DiskFormat, detect_file_format, detect_format


def _qemu_img(path: Path, fmt: str, *options: str) -> Path:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img (qemu-utils) not installed")
    argv = ["qemu-img", "create", "-q", "-f", fmt]
    if options:
        argv += ["-o", ",".join(options)]
    subprocess.run([*argv, str(path), "4M"], check=True, capture_output=True)
    return path


@pytest.mark.parametrize(
    ("qemu_format", "options", "expected"),
    [
        ("qcow2", (), DiskFormat.QCOW2),
        ("vmdk", (), DiskFormat.VMDK),
        ("vmdk", ("subformat=streamOptimized",), DiskFormat.VMDK),
        ("vmdk", ("subformat=monolithicFlat",), DiskFormat.VMDK),  # the descriptor file
        ("vdi", (), DiskFormat.VDI),
        ("vpc", (), DiskFormat.VHD),  # dynamic: footer copy at offset 0
        ("vpc", ("subformat=fixed",), DiskFormat.VHD),  # footer only at the end
        ("vhdx", (), DiskFormat.VHDX),
        ("raw", (), DiskFormat.RAW),
    ],
    ids=[
        "qcow2",
        "vmdk",
        "vmdk-stream",
        "vmdk-descriptor",
        "vdi",
        "vhd",
        "vhd-fixed",
        "vhdx",
        "raw",
    ],
)
def test_detects_images_made_by_qemu_img(
    tmp_path: Path, qemu_format: str, options: tuple[str, ...], expected: DiskFormat
) -> None:
    path = _qemu_img(tmp_path / f"disk.{qemu_format}", qemu_format, *options)
    assert detect_file_format(path) is expected


def test_fixed_vhd_is_raw_to_the_head_alone(tmp_path: Path) -> None:
    path = _qemu_img(tmp_path / "fixed.vhd", "vpc", "subformat=fixed")
    assert detect_format(path.read_bytes()[:HEAD_SIZE]) is DiskFormat.RAW


def _iso(tmp_path: Path) -> Path:
    if shutil.which("genisoimage") is None:
        pytest.skip("genisoimage not installed")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "hello.txt").write_text("hello\n")
    iso = tmp_path / "data.iso"
    subprocess.run(
        ["genisoimage", "-quiet", "-V", "DATA", "-o", str(iso), str(tree)],
        check=True,
        capture_output=True,
    )
    return iso


def test_detects_iso(tmp_path: Path) -> None:
    assert detect_file_format(_iso(tmp_path)) is DiskFormat.ISO


def test_iso_needs_32k_of_head(tmp_path: Path) -> None:
    head = _iso(tmp_path).read_bytes()[:HEAD_SIZE]
    assert detect_format(head) is DiskFormat.ISO
    assert detect_format(head[:0x8000]) is DiskFormat.RAW


def test_detects_through_compression(tmp_path: Path) -> None:
    iso = _iso(tmp_path)
    gz = tmp_path / "data.iso.gz"
    gz.write_bytes(gzip.compress(iso.read_bytes()))
    assert detect_file_format(gz) is DiskFormat.ISO
    qcow = _qemu_img(tmp_path / "disk.qcow2", "qcow2")
    xz = tmp_path / "disk.qcow2.xz"
    xz.write_bytes(lzma.compress(qcow.read_bytes()))
    assert detect_file_format(xz) is DiskFormat.QCOW2
    # Without the suffix, the compressed bytes are what they are: not a disk format.
    assert detect_file_format(xz, compression="") is DiskFormat.RAW


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"QFI\xfb\0\0\0\3" + bytes(100), DiskFormat.QCOW2),
        (b"KDMV\1\0\0\0", DiskFormat.VMDK),
        (b"COWD\1\0\0\0", DiskFormat.VMDK),
        (b"# Disk DescriptorFile\nversion=1\n", DiskFormat.VMDK),
        (
            b"<<< Oracle VM VirtualBox Disk Image >>>\n".ljust(0x40, b"\0") + b"\x7f\x10\xda\xbe",
            DiskFormat.VDI,
        ),
        (b"conectix\0\0\0\2", DiskFormat.VHD),
        (b"vhdxfile", DiskFormat.VHDX),
        (bytes(0x8001) + b"CD001\1", DiskFormat.ISO),
        (b"\xeb\x63\x90" + bytes(509), DiskFormat.RAW),  # an MBR boot sector
        (b"", DiskFormat.RAW),
        (b"QFI", DiskFormat.RAW),  # too short to be anything
    ],
    ids=[
        "qcow2",
        "vmdk-sparse",
        "vmdk-cowd",
        "vmdk-descriptor",
        "vdi",
        "vhd",
        "vhdx",
        "iso",
        "mbr",
        "empty",
        "short",
    ],
)
def test_detect_format_by_magic(head: bytes, expected: DiskFormat) -> None:
    assert detect_format(head) is expected


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no such file"):
        detect_file_format(tmp_path / "nope.qcow2")


def test_unsupported_compression_suffix_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "disk.img.zst"
    path.write_bytes(b"\x28\xb5\x2f\xfd")
    with pytest.raises(InputError, match="zstd compression is not supported"):
        detect_file_format(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("QCOW2", DiskFormat.QCOW2), ("vpc", DiskFormat.VHD), (" raw ", DiskFormat.RAW)],
)
def test_parse(text: str, expected: DiskFormat) -> None:
    assert DiskFormat.parse(text) is expected


def test_parse_refuses_unknown_format() -> None:
    with pytest.raises(InputError, match="unknown disk format 'dmg'; known: raw, qcow2"):
        DiskFormat.parse("dmg")


def test_qemu_names() -> None:
    assert DiskFormat.VHD.qemu_name == "vpc"
    assert DiskFormat.ISO.qemu_name == "raw"
    assert DiskFormat.QCOW2.qemu_name == "qcow2"
