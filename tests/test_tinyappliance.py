"""The tiny test appliance: an MBR disk with SYSLINUX, a cloud kernel and a busybox initramfs."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import pytest

from imagekit.devtools.tinyappliance import PART_START, make_tiny_appliance
from imagekit.errors import InputError

pytestmark = pytest.mark.skipif(
    not (shutil.which("syslinux") and shutil.which("mcopy") and Path("/bin/busybox").exists()),
    reason="needs syslinux, mtools and busybox-static",
)


def mdir(disk: Path) -> str:
    return subprocess.run(
        ["mdir", "-a", "-b", "-i", f"{disk}@@{PART_START * 512}", "::"],
        capture_output=True,
        check=True,
        env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"},
    ).stdout.decode()


def test_disk_layout(tiny_appliance: Path) -> None:
    data = tiny_appliance.read_bytes()
    assert data[510:512] == b"\x55\xaa"  # MBR signature
    entry = data[446:462]
    assert entry[0] == 0x80  # the partition is active: mbr.bin boots it
    assert int.from_bytes(entry[8:12], "little") == PART_START
    assert data[:440] == Path("/usr/lib/syslinux/mbr/mbr.bin").read_bytes()[:440]
    files = set(mdir(tiny_appliance).split())
    assert {"::/vmlinuz", "::/initrd.gz", "::/syslinux.cfg", "::/ldlinux.sys"} <= files


def test_initramfs_contents(tiny_appliance: Path, tmp_path: Path) -> None:
    initrd = tmp_path / "initrd.gz"
    subprocess.run(
        ["mcopy", "-i", f"{tiny_appliance}@@{PART_START * 512}", "::initrd.gz", str(initrd)],
        check=True,
        env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"},
    )
    listing = (
        subprocess.run(
            ["cpio", "-t", "--quiet"],
            input=gzip.decompress(initrd.read_bytes()),
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split()
    )
    assert "init" in listing
    assert "bin/busybox" in listing
    mods = [p for p in listing if p.endswith(".ko")]
    for name in ("virtio_blk.ko", "virtio_pci.ko", "isofs.ko", "cdrom.ko"):
        assert any(p.endswith("/" + name) for p in mods), name
    assert any(p.endswith("/modules.dep") for p in listing)


def test_cached_and_reproducible(tiny_appliance: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    a = make_tiny_appliance(tmp_path / "a.raw", cache_dir=cache)
    b = make_tiny_appliance(tmp_path / "b.raw", cache_dir=cache)
    assert len(list(cache.glob("tiny-*.raw"))) == 1
    assert a.read_bytes() == b.read_bytes()


def test_qcow2(tiny_appliance: Path, tmp_path: Path) -> None:
    out = make_tiny_appliance(tmp_path / "t.qcow2", fmt="qcow2", cache_dir=tmp_path / "c")
    assert out.read_bytes()[:4] == b"QFI\xfb"


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="raw or qcow2"):
        make_tiny_appliance(tmp_path / "t.vmdk", fmt="vmdk")
