"""Instance records and their lifecycle with a real qemu running a one-sector guest.

The guest is a boot sector (padded to 1 MiB, as a disk must be readable by the firmware)
that writes ``IKOK`` to the serial port and then either halts or powers the machine off
through the ACPI PM1a control register (SLP_EN with S5), like an OS shutting down.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest

from imagekit.errors import Ambiguous, NotFound
from imagekit.launch import qemu as q
from imagekit.launch.instances import Drive, DriveKind, Instance, InstanceStore, State
from imagekit.launch.machines import machine_type


def boot_sector(*, power_off: bool) -> bytes:
    code = bytes([0xBA, 0xF8, 0x03])  # mov dx, 0x3f8 (COM1)
    for ch in b"IKOK\n":
        code += bytes([0xB0, ch, 0xEE])  # mov al, ch; out dx, al
    if power_off:
        code += bytes([0xBA, 0x04, 0x06, 0xB8, 0x00, 0x20, 0xEF])  # out 0x604, SLP_EN|S5
    code += bytes([0xFA, 0xF4, 0xEB, 0xFD])  # cli; hlt; jmp $-1
    return (code.ljust(510, b"\0") + b"\x55\xaa").ljust(1 << 20, b"\0")


def make_instance(store: InstanceStore, tmp_path: Path, *, power_off: bool, name: str) -> Instance:
    base = tmp_path / f"{name}.img"
    base.write_bytes(boot_sector(power_off=power_off))
    d = store.directory(name)
    d.mkdir(parents=True)
    overlay = d / "overlay.qcow2"
    q.create_overlay(base, "raw", overlay)
    volatile = d / "volatile-0.qcow2"
    q.create_blank(volatile, 16)
    inst = Instance(
        id=name,
        directory=d,
        image_id="BtSKdXa2SvHlSVTvgFgivIYDq--",
        base_image=base,
        base_format="raw",
        machine=machine_type("t1.micro", ram="64M", swap=0),
        accel="tcg",
        ssh_port=q.free_loopback_port(),
        drives=(
            Drive(DriveKind.ROOT, overlay, "qcow2", serial="root"),
            Drive(DriveKind.VOLATILE, volatile, "qcow2", serial="volatile0", size_gb=1),
        ),
        state=State.BOOT,
    )
    return store.save(inst)


def test_record_round_trip_and_lookup(tmp_path: Path):
    store = InstanceStore(tmp_path)
    a = store.save(dataclasses.replace(_blank(tmp_path, "vm-aaaa1111"), reason="x"))
    store.save(_blank(tmp_path, "vm-aaaa2222"))
    assert store.load("vm-aaaa1111") == a
    assert store.find("aaaa1").id == "vm-aaaa1111"
    assert store.find("vm-aaaa2").id == "vm-aaaa2222"
    with pytest.raises(Ambiguous):
        store.find("aaaa")
    with pytest.raises(NotFound):
        store.find("zzz")
    assert not list(tmp_path.rglob("*.part"))


def _blank(tmp_path: Path, name: str) -> Instance:
    return Instance(
        id=name,
        directory=tmp_path / "instances" / name,
        image_id="X" * 27,
        base_image=tmp_path / "b",
        base_format="raw",
        machine=machine_type(),
        accel="tcg",
        ssh_port=1,
        drives=(),
    )


def test_a_boot_volume_is_held_not_owned_and_survives_remove_owned_files(tmp_path: Path):
    store = InstanceStore(tmp_path)
    vol = tmp_path / "volumes" / "web-root.qcow2"
    vol.parent.mkdir()
    vol.write_bytes(b"disk")
    inst = store.save(
        dataclasses.replace(
            _blank(tmp_path, "vm-b00t0001"),
            drives=(
                Drive(DriveKind.BOOT_VOLUME, vol, "qcow2", serial="root", identifier="web-root"),
            ),
        )
    )
    assert store.load(inst.id) == inst  # the kind round-trips through instance.json
    assert inst.volumes == ["web-root"] and not inst.drives[0].owned
    assert store.remove_owned_files(inst) == [] and vol.exists()


def test_vanished_qemu_is_failed(tmp_path: Path):
    store = InstanceStore(tmp_path)
    inst = store.save(
        dataclasses.replace(_blank(tmp_path, "vm-dead0001"), state=State.RUNNING, pid=2**22 + 7)
    )
    refreshed = store.refresh(inst)
    assert refreshed.state is State.FAILED
    assert "unexpectedly" in refreshed.reason
    assert store.load(inst.id).state is State.FAILED  # persisted


def test_guest_power_off_is_done(tmp_path: Path, no_stray_qemu):
    store = InstanceStore(tmp_path)
    inst = make_instance(store, tmp_path, power_off=True, name="vm-0ff00001")
    pid = q.start(inst, qemu=q.find_tool(q.QEMU))
    store.save(dataclasses.replace(inst, pid=pid))
    assert no_stray_qemu() == [pid]
    done = store.wait(inst, {State.DONE}, timeout=60)
    assert done.state is State.DONE, done.reason
    assert done.reason == "guest powered off"
    assert "IKOK" in inst.console_log.read_text()
    deadline = time.monotonic() + 10
    while no_stray_qemu() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert no_stray_qemu() == []


def test_running_then_stopped_and_files_removed(tmp_path: Path, no_stray_qemu):
    store = InstanceStore(tmp_path)
    inst = make_instance(store, tmp_path, power_off=False, name="vm-00a00002")
    pid = q.start(inst, qemu=q.find_tool(q.QEMU))
    inst = store.save(dataclasses.replace(inst, pid=pid))
    running = store.wait(inst, {State.RUNNING}, timeout=30)
    assert running.state is State.RUNNING
    # the state survives: a new store object (a new CLI process) sees the same
    assert InstanceStore(tmp_path).refresh(InstanceStore(tmp_path).load(inst.id)).state is (
        State.RUNNING
    )
    store.stop(running)
    removed = store.remove_owned_files(running)
    assert {p.name for p in removed} == {"overlay.qcow2", "volatile-0.qcow2"}
    assert not inst.qmp_socket.exists() and not inst.pid_file.exists()
    assert no_stray_qemu() == []
    assert os.path.exists(inst.console_log)


def test_instance_directory_holding_secrets_is_owner_only(tmp_path: Path):
    import os
    import stat

    store = InstanceStore(tmp_path)
    old = os.umask(0o022)
    try:
        inst = store.save(_blank(tmp_path, "vm-bbbb1111"))
        with store.lock("vm-bbbb2222"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE(inst.directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.directory("vm-bbbb2222").stat().st_mode) == 0o700


def test_rm_refuses_a_running_instance_and_kill_rm_forgets_it(
    tmp_path: Path, cli, no_stray_qemu, monkeypatch
):
    monkeypatch.setenv("IMAGEKIT_STATE_DIR", str(tmp_path))
    store = InstanceStore(tmp_path)
    inst = make_instance(store, tmp_path, power_off=False, name="vm-00a00003")
    inst = store.save(dataclasses.replace(inst, name="web1", console="socket"))
    pid = q.start(inst, qemu=q.find_tool(q.QEMU))
    store.wait(store.save(dataclasses.replace(inst, pid=pid)), {State.RUNNING}, timeout=30)
    result = cli("rm", "web1")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "imagekit: error: instance web1 is Running: kill it first",
        "imagekit: hint: imagekit kill --rm web1",
    ]
    assert store.ids() == ["vm-00a00003"] and no_stray_qemu() == [pid]
    result = cli("kill", "--rm", "web1")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == "web1: Done (killed), forgotten\n"
    assert store.ids() == [] and not inst.directory.exists()
    assert no_stray_qemu() == []


def test_names_resolve_like_ids_and_are_unique(tmp_path: Path):
    from imagekit.errors import InvalidState

    store = InstanceStore(tmp_path)
    inst = make_instance(store, tmp_path, power_off=True, name="vm-00a00004")
    store.save(dataclasses.replace(inst, name="web1", state=State.DONE))
    assert store.find("web1").id == "vm-00a00004"
    assert store.find("vm-00a0").name == "web1"
    with pytest.raises(InvalidState, match="already named web1"):
        store.check_name_free("web1")
    store.check_name_free("web2")
    store.forget(store.find("web1"))
    store.check_name_free("web1")
    with pytest.raises(NotFound):
        store.find("web1")
