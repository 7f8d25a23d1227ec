"""The qemu command line (pure), the accelerator probe, machine types."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagekit.errors import InputError, NotFound
from imagekit.launch import qemu as q
from imagekit.launch.instances import Drive, DriveKind, Instance
from imagekit.launch.machines import MACHINE_TYPES, machine_type, parse_size_mib


def instance(tmp_path: Path, **changes) -> Instance:
    d = tmp_path / "instances" / "vm-12345678"
    fields = dict(
        id="vm-12345678",
        directory=d,
        image_id="BtSKdXa2SvHlSVTvgFgivIYDq--",
        base_image=tmp_path / "cache" / "SHA-256-ab",
        base_format="raw",
        machine=machine_type("m1.small"),
        accel="tcg",
        ssh_port=40022,
        drives=(
            Drive(DriveKind.ROOT, d / "overlay.qcow2", "qcow2", serial="root"),
            Drive(DriveKind.CONTEXT, d / "context.iso", "raw", readonly=True, serial="context"),
            Drive(
                DriveKind.READONLY,
                tmp_path / "cache" / "data,1",
                "raw",
                readonly=True,
                serial="ro0",
            ),
            Drive(DriveKind.VOLATILE, d / "volatile-0.qcow2", "qcow2", serial="volatile0"),
        ),
    )
    fields.update(changes)
    return Instance(**fields)  # type: ignore[arg-type]


def opt(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_argv_is_a_pure_function_of_the_instance(tmp_path: Path):
    inst = instance(tmp_path)
    argv = q.qemu_argv(inst, qemu="/usr/bin/qemu-system-x86_64")
    assert argv == q.qemu_argv(inst, qemu="/usr/bin/qemu-system-x86_64")
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    assert opt(argv, "-accel") == ["tcg"]
    assert opt(argv, "-cpu") == ["max"]
    assert opt(argv, "-smp") == ["1"]
    assert opt(argv, "-m") == ["1536M"]
    assert opt(argv, "-pidfile") == [str(inst.pid_file)]
    assert opt(argv, "-qmp") == ["unix:qmp.sock,server=on,wait=off"]
    assert opt(argv, "-serial") == [f"file:{inst.console_log}"]
    assert "-daemonize" in argv and "-no-shutdown" in argv
    (netdev,) = opt(argv, "-netdev")
    assert "hostfwd=tcp:127.0.0.1:40022-:22" in netdev


def test_drives_in_order_readonly_flags_and_escaped_commas(tmp_path: Path):
    argv = q.qemu_argv(instance(tmp_path))
    drives = opt(argv, "-drive")
    assert [d.split(",")[0] for d in drives][:2] == [
        f"file={tmp_path}/instances/vm-12345678/overlay.qcow2",
        f"file={tmp_path}/instances/vm-12345678/context.iso",
    ]
    assert "readonly=on" not in drives[0] and "format=qcow2" in drives[0]
    assert "readonly=on" in drives[1] and "readonly=on" in drives[2]
    assert f"file={tmp_path}/cache/data,,1," in drives[2]  # a comma in a path is doubled
    assert "readonly=on" not in drives[3]
    devices = [d for d in opt(argv, "-device") if d.startswith("virtio-blk-pci")]
    assert len(devices) == 4
    assert "bootindex=0" in devices[0] and "serial=root" in devices[0]
    assert all("bootindex" not in d for d in devices[1:])
    assert "serial=ro0" in devices[2]


def test_a_boot_volume_is_the_boot_disk(tmp_path: Path):
    vol = tmp_path / "volumes" / "web-root.qcow2"
    inst = instance(
        tmp_path,
        drives=(
            Drive(DriveKind.BOOT_VOLUME, vol, "qcow2", serial="root", identifier="web-root"),
            Drive(
                DriveKind.CONTEXT, tmp_path / "context.iso", "raw", readonly=True, serial="context"
            ),
        ),
    )
    argv = q.qemu_argv(inst)
    assert opt(argv, "-drive")[0].startswith(f"file={vol},format=qcow2,")
    devices = [d for d in opt(argv, "-device") if d.startswith("virtio-blk-pci")]
    assert "bootindex=0" in devices[0] and "serial=root" in devices[0]
    assert "bootindex" not in devices[1]


def test_kvm_argv_and_unresolved_accel(tmp_path: Path):
    argv = q.qemu_argv(instance(tmp_path, accel="kvm"))
    assert opt(argv, "-accel") == ["kvm"] and opt(argv, "-cpu") == ["host"]
    with pytest.raises(InputError, match="auto"):
        q.qemu_argv(instance(tmp_path, accel="auto"))


def test_machine_types_and_overrides():
    assert {"t1.micro", "m1.small", "c1.medium", "m1.large", "m1.xlarge", "c1.xlarge"} <= set(
        MACHINE_TYPES
    )
    small = machine_type("m1.small")
    assert (small.cpu, small.ram_mib, small.swap_mib) == (1, 1536, 1536)
    custom = machine_type("m1.small", cpu=2, ram="2G", swap="0")
    assert (custom.cpu, custom.ram_mib, custom.swap_mib) == (2, 2048, 0)
    assert parse_size_mib("512M") == 512 and parse_size_mib("1.5GiB") == 1536
    with pytest.raises(NotFound, match=r"m9\.huge"):
        machine_type("m9.huge")
    with pytest.raises(InputError):
        machine_type("m1.small", cpu=0)
    with pytest.raises(InputError):
        parse_size_mib("lots")


def test_probe_boots_a_guest_under_tcg():
    assert q.probe_accel("tcg", timeout=20) is True


def test_probe_without_a_readable_kernel_boots_its_boot_sector(monkeypatch):
    monkeypatch.setattr(q, "_probe_kernel", lambda: None)
    assert q.probe_accel("tcg", timeout=20) is True


@pytest.mark.parametrize(
    ("prints", "ok"),
    [
        ("Probing EDD (edd=off to disable)... ok", False),  # real mode ran, then the hang
        ("Probing EDD (edd=off to disable)... ok\n[    0.000000] Linux version 6.1.0", True),
    ],
)
def test_probe_wants_the_kernel_to_start_not_only_its_real_mode_setup(
    prints: str, ok: bool, tmp_path: Path, monkeypatch
):
    kernel = tmp_path / "vmlinuz-test"
    kernel.write_bytes(b"")
    monkeypatch.setattr(q, "_probe_kernel", lambda: kernel)
    fake = tmp_path / "qemu"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' '{prints}'\nexec sleep 30\n")
    fake.chmod(0o755)
    assert q.probe_accel("tcg", qemu=str(fake), timeout=1.5) is ok


def test_accel_setting_tcg_never_probes_and_auto_remembers(tmp_path: Path, monkeypatch):
    calls: list[str] = []
    real = q.probe_accel

    def counting(accel: str, **kw):
        calls.append(accel)
        return real(accel, **kw)

    monkeypatch.setattr(q, "probe_accel", counting)
    qemu = q.find_tool(q.QEMU)
    assert q.resolve_accel("tcg", qemu=qemu, state_dir=tmp_path) == "tcg"
    assert calls == []
    first = q.resolve_accel("auto", qemu=qemu, state_dir=tmp_path)
    assert first in ("tcg", "kvm")
    assert q.resolve_accel("auto", qemu=qemu, state_dir=tmp_path) == first
    assert calls == ["kvm"]  # probed once, then remembered


def test_free_loopback_port_is_bindable():
    import socket

    port = q.free_loopback_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_forwarded_ports_each_get_a_hostfwd_on_their_address(tmp_path: Path):
    from imagekit.launch.instances import PortForward

    inst = instance(
        tmp_path, ports=(PortForward(8080, 80), PortForward(41000, 443, source="entry"))
    )
    (netdev,) = opt(q.qemu_argv(inst), "-netdev")
    assert netdev.split(",")[2:] == [
        "hostfwd=tcp:127.0.0.1:40022-:22",
        "hostfwd=tcp:127.0.0.1:8080-:80",
        "hostfwd=tcp:127.0.0.1:41000-:443",
    ]


@pytest.mark.parametrize(
    "bus, controller, devices",
    [
        (
            "ide",
            ["piix3-ide,id=pide"],
            [
                "ide-hd,drive=root0,bus=pide.0,unit=0,serial=root,bootindex=0",
                "ide-cd,drive=context1,bus=pide.0,unit=1,serial=context",  # read-only: a CD-ROM
                "ide-cd,drive=readonly2,bus=pide.1,unit=0,serial=ro0",
                "ide-hd,drive=volatile3,bus=pide.1,unit=1,serial=volatile0",
            ],
        ),
        (
            "scsi",
            ["virtio-scsi-pci,id=scsi0"],
            [
                "scsi-hd,drive=root0,bus=scsi0.0,serial=root,bootindex=0",
                "scsi-hd,drive=context1,bus=scsi0.0,serial=context",
                "scsi-hd,drive=readonly2,bus=scsi0.0,serial=ro0",
                "scsi-hd,drive=volatile3,bus=scsi0.0,serial=volatile0",
            ],
        ),
    ],
    ids=["ide", "scsi"],
)
def test_disks_bus_puts_every_disk_on_that_controller(tmp_path: Path, bus, controller, devices):
    import dataclasses

    from imagekit.launch.instances import DiskBus

    base = instance(tmp_path)
    inst = dataclasses.replace(
        base, drives=tuple(dataclasses.replace(d, bus=DiskBus(bus)) for d in base.drives)
    )
    argv = q.qemu_argv(inst)
    devs = opt(argv, "-device")
    assert [d for d in devs if d in controller] == controller
    assert [d for d in devs if d.split(",")[0] in ("ide-hd", "ide-cd", "scsi-hd")] == devices
    assert not any(d.startswith("virtio-blk-pci") for d in devs)


def test_an_attachable_console_is_a_socket_that_still_logs(tmp_path: Path):
    inst = instance(tmp_path, console="socket")
    argv = q.qemu_argv(inst)
    assert opt(argv, "-serial") == ["chardev:ser0"]
    chardevs = opt(argv, "-chardev")
    assert (
        f"socket,id=ser0,path=console.sock,server=on,wait=off,"
        f"logfile={inst.console_log},logappend=off"
    ) in chardevs


def test_swap_disk_is_formatted_with_the_label_the_context_names(tmp_path: Path):
    out = tmp_path / "swap.raw"
    q.create_swap(out, 16)
    assert out.stat().st_size == 16 << 20
    data = out.read_bytes()[:8192]
    assert data[4096 - 10 : 4096] == b"SWAPSPACE2"  # mkswap's signature, end of page 1
    assert q.SWAP_LABEL.encode() in data[1024:1100]
