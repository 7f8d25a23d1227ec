"""Snapshots of real qemu instances (one-sector guests): consistent, flattened, compressed,
atomic; a fresh entry describing the new bytes; faults leave nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imagekit.entry import parse_entry_bytes
from imagekit.entry.describe import describe_image
from imagekit.errors import EnvironmentProblem, InputError, NotFound
from imagekit.image.digests import DigestAlgorithm
from imagekit.image.identifier import sha1_to_id
from imagekit.launch import lifecycle
from imagekit.launch.instances import InstanceStore, State
from imagekit.launch.snapshot import bump_version, snapshot
from imagekit.signing.verify import verify_entry
from tests.plugins.lifecycle import console_count


def booted(inst, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while console_count(inst) < 1:
        assert time.monotonic() < deadline, "guest did not boot"
        time.sleep(0.05)
    time.sleep(0.1)


def info(path: Path) -> dict:
    return json.loads(
        subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", str(path)], check=True, capture_output=True
        ).stdout
    )


def same_content(a: Path, b: Path) -> bool:
    return (
        subprocess.run(
            ["qemu-img", "compare", "-U", str(a), str(b)], capture_output=True
        ).returncode
        == 0
    )


def write_pattern(disk: Path, byte: int = 0x5A) -> None:
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -P {byte:#x} 512k 64k", str(disk)],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def base_entry(tmp_path: Path):
    """The entry the instances were 'launched' from (terms to carry over)."""
    img = tmp_path / "base-entry.img"
    img.write_bytes(b"base")
    return describe_image(
        img,
        title="Web server",
        description="nginx on Debian",
        version="1.0",
        os="debian",
        os_version="12",
        os_arch="x86_64",
        tag="web",
        inbound_ports=(22, 80),
    )


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("1.0", "1.1"),
        ("1.9", "1.10"),
        ("2.3.4", "2.3.5"),
        ("2", "2.1"),
        (None, "1.1"),
        ("beta", "beta.1"),
    ],
)
def test_bump_version(before, after):
    assert bump_version(before) == after


def test_stopped_instance_becomes_a_standalone_compressed_image_with_a_fresh_entry(
    sector_vm, lifecycle_settings, tmp_path, base_entry
):
    inst = sector_vm("vm-snap", start=False, payload=b"compressible text\n" * 200_000)
    root = inst.drives[0].path
    write_pattern(root)
    out = tmp_path / "out" / "web-v2.qcow2"
    out.parent.mkdir()
    snap = snapshot(
        lifecycle_settings, "vm-snap", out, base=base_entry, fields={"title": "Web server v2"}
    )
    assert snap.method == "instance not running" and snap.image == out
    meta = info(out)
    assert meta["format"] == "qcow2" and "backing-filename" not in meta  # flattened
    assert same_content(root, out)  # the guest's write and the base's bytes
    assert out.stat().st_size < 1 << 20 < len(inst.base_image.read_bytes())  # compressed
    assert sorted(os.listdir(out.parent)) == ["web-v2.qcow2", "web-v2.qcow2.xml"]

    entry = parse_entry_bytes(snap.entry_path.read_bytes())
    data = out.read_bytes()
    assert entry.identifier == sha1_to_id(hashlib.sha1(data).hexdigest())
    assert entry.bytes == len(data)
    assert entry.checksum(DigestAlgorithm.SHA256).value == hashlib.sha256(data).hexdigest()
    assert entry.identifier != base_entry.identifier
    assert entry.replaces == inst.image_id
    assert entry.version == "1.1"
    assert entry.title == "Web server v2"  # overridden
    assert entry.description == "nginx on Debian" and entry.inbound_ports == (22, 80)
    assert (entry.os, entry.os_version, entry.os_arch) == ("debian", "12", "x86_64")
    assert str(entry.format) == "qcow2" and str(entry.kind) == "machine"
    assert entry.alternative is None and entry.locations == ()  # a tag is given, not carried
    assert entry.endorsement.endorser is None  # an unsigned draft
    assert datetime.now(UTC) - entry.created < timedelta(minutes=5)
    assert store_state(lifecycle_settings, "vm-snap") is State.STOPPED


def store_state(settings, name: str) -> State:
    store = InstanceStore(settings.state_dir)
    return store.refresh(store.load(name)).state


def test_running_instance_without_agent_is_stopped_copied_and_booted_again(
    sector_vm, lifecycle_settings, tmp_path, no_stray_qemu, base_entry
):
    inst = sector_vm("vm-live")
    booted(inst)
    (pid,) = no_stray_qemu()
    assert not lifecycle.guest_agent_connected(inst)
    snap = snapshot(lifecycle_settings, "vm-live", tmp_path / "live.qcow2", base=base_entry)
    assert snap.method == "stopped first"
    (new_pid,) = no_stray_qemu()
    assert new_pid != pid and store_state(lifecycle_settings, "vm-live") is State.RUNNING
    assert inst.console_log.with_name("console.log.1").exists()  # it did shut down
    assert same_content(inst.drives[0].path, snap.image)


def test_hung_guest_is_not_snapshotted_without_force_and_nothing_changes(
    sector_vm, lifecycle_settings, tmp_path, no_stray_qemu, base_entry
):
    inst = sector_vm("vm-hung", acpi=False)
    booted(inst)
    (pid,) = no_stray_qemu()
    out = tmp_path / "hung.qcow2"
    with pytest.raises(lifecycle.StopTimeout):
        snapshot(lifecycle_settings, "vm-hung", out, base=base_entry, stop_timeout=1)
    assert not out.exists() and not out.with_name("hung.qcow2.xml").exists()
    assert no_stray_qemu() == [pid] and store_state(lifecycle_settings, "vm-hung") is State.RUNNING
    snap = snapshot(
        lifecycle_settings, "vm-hung", out, base=base_entry, stop_timeout=1, force_stop=True
    )
    assert snap.image.exists() and store_state(lifecycle_settings, "vm-hung") is State.RUNNING


def test_missing_instance_and_existing_output_are_refused_before_anything_happens(
    sector_vm, lifecycle_settings, tmp_path, no_stray_qemu
):
    with pytest.raises(NotFound, match="no instance 'vm-missing'"):
        snapshot(lifecycle_settings, "vm-missing", tmp_path / "x.qcow2", carry_base=False)
    assert not (tmp_path / "x.qcow2").exists()
    sector_vm("vm-here")
    (pid,) = no_stray_qemu()
    taken = tmp_path / "taken.qcow2"
    taken.write_bytes(b"precious")
    with pytest.raises(InputError, match="exists"):
        snapshot(lifecycle_settings, "vm-here", taken, carry_base=False)
    assert taken.read_bytes() == b"precious" and no_stray_qemu() == [pid]
    with pytest.raises(InputError, match="does not exist"):
        snapshot(lifecycle_settings, "vm-here", tmp_path / "no" / "dir.qcow2", carry_base=False)
    with pytest.raises(InputError, match=r"written as qcow2, not \.raw"):
        snapshot(lifecycle_settings, "vm-here", tmp_path / "disk.raw", carry_base=False)
    assert not (tmp_path / "disk.raw").exists() and no_stray_qemu() == [pid]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB ext4 file system, loop-mounted (an output directory that fills up)."""
    if os.geteuid() != 0 or not shutil.which("mkfs.ext4"):
        pytest.skip("needs root and mkfs.ext4 for a loop mount")
    img, mnt = tmp_path / "small.ext4", tmp_path / "small"
    with open(img, "wb") as fp:
        fp.truncate(4 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True, capture_output=True)
    mnt.mkdir()
    done = subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot loop-mount here: {done.stderr!r}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_during_snapshot_leaves_nothing_and_the_instance_running(
    sector_vm, lifecycle_settings, small_fs, no_stray_qemu, base_entry
):
    inst = sector_vm("vm-full", payload=os.urandom(8 << 20))  # incompressible
    booted(inst)
    before = sorted(os.listdir(small_fs))
    out = small_fs / "big.qcow2"
    with pytest.raises(EnvironmentProblem, match=r"no space left in .*small") as e:
        snapshot(lifecycle_settings, "vm-full", out, base=base_entry)
    assert "nothing was written" in (e.value.hint or "")
    assert sorted(os.listdir(small_fs)) == before  # no partial image, no entry
    assert store_state(lifecycle_settings, "vm-full") is State.RUNNING
    assert len(no_stray_qemu()) == 1
    assert inst.drives[0].path.exists() and inst.base_image.exists()  # nothing lost


