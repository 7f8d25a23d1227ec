"""Instances: a frozen description of one VM plus its persisted state.

Each instance has a directory ``state_dir/instances/<id>/`` holding ``instance.json``
(written atomically), the overlay, the context ISO, volatile and swap disks, the QMP socket,
the pid file, the serial console's socket (``console --attach``) and its log. The state
outlives the CLI: ``refresh`` re-derives it from the qemu process (pid + QMP) whenever
someone looks. An instance may have a name, unique among the recorded instances and
accepted wherever its ID is; ``forget`` (``imagekit rm``) deletes the record.

States: Pending (recorded, nothing done) -> Prolog (fetch, verify, create disks) -> Boot
(qemu started) -> Running (qemu answers QMP, guest running) -> Done (the guest powered off,
or the user killed it) | Failed (with a reason).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import os
import re
import secrets
import shutil
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._files import atomic_write, locked
from ..errors import Ambiguous, ImagekitError, InputError, InvalidState, NotFound
from ._qmp import QMP, QMPError
from .machines import MachineType


class State(enum.StrEnum):
    PENDING = "Pending"
    PROLOG = "Prolog"
    BOOT = "Boot"
    RUNNING = "Running"
    DONE = "Done"
    FAILED = "Failed"
    STOPPED = "Stopped"  # guest shut down, disks kept: ``imagekit start`` boots it again

    @property
    def is_final(self) -> bool:
        return self in (State.DONE, State.FAILED)


class DriveKind(enum.StrEnum):
    ROOT = "root"  # copy-on-write overlay over the cached, verified image
    CONTEXT = "context"  # contextualization ISO
    READONLY = "readonly"  # a verified data disk from the marketplace, read-only
    VOLATILE = "volatile"  # fresh disk, deleted on kill
    SWAP = "swap"  # fresh disk sized by the machine type's swap, deleted on kill
    VOLUME = "volume"  # persistent volume under state_dir/volumes
    BOOT_VOLUME = "boot-volume"  # a bootable volume as the root disk: kill keeps it


class DiskBus(enum.StrEnum):
    """How a disk reaches the guest: the entry's ``slterms:disks-bus`` (default virtio)."""

    VIRTIO = "virtio"  # virtio-blk-pci: /dev/vdX
    SCSI = "scsi"  # scsi-hd on a virtio-scsi controller: /dev/sdX
    IDE = "ide"  # ide-hd on a PIIX IDE controller: /dev/sdX (ata_piix), at most 4 disks


@dataclasses.dataclass(frozen=True)
class PortForward:
    """A TCP port of the host forwarded to a port of the guest (user-mode networking)."""

    host_port: int
    guest_port: int
    address: str = "127.0.0.1"  # where the host side listens
    source: str = "option"  # "option" (--port) or "entry" (the entry's inbound-port)
    fixed: bool = True  # the user chose host_port: a restart must get it or refuse

    def __post_init__(self) -> None:
        for what, port in (("host", self.host_port), ("guest", self.guest_port)):
            if not 0 < port < 65536:
                raise InputError(f"{what} port {port}: must be 1..65535")

    def __str__(self) -> str:
        return f"{self.address}:{self.host_port}->{self.guest_port}/tcp"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PortForward:
        return cls(
            host_port=int(d["host_port"]),
            guest_port=int(d["guest_port"]),
            address=str(d.get("address", "127.0.0.1")),
            source=str(d.get("source", "option")),
            fixed=bool(d.get("fixed", True)),
        )


_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def check_instance_name(name: str) -> str:
    """An instance name: a host-name label (lower-case letters, digits, inner hyphens, at
    most 63 characters), not shaped like an instance ID (``vm-`` + 8 hex digits).

    Raises InputError.
    """
    if not _NAME.fullmatch(name):
        raise InputError(
            f"instance name {name!r}: use lower-case letters, digits and inner "
            "hyphens, at most 63 characters"
        )
    if re.fullmatch(r"vm-[0-9a-f]{8}", name):
        raise InputError(f"instance name {name!r} looks like an instance ID")
    return name


