"""Lifecycle fixtures: instances of a one-sector guest run by real qemu, in milliseconds.

The guest is a boot sector (padded to a disk) that prints ``IKOK`` on the serial port at
every boot. With ``acpi=True`` it then enables the ACPI power button (PM1a_EN) and waits
for it (``sti; hlt`` between looks, so it idles), and when pressed powers the machine off
through PM1a_CNT (SLP_EN, S5) like an OS shutting down; with ``acpi=False`` it halts and
ignores the button, like a hung guest.

    def test_x(sector_vm, lifecycle_settings):
        inst = sector_vm("vm-a", persistent=True)       # Running
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

PMBASE = 0x600  # where SeaBIOS puts the ICH9 (q35) ACPI PM registers


def _mov_dx(port: int) -> bytes:
    return bytes([0xBA, port & 0xFF, port >> 8])


def _mov_ax(value: int) -> bytes:
    return bytes([0xB8, value & 0xFF, value >> 8])


def boot_sector(*, acpi: bool, pad_to: int = 1 << 20, payload: bytes = b"") -> bytes:
    code = _mov_dx(0x3F8)  # COM1
    for ch in b"IKOK\n":
        code += bytes([0xB0, ch, 0xEE])  # mov al, ch; out dx, al
    if acpi:
        code += _mov_dx(PMBASE + 2) + _mov_ax(0x0100) + b"\xef"  # PM1a_EN = PWRBTN_EN
        loop = bytes([0xFB, 0xF4])  # sti; hlt (woken by the BIOS timer tick)
        loop += _mov_dx(PMBASE) + b"\xed"  # in ax, dx (PM1a_STS)
        loop += bytes([0xA9, 0x00, 0x01])  # test ax, PWRBTN_STS
        loop += bytes([0x74, (-(len(loop) + 2)) & 0xFF])  # jz loop
        code += loop
        code += _mov_dx(PMBASE + 4) + _mov_ax(0x2000) + b"\xef"  # PM1a_CNT = SLP_EN | S5
    code += bytes([0xFA, 0xF4, 0xEB, 0xFD])  # cli; hlt; jmp $-1
    disk = code.ljust(510, b"\0") + b"\x55\xaa" + payload
    return disk.ljust(max(pad_to, len(disk) + (-len(disk)) % 512), b"\0")


@pytest.fixture
def lifecycle_settings(tmp_path: Path) -> Any:
    from imagekit.settings import load_settings

    return load_settings(
        {"state_dir": tmp_path / "state", "cache_dir": tmp_path / "cache", "accel": "tcg"}
    )


@pytest.fixture
def sector_vm(
    tmp_path: Path, lifecycle_settings: Any, no_stray_qemu: Callable[[], list[int]]
) -> Callable[..., Any]:
    """``sector_vm(name, *, acpi=True, persistent=False, payload=b"", start=True)``: an
    instance saved in ``lifecycle_settings.state_dir`` (Running if ``start``); the base image
    is ``tmp_path/<name>.img`` (``payload`` after the boot sector). Every qemu is checked
    gone at the end of the test."""
    from imagekit.launch import qemu as q
    from imagekit.launch.disks import prepare_root_disk
    from imagekit.launch.instances import Drive, DriveKind, Instance, InstanceStore, State
    from imagekit.launch.machines import machine_type

    store = InstanceStore(lifecycle_settings.state_dir)
    made: list[str] = []

    def make(
        name: str,
        *,
        acpi: bool = True,
        persistent: bool = False,
        payload: bytes = b"",
        start: bool = True,
        disk_size_mib: int | None = None,
    ) -> Instance:
        base = tmp_path / f"{name}.img"
        base.write_bytes(boot_sector(acpi=acpi, payload=payload))
        d = store.directory(name)
        d.mkdir(parents=True)
        overlay = d / "overlay.qcow2"
        q.create_overlay(base, "raw", overlay)
        if persistent or disk_size_mib:
            prepare_root_disk(overlay, persistent=persistent, size_mib=disk_size_mib)
        context = d / "context.iso"
        context.write_bytes(b"\0" * 65536)  # stands in for the context medium
        inst = Instance(
            id=name,
            directory=d,
            image_id="BtSKdXa2SvHlSVTvgFgivIYDq--",
            base_image=base,
            base_format="raw",
            machine=machine_type("t1.micro", ram="32M", swap="0"),
            accel="tcg",
            ssh_port=q.free_loopback_port(),
            drives=(
                Drive(DriveKind.ROOT, overlay, "qcow2", serial="root"),
                Drive(DriveKind.CONTEXT, context, "raw", readonly=True, serial="context"),
            ),
            state=State.BOOT,
            qemu=q.find_tool(q.QEMU),
            persistent=persistent,
        )
        made.append(name)
        if not start:
            return store.save(dataclasses_replace(inst, state=State.STOPPED))
        store.save(inst)
        pid = q.start(inst, qemu=inst.qemu)
        inst = store.save(dataclasses_replace(inst, pid=pid))
        return store.wait(inst, {State.RUNNING}, timeout=30)

    yield make
    for name in made:
        inst = store.load(name)
        store.stop(inst, timeout=4)


def dataclasses_replace(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)


def console_count(inst: Any, text: str = "IKOK") -> int:
    try:
        return inst.console_log.read_text(errors="replace").count(text)
    except FileNotFoundError:
        return 0