def test_cli_snapshot_then_sign_and_verify(
    sector_vm, lifecycle_settings, tmp_path, cli, sign_xml, trust_store
):
    sector_vm("vm-cli", start=False)
    env = {"IMAGEKIT_STATE_DIR": str(lifecycle_settings.state_dir)}
    out = tmp_path / "cli.qcow2"
    result = cli(
        "snapshot",
        "vm-cli",
        "-o",
        out,
        "--no-base",
        "--title",
        "CLI snap",
        "--version",
        "3.0",
        "--json",
        env=env,
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["image"] == str(out) and doc["version"] == "3.0"
    assert doc["replaces"] == "BtSKdXa2SvHlSVTvgFgivIYDq--"
    signed = sign_xml(Path(doc["entry"]).read_bytes())
    verified = verify_entry(signed, trust_store, now=datetime.now(UTC))
    assert verified.entry.identifier == doc["id"] and verified.entry.title == "CLI snap"
    again = cli("snapshot", "vm-cli", "-o", out, "--no-base", env=env)
    assert again.exit_code == 2 and f"imagekit: error: {out} exists" in again.stderr
    missing = cli("snapshot", "vm-nope", "-o", tmp_path / "n.qcow2", env=env)
    assert missing.exit_code == 2
    assert missing.stderr.splitlines()[0] == "imagekit: error: no instance 'vm-nope'"