@dataclasses.dataclass(frozen=True)
class Drive:
    kind: DriveKind
    path: Path
    format: str  # qemu format name: qcow2, raw
    readonly: bool = False
    serial: str = ""  # visible in the guest as /sys/block/vdX/serial
    identifier: str = ""  # marketplace ID (root, readonly) or volume name
    size_gb: int = 0  # volatile disks
    bus: DiskBus = DiskBus.VIRTIO

    @property
    def owned(self) -> bool:
        """Files the instance created and removes when killed."""
        return self.kind in (DriveKind.ROOT, DriveKind.CONTEXT, DriveKind.VOLATILE, DriveKind.SWAP)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["kind"] = str(self.kind)
        d["path"] = str(self.path)
        d["bus"] = str(self.bus)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Drive:
        return cls(
            kind=DriveKind(d["kind"]),
            path=Path(d["path"]),
            format=d["format"],
            readonly=bool(d.get("readonly", False)),
            serial=d.get("serial", ""),
            identifier=d.get("identifier", ""),
            size_gb=int(d.get("size_gb", 0)),
            bus=DiskBus(d.get("bus", "virtio")),
        )


@dataclasses.dataclass(frozen=True)
class Instance:
    """Everything needed to build qemu's command line, plus state. Immutable: a change of
    state is a new Instance (``dataclasses.replace``) saved by the store."""

    id: str
    directory: Path
    image_id: str
    base_image: Path  # the cached verified image the overlay is backed by
    base_format: str
    machine: MachineType
    accel: str
    ssh_port: int
    drives: tuple[Drive, ...]
    context_scheme: str = "nocloud"
    endorser: str = ""
    state: State = State.PENDING
    reason: str = ""
    pid: int | None = None
    created: datetime = dataclasses.field(default_factory=lambda: datetime.now(UTC))
    started: datetime | None = None
    finished: datetime | None = None
    qemu: str = "qemu-system-x86_64"
    persistent: bool = False  # root disk is a standalone copy kept across stop/start
    name: str = ""  # the user's name for it (unique), or ""
    ports: tuple[PortForward, ...] = ()  # forwarded besides ssh
    console: str = "file"  # "socket": console.sock can be attached (and console.log kept)

    @property
    def label(self) -> str:
        """The name if it has one, else the ID: what messages call it."""
        return self.name or self.id

    @property
    def console_socket(self) -> Path:
        return self.directory / "console.sock"

    @property
    def context_iso(self) -> Path | None:
        return next((d.path for d in self.drives if d.kind is DriveKind.CONTEXT), None)

    @property
    def qmp_socket(self) -> Path:
        return self.directory / "qmp.sock"

    @property
    def pid_file(self) -> Path:
        return self.directory / "qemu.pid"

    @property
    def console_log(self) -> Path:
        return self.directory / "console.log"

    @property
    def previous_console_log(self) -> Path:
        """The log of the boot before the last start (kept when qemu starts again)."""
        return self.directory / "console.log.1"

    @property
    def volumes(self) -> list[str]:
        """Names of the volumes the instance holds (its boot volume too)."""
        return [
            d.identifier for d in self.drives if d.kind in (DriveKind.VOLUME, DriveKind.BOOT_VOLUME)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "directory": str(self.directory),
            "image_id": self.image_id,
            "base_image": str(self.base_image),
            "base_format": self.base_format,
            "machine": self.machine.to_dict(),
            "accel": self.accel,
            "ssh_port": self.ssh_port,
            "drives": [d.to_dict() for d in self.drives],
            "context_scheme": self.context_scheme,
            "endorser": self.endorser,
            "state": str(self.state),
            "reason": self.reason,
            "pid": self.pid,
            "created": self.created.isoformat(),
            "started": self.started.isoformat() if self.started else None,
            "finished": self.finished.isoformat() if self.finished else None,
            "qemu": self.qemu,
            "persistent": self.persistent,
            "name": self.name,
            "ports": [p.to_dict() for p in self.ports],
            "console": self.console,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Instance:
        def dt(v: str | None) -> datetime | None:
            return datetime.fromisoformat(v) if v else None

        return cls(
            id=d["id"],
            directory=Path(d["directory"]),
            image_id=d["image_id"],
            base_image=Path(d["base_image"]),
            base_format=d["base_format"],
            machine=MachineType.from_dict(d["machine"]),
            accel=d["accel"],
            ssh_port=int(d["ssh_port"]),
            drives=tuple(Drive.from_dict(x) for x in d["drives"]),
            context_scheme=d.get("context_scheme", "nocloud"),
            endorser=d.get("endorser", ""),
            state=State(d["state"]),
            reason=d.get("reason", ""),
            pid=d.get("pid"),
            created=dt(d["created"]) or datetime.now(UTC),
            started=dt(d.get("started")),
            finished=dt(d.get("finished")),
            qemu=d.get("qemu", "qemu-system-x86_64"),
            persistent=bool(d.get("persistent", False)),
            name=d.get("name", ""),
            ports=tuple(PortForward.from_dict(p) for p in d.get("ports", ())),
            console=d.get("console", "file"),
        )

    def uptime(self, now: datetime | None = None) -> float | None:
        if self.started is None:
            return None
        end = self.finished or now or datetime.now(UTC)
        return max(0.0, (end - self.started).total_seconds())


def new_instance_id() -> str:
    return "vm-" + secrets.token_hex(4)


# --- process liveness -------------------------------------------------------------------


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def is_our_qemu(pid: int | None, directory: Path) -> bool:
    """True if ``pid`` is alive and is the qemu of this instance (pid reuse is checked by
    looking for the instance directory in its command line)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return str(directory).encode() in cmdline or b"imagekit-" + directory.name.encode() in cmdline


# --- the store --------------------------------------------------------------------------


#: An instance directory holds its context ISO (user data, often secrets): owner only.
PRIVATE_DIR = 0o700


class InstanceStore:
    """Instances under ``state_dir/instances``; every write is atomic and under a lock."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "instances"

    def directory(self, instance_id: str) -> Path:
        return self.root / instance_id

    @contextlib.contextmanager
    def lock(self, instance_id: str) -> Iterator[None]:
        d = self.directory(instance_id)
        d.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)  # before locked() makes it 0755
        with locked(d / ".lock"):
            yield

    def save(self, instance: Instance) -> Instance:
        instance.directory.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        atomic_write(
            instance.directory / "instance.json",
            json.dumps(instance.to_dict(), indent=2, sort_keys=True) + "\n",
        )
        return instance

    def load(self, instance_id: str) -> Instance:
        path = self.directory(instance_id) / "instance.json"
        try:
            return Instance.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise NotFound(f"no instance {instance_id!r}") from None
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"instance {instance_id}: corrupt state file {path}: {e}") from e

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "instance.json").is_file())

    def names(self) -> dict[str, str]:
        """Instance name -> ID, for the instances that have a name."""
        out = {}
        for i in self.ids():
            with contextlib.suppress(InputError, NotFound):
                inst = self.load(i)
                if inst.name:
                    out[inst.name] = inst.id
        return out

    def check_name_free(self, name: str) -> None:
        """Raise InvalidState if an instance (of any state, until ``rm``) has ``name``."""
        check_instance_name(name)
        taken = self.names().get(name)
        if taken is not None:
            raise InvalidState(
                f"an instance is already named {name} ({taken})",
                hint=f"pick another name, or forget it: imagekit rm {name}",
            )

    def find(self, name: str) -> Instance:
        """By name, full ID or unique ID prefix (with or without the ``vm-``)."""
        ids = self.ids()
        if name in ids:
            return self.load(name)
        named = self.names().get(name)
        if named is not None:
            return self.load(named)
        matches = [i for i in ids if i.startswith(name) or i.removeprefix("vm-").startswith(name)]
        if not matches:
            raise NotFound(f"no instance {name!r}", hint="see: imagekit instances")
        if len(matches) > 1:
            raise Ambiguous(f"{name!r} matches several instances: {', '.join(matches)}")
        return self.load(matches[0])

    def all(self) -> list[Instance]:
        return [self.refresh(self.load(i)) for i in self.ids()]

    def transition(
        self, instance: Instance, state: State, reason: str = "", **changes: Any
    ) -> Instance:
        now = datetime.now(UTC)
        if state.is_final and instance.finished is None:
            changes.setdefault("finished", now)
        return self.save(dataclasses.replace(instance, state=state, reason=reason, **changes))

    def is_alive(self, instance_id: str) -> bool:
        """False for a Done or Failed instance, and for a booting or running one whose qemu
        is gone whatever its record says (a holder that died holds nothing); a Stopped one
        keeps its disks. Read-only and lock-free, so callers holding an instance's lock
        (kill, start) can ask."""
        try:
            inst = self.load(instance_id)
        except ImagekitError:
            return False
        if inst.state in (State.BOOT, State.RUNNING):
            return is_our_qemu(inst.pid or read_pid(inst.pid_file), inst.directory)
        return not inst.state.is_final

    def refresh(self, instance: Instance) -> Instance:
        """Re-derive the state from the qemu process (pid + QMP) and persist changes."""
        if instance.state not in (State.BOOT, State.RUNNING):
            return instance
        with self.lock(instance.id):
            instance = self.load(instance.id)
            if instance.state not in (State.BOOT, State.RUNNING):
                return instance
            pid = instance.pid or read_pid(instance.pid_file)
            if not is_our_qemu(pid, instance.directory):
                return self.transition(
                    instance,
                    State.FAILED,
                    f"qemu exited unexpectedly (see console log {instance.console_log})",
                )
            try:
                with QMP(instance.qmp_socket, timeout=3) as q:
                    status = q.command("query-status")["status"]
                    if status in ("shutdown", "guest-panicked"):
                        # qemu runs with -no-shutdown: the guest powered off (or panicked)
                        # and qemu waits; end it and record the outcome.
                        with contextlib.suppress(QMPError):
                            q.command("quit")
                        _wait_gone(pid, instance.directory, 5)
                        if status == "shutdown":
                            return self.transition(instance, State.DONE, "guest powered off")
                        return self.transition(instance, State.FAILED, "guest panicked")
            except QMPError as e:
                if instance.state is State.BOOT:
                    return instance
                return self.transition(instance, State.FAILED, f"qemu not answering: {e}")
            if instance.state is State.BOOT:
                return self.transition(instance, State.RUNNING, pid=pid)
            return instance

    def wait(self, instance: Instance, states: set[State], *, timeout: float) -> Instance:
        deadline = time.monotonic() + timeout
        while True:
            instance = self.refresh(self.load(instance.id))
            if instance.state in states or instance.state.is_final:
                return instance
            if time.monotonic() > deadline:
                raise InvalidState(
                    f"instance {instance.id} still {instance.state} after {timeout:.0f}s"
                )
            time.sleep(0.2)

    def stop(self, instance: Instance, *, timeout: float = 10.0) -> None:
        """End the qemu process: QMP quit, then SIGTERM, then SIGKILL."""
        pid = instance.pid or read_pid(instance.pid_file)
        if not is_our_qemu(pid, instance.directory):
            return
        assert pid is not None
        with contextlib.suppress(QMPError), QMP(instance.qmp_socket, timeout=2) as q:
            q.command("quit")
        if _wait_gone(pid, instance.directory, timeout / 2):
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if _wait_gone(pid, instance.directory, timeout / 4):
                return

    def remove_owned_files(self, instance: Instance) -> list[Path]:
        """Delete the overlay, context ISO, volatile and swap disks, socket and pid file."""
        removed = []
        for drive in instance.drives:
            if drive.owned and drive.path.exists():
                drive.path.unlink()
                removed.append(drive.path)
        for p in (instance.qmp_socket, instance.pid_file, instance.console_socket):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        return removed

    def forget(self, instance: Instance) -> None:
        """Delete the record of a Done or Failed instance and everything in its directory
        (console logs too); its volumes, held elsewhere, are not touched.

        Raises InvalidState if the instance is not Done or Failed (or its qemu still runs).
        """
        self.refresh(self.load(instance.id))
        with self.lock(instance.id):
            inst = self.load(instance.id)
            if not inst.state.is_final or is_our_qemu(
                inst.pid or read_pid(inst.pid_file), inst.directory
            ):
                raise InvalidState(
                    f"instance {inst.label} is {inst.state}: kill it first",
                    hint=f"imagekit kill --rm {inst.label}",
                )
            # the record goes first: a crash half-way leaves no record pointing at nothing
            (inst.directory / "instance.json").unlink()
        shutil.rmtree(inst.directory, ignore_errors=True)


def _wait_gone(pid: int | None, directory: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_our_qemu(pid, directory):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
