"""qemu: the command line (a pure function of an Instance), the accelerator probe, disks and
starting the daemon.

qemu runs daemonized with a pid file, a QMP socket in the instance directory, the serial
console written to ``console.log`` and user-mode networking forwarding a loopback port to
the guest's ssh. ``-no-shutdown`` keeps qemu alive when the guest powers off, so the next
look at the instance can tell a clean power-off (QMP status ``shutdown``) from a crash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .._files import atomic_write
from .._run import child_env, find_tool, run
from ..errors import CommandError, EnvironmentProblem, InputError
from ..settings import Accel
from .instances import DiskBus, Drive, DriveKind, Instance

QEMU = "qemu-system-x86_64"
QEMU_IMG = "qemu-img"
HOTPLUG_PORTS = ("hp0", "hp1", "hp2")
QGA_SOCKET = "qga.sock"  # in the instance directory
QGA_CHANNEL = "org.qemu.guest_agent.0"
CONSOLE_SOCKET = "console.sock"  # in the instance directory
SWAP_LABEL = "imagekit-swap"
IDE_MAX_DISKS = 4  # one PIIX controller: two buses, master and slave on each


# --- the command line -------------------------------------------------------------------


def _drive_args(index: int, drive: Drive, bus_index: int) -> list[str]:
    """``-drive`` and ``-device`` for one disk; ``bus_index`` counts the disks before it on
    the same bus (an IDE disk's place: controller bus and unit)."""
    node = f"{drive.kind}{index}"
    opts = [
        f"file={_escape(str(drive.path))}",
        f"format={drive.format}",
        "if=none",
        f"id={node}",
        # writeback cache, but flushes honoured: the guest's fsync reaches the host
        "cache=writeback",
    ]
    if drive.readonly:
        opts.append("readonly=on")
    if drive.bus is DiskBus.IDE:
        # an IDE hard disk cannot be read-only: read-only media (context, data disks) are
        # CD-ROMs there, as StratusLab attached its context (the guest sees srN)
        model = "ide-cd" if drive.readonly else "ide-hd"
        dev = [f"{model},drive={node}", f"bus=pide.{bus_index // 2}", f"unit={bus_index % 2}"]
    elif drive.bus is DiskBus.SCSI:
        dev = [f"scsi-hd,drive={node}", "bus=scsi0.0"]
    else:
        dev = [f"virtio-blk-pci,drive={node}"]
    dev.append(f"serial={drive.serial or node}")
    if drive.kind in (DriveKind.ROOT, DriveKind.BOOT_VOLUME):
        dev.append("bootindex=0")
    return ["-drive", ",".join(opts), "-device", ",".join(dev)]


def _controllers(drives: tuple[Drive, ...]) -> list[str]:
    buses = {d.bus for d in drives}
    argv = []
    if DiskBus.IDE in buses:
        # q35's own controller is AHCI, which appliances built for IDE (and Debian's cloud
        # kernel) lack a driver for; a PIIX3 IDE function is what they know (ata_piix),
        # and SeaBIOS boots from it
        argv += ["-device", "piix3-ide,id=pide"]
    if DiskBus.SCSI in buses:
        argv += ["-device", "virtio-scsi-pci,id=scsi0"]
    return argv


def _netdev(instance: Instance) -> str:
    forwards = [f"hostfwd=tcp:127.0.0.1:{instance.ssh_port}-:22"]
    forwards += [f"hostfwd=tcp:{p.address}:{p.host_port}-:{p.guest_port}" for p in instance.ports]
    return ",".join(["user", "id=net0", *forwards])


def _serial(instance: Instance) -> list[str]:
    if instance.console != "socket":
        return ["-serial", f"file:{_escape(str(instance.console_log))}"]
    # a socket that `imagekit console --attach` connects to; the chardev's logfile records
    # everything the guest writes whether or not someone is attached (qemu drops output to
    # an unconnected socket but still logs it), so --follow and --previous keep working.
    # Relative socket path as for QMP; logappend=off: a new boot starts a new log.
    return [
        "-chardev",
        f"socket,id=ser0,path={CONSOLE_SOCKET},server=on,wait=off,"
        f"logfile={_escape(str(instance.console_log))},logappend=off",
        "-serial",
        "chardev:ser0",
    ]


def _escape(value: str) -> str:
    # qemu option values: a comma is written as two commas
    return value.replace(",", ",,")


def qemu_argv(instance: Instance, *, qemu: str = QEMU, daemonize: bool = True) -> list[str]:
    """The complete qemu command line for ``instance``. Pure: no I/O, no probing.

    The QMP socket is given relative to the instance directory (qemu is started there),
    because its absolute path may be longer than a unix socket path can be.
    """
    if instance.accel not in (Accel.TCG, Accel.KVM):
        raise InputError(f"accelerator must be resolved to tcg or kvm, not {instance.accel!r}")
    m = instance.machine
    argv = [
        qemu,
        # the name tags the process, so leftovers can be found by instance ID
        "-name",
        f"imagekit-{instance.id},process=imagekit-{instance.id}",
        "-machine",
        "q35",
        # -accel tcg by default: /dev/kvm exists on some hosts where KVM guests hang;
        # kvm only when the probe actually booted a guest with it
        "-accel",
        "tcg" if instance.accel == "tcg" else "kvm",
        # max under TCG offers x86-64-v2+ features modern distributions require
        "-cpu",
        "host" if instance.accel == "kvm" else "max",
        "-smp",
        str(m.cpu),
        "-m",
        f"{m.ram_mib}M",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        *_serial(instance),
        "-qmp",
        f"unix:{instance.qmp_socket.name},server=on,wait=off",
        "-pidfile",
        str(instance.pid_file),
        # keep qemu (and QMP) up when the guest powers off: the state store then sees
        # status "shutdown" (a clean Done) rather than a vanished process
        "-no-shutdown",
        "-netdev",
        _netdev(instance),
        "-device",
        "virtio-net-pci,netdev=net0",
        "-device",
        "virtio-rng-pci",
        # empty PCIe root ports: q35's root complex cannot hot-plug, a root port can
        # (``imagekit volume attach`` plugs a volume into a free one)
        *(
            a
            for i, port in enumerate(HOTPLUG_PORTS)
            for a in ("-device", f"pcie-root-port,id={port},chassis={i + 1}")
        ),
        # a virtio-serial channel for the qemu guest agent (used, when the guest runs one,
        # to freeze file systems for a consistent snapshot); relative path as for QMP
        "-chardev",
        f"socket,id=qga0,path={QGA_SOCKET},server=on,wait=off",
        "-device",
        "virtio-serial-pci,id=vser0",
        "-device",
        f"virtserialport,bus=vser0.0,chardev=qga0,name={QGA_CHANNEL}",
    ]
    argv += _controllers(instance.drives)
    seen: dict[DiskBus, int] = {}
    for i, drive in enumerate(instance.drives):
        argv += _drive_args(i, drive, seen.get(drive.bus, 0))
        seen[drive.bus] = seen.get(drive.bus, 0) + 1
    if daemonize:
        argv.append("-daemonize")
    return argv


# --- accelerator ------------------------------------------------------------------------


def _probe_boot_sector() -> bytes:
    """A 512-byte boot sector writing ``IKOK`` to COM1 and halting."""
    code = bytes([0xBA, 0xF8, 0x03])  # mov dx, 0x3f8
    for ch in b"IKOK\n":
        code += bytes([0xB0, ch, 0xEE])  # mov al, ch; out dx, al
    code += bytes([0xFA, 0xF4, 0xEB, 0xFD])  # cli; hlt; jmp $-1
    return code.ljust(510, b"\0") + b"\x55\xaa"


def _probe_kernel() -> Path | None:
    """The host's own Linux kernel, if it can be read (Debian's are world-readable)."""
    for kernel in sorted(Path("/boot").glob("vmlinuz-*"), reverse=True):
        if os.access(kernel, os.R_OK):
            return kernel
    return None


def probe_accel(accel: str, *, qemu: str | None = None, timeout: float = 6.0) -> bool:
    """Boot a small guest with ``accel`` and see it print on the serial port.

    Existence of /dev/kvm is not enough: on some hosts KVM guests hang. Some of those hang
    only past a real-mode start (seen here: a boot sector, even one that enters long mode
    and touches 60 MiB, runs; Debian's kernel hangs while it decompresses itself). So the
    probe boots the host's kernel when it can read one and waits for its first line of
    ``start_kernel`` (under working KVM in well under a second), else a boot sector.
    """
    qemu = qemu or find_tool(QEMU)
    if accel == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    with tempfile.TemporaryDirectory(prefix="imagekit-probe-") as tmp:
        base = [
            qemu,
            "-accel",
            accel,
            "-machine",
            "pc",
            "-m",
            "128",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ]
        kernel = _probe_kernel()
        if kernel is not None:
            argv = [
                *base,
                "-kernel",
                str(kernel),
                "-append",
                "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1",
            ]
            sign = b"Linux version"
        else:
            img = Path(tmp) / "probe.img"
            img.write_bytes(_probe_boot_sector())
            argv = [*base, "-drive", f"file={img},format=raw,if=ide"]
            sign = b"IKOK"
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=child_env(),
        )
        try:
            assert proc.stdout is not None
            os.set_blocking(proc.stdout.fileno(), False)
            deadline = time.monotonic() + timeout
            seen = b""
            while time.monotonic() < deadline and proc.poll() is None:
                with contextlib.suppress(BlockingIOError, TypeError):
                    seen += proc.stdout.read(4096) or b""
                if sign in seen:
                    return True
                time.sleep(0.02)
            return False
        finally:
            proc.kill()
            proc.wait()


def _probe_key(qemu: str) -> str:
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = ""
    st = os.stat(qemu)
    return hashlib.sha256(f"{qemu}|{st.st_mtime_ns}|{st.st_size}|{boot_id}".encode()).hexdigest()


def resolve_accel(setting: str, *, qemu: str, state_dir: Path) -> str:
    """``tcg`` / ``kvm`` as given; ``auto``: kvm if a probe boots with it, else tcg.

    The probe's answer is remembered per qemu binary and host boot, under ``state_dir``.
    Raises EnvironmentProblem if ``kvm`` is required and does not work.
    """
    if setting == "tcg":
        return "tcg"
    cache = state_dir / "accel-probe.json"
    key = _probe_key(qemu)
    known: dict[str, bool] = {}
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(cache.read_text())
    if key not in known:
        known = {key: probe_accel("kvm", qemu=qemu)}
        state_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, json.dumps(known))
    kvm_ok = known[key]
    if setting == "kvm":
        if not kvm_ok:
            raise EnvironmentProblem(
                "accel=kvm requested but a probe guest does not run under KVM here",
                hint="use accel = tcg (or auto)",
            )
        return "kvm"
    return "kvm" if kvm_ok else "tcg"


# --- ports ------------------------------------------------------------------------------


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def is_port_free(address: str, port: int) -> bool:
    """Whether a TCP listener could bind ``address:port`` now."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def create_swap(out: Path, size_mib: int) -> None:
    """A raw swap disk, sparse, formatted with a swap signature labelled ``SWAP_LABEL``:
    the context tells the guest to enable the swap space with that label, so nothing in the
    guest has to format a disk it does not know."""
    with open(out, "wb") as fp:
        fp.truncate(size_mib << 20)
    run([find_tool("mkswap"), "-q", "-L", SWAP_LABEL, str(out)], timeout=60)


# --- disks ------------------------------------------------------------------------------


def create_overlay(base: Path, base_format: str, out: Path) -> None:
    """A qcow2 copy-on-write overlay over ``base`` (which stays untouched)."""
    run(
        [
            find_tool(QEMU_IMG),
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            str(base.resolve()),
            "-F",
            base_format,
            str(out),
        ],
        timeout=60,
    )


def create_blank(out: Path, size_mib: int) -> None:
    run([find_tool(QEMU_IMG), "create", "-q", "-f", "qcow2", str(out), f"{size_mib}M"], timeout=60)


# --- starting ---------------------------------------------------------------------------


def start(instance: Instance, *, qemu: str, timeout: float = 60.0) -> int:
    """Start qemu daemonized for ``instance``; return its pid.

    Raises CommandError (with qemu's own message) if qemu refuses to start.
    """
    argv = qemu_argv(instance, qemu=qemu)
    try:
        # cwd: the QMP socket path in argv is relative to the instance directory
        run(argv, cwd=instance.directory, timeout=timeout)
    except CommandError:
        raise
    for _ in range(100):
        with contextlib.suppress(OSError, ValueError):
            return int(instance.pid_file.read_text().strip())
        time.sleep(0.02)
    raise EnvironmentProblem(f"qemu started but wrote no pid file {instance.pid_file}")
