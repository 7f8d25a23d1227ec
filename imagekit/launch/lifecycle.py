"""Instance lifecycle after launch: stop, start, reboot, the console, root disks.

Root disks (``overlay.qcow2`` in the instance directory, the drive of kind ``root``):

* **ephemeral** (the default): a copy-on-write overlay over the digest-keyed cached image.
  Every start replaces it with a fresh overlay (same virtual size), so each boot begins from
  the verified image; kill removes it. Changes live until the next start or kill (a stopped
  ephemeral instance can still be snapshotted).
* **persistent** (``launch --persistent``): the overlay is made standalone right after it is
  created (``qemu-img rebase -b ""`` copies in what the cached image provides; qcow2 keeps
  it sparse). It no longer refers to the cache, so ``cache prune`` or a wiped cache cannot
  break it; it keeps every change across stop, start and CLI restarts, and kill removes it
  (a cloud root disk with delete-on-termination; keep data with ``imagekit snapshot``).
* **boot volume** (``launch --boot-volume NAME``, the drive of kind ``boot-volume``): a
  volume made by ``create_boot_volume`` is the root disk itself. It keeps every change
  across stop and start like a persistent root, kill keeps it (it is released, not
  deleted), and the next launch from it finds what the last one wrote. One VM at a time.

``--disk-size`` grows the root disk's virtual size (``qemu-img resize``); images built by
imagekit grow their root file system on first boot (cloud-init growpart).

States added here: Running --stop--> Stopped --start--> Boot -> Running. Start also accepts
Done (the guest powered itself off) and Failed (qemu died: "qemu exited unexpectedly (see
console log ...)") while the instance's disks are still there: that is the recovery path.
Every state change is written under the instance lock, so it survives the CLI exiting.

Bootable volumes (``create_boot_volume``): a named volume holding a standalone qcow2 copy of
a verified image, registered only once complete; it outlives every instance.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._files import atomic_write
from .._run import find_tool, run
from ..errors import EnvironmentProblem, ImagekitError, InputError, InvalidState
from ..fetch.cache import ImageCache
from ..settings import Settings
from . import qemu as q
from ._qmp import QMP, QMPError
from .disks import disk_info, prepare_root_disk, qemu_format
from .images import fetch_machine_image
from .instances import (
    Drive,
    DriveKind,
    Instance,
    InstanceStore,
    State,
    is_our_qemu,
    read_pid,
)
from .volumes import Volume, VolumeStore, check_name

STOP_TIMEOUT = 60.0  # seconds a guest gets to power off after the ACPI power button
START_TIMEOUT = 60.0  # seconds until qemu answers QMP with a running guest


class StopTimeout(EnvironmentProblem):
    """The guest did not power off after the ACPI power button within the timeout."""


# --- root disks -------------------------------------------------------------------------


def root_drive(instance: Instance) -> Drive:
    """The disk the instance boots from: its overlay or its boot volume. Raises
    InvalidState if it has none yet."""
    for drive in instance.drives:
        if drive.kind in (DriveKind.ROOT, DriveKind.BOOT_VOLUME):
            return drive
    raise InvalidState(f"instance {instance.id} has no root disk (launch did not get that far)")


def images_in_use(settings: Settings) -> set[Path]:
    """Cached images some instance still needs (pass as ``in_use`` to ``ImageCache.prune``):
    the base of every ephemeral instance whose disks exist (Stopped ones too: start makes a
    new overlay over it) and every read-only disk. Persistent root disks stand alone."""
    used: set[Path] = set()
    store = InstanceStore(settings.state_dir)
    for instance_id in store.ids():
        with contextlib.suppress(ImagekitError):
            inst = store.load(instance_id)
            if not _has_disks(inst):
                continue
            if not inst.persistent and inst.base_image != Path():
                used.add(inst.base_image)
            used.update(d.path for d in inst.drives if d.kind is DriveKind.READONLY)
    return used


def _has_disks(inst: Instance) -> bool:
    """False once kill (or a failed launch) removed the instance's own files."""
    owned = [d for d in inst.drives if d.kind in (DriveKind.ROOT, DriveKind.CONTEXT)]
    return bool(owned) and all(d.path.exists() for d in owned)


# --- QMP helpers ------------------------------------------------------------------------


def _status(qmp: QMP) -> str:
    status: str = qmp.command("query-status")["status"]
    return status


def guest_agent_connected(instance: Instance) -> bool:
    """True if a guest agent has the ``org.qemu.guest_agent.0`` virtio-serial port open."""
    try:
        with QMP(instance.qmp_socket, timeout=3) as qmp:
            for chardev in qmp.command("query-chardev"):
                if chardev.get("label") == "qga0":
                    return bool(chardev.get("frontend-open"))
    except QMPError:
        return False
    return False


def _wait_powered_off(qmp: QMP, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if _status(qmp) == "shutdown":
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def _live_pid(store: InstanceStore, inst: Instance) -> int:
    """The instance's qemu pid; if qemu is gone, record Failed and raise InvalidState."""
    pid = inst.pid or read_pid(inst.pid_file)
    if not is_our_qemu(pid, inst.directory):
        failed = store.transition(
            inst, State.FAILED, f"qemu exited unexpectedly (see console log {inst.console_log})"
        )
        raise InvalidState(
            f"instance {inst.id} is Failed: {failed.reason}", hint=f"imagekit start {inst.id}"
        )
    assert pid is not None
    return pid


def power_off(store: InstanceStore, inst: Instance, *, timeout: float, force: bool) -> str:
    """ACPI power button, wait for the guest to power off, then end qemu. Returns "clean"
    or "forced". Caller holds the instance lock. Raises StopTimeout (qemu left running) if
    the guest ignores the button and ``force`` is false."""
    _live_pid(store, inst)
    how = "clean"
    try:
        with QMP(inst.qmp_socket, timeout=10) as qmp:
            if _status(qmp) != "shutdown":
                qmp.command("system_powerdown")
                if not _wait_powered_off(qmp, timeout):
                    if not force:
                        raise StopTimeout(
                            f"instance {inst.id}: the guest did not power off within "
                            f"{timeout:.0f}s of the ACPI power button",
                            hint=f"imagekit stop --force {inst.id} (like pulling the plug)",
                        )
                    how = "forced"
    except QMPError:
        if not force:
            raise
        how = "forced"
    store.stop(inst)  # QMP quit, then SIGTERM, then SIGKILL
    if is_our_qemu(inst.pid or read_pid(inst.pid_file), inst.directory):
        raise EnvironmentProblem(f"instance {inst.id}: qemu does not exit")
    for p in (inst.qmp_socket, inst.pid_file, inst.directory / q.QGA_SOCKET, inst.console_socket):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return how


# --- stop / start / reboot --------------------------------------------------------------


def _load_live(settings: Settings, name: str) -> tuple[InstanceStore, Instance]:
    store = InstanceStore(settings.state_dir)
    inst = store.refresh(store.find(name))
    return store, inst


def stop(
    settings: Settings, name: str, *, timeout: float = STOP_TIMEOUT, force: bool = False
) -> Instance:
    """Shut the guest down cleanly (ACPI power button through QMP ``system_powerdown``),
    wait up to ``timeout`` seconds, end qemu; the instance becomes Stopped with its disks
    kept. ``force``: when the guest does not power off in time, stop qemu anyway.

    Raises NotFound, Ambiguous, InvalidState (not running: already Stopped, Done, Failed,
    still launching), StopTimeout (the guest ignored the button; it keeps running).
    """
    store, inst = _load_live(settings, name)
    with store.lock(inst.id):
        inst = store.load(inst.id)
        if inst.state is State.STOPPED:
            raise InvalidState(
                f"instance {inst.id} is already Stopped", hint=f"imagekit start {inst.id}"
            )
        if inst.state not in (State.RUNNING, State.BOOT):
            raise InvalidState(f"instance {inst.id} is {inst.state}, not Running")
        how = power_off(store, inst, timeout=timeout, force=force)
        reason = "stopped" if how == "clean" else "stopped (forced off)"
        return store.transition(
            store.load(inst.id), State.STOPPED, reason, pid=None, finished=datetime.now(UTC)
        )


def _check_startable(inst: Instance) -> None:
    if inst.state in (State.RUNNING, State.BOOT):
        raise InvalidState(f"instance {inst.id} is already {inst.state}")
    if inst.state in (State.PENDING, State.PROLOG):
        raise InvalidState(f"instance {inst.id} is still being launched ({inst.state})")
    if inst.state is not State.STOPPED and not _has_disks(inst):
        boot_volume = [d.identifier for d in inst.drives if d.kind is DriveKind.BOOT_VOLUME]
        again = f"--boot-volume {boot_volume[0]}" if boot_volume else inst.image_id
        raise InvalidState(
            f"instance {inst.id} is {inst.state} ({inst.reason or 'no reason'}) and its disks "
            "are gone",
            hint=f"launch a new one: imagekit launch {again}",
        )


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _check_disks(inst: Instance, *, fresh_root: bool) -> None:
    for drive in inst.drives:
        if drive.kind is DriveKind.ROOT and fresh_root:
            if not inst.base_image.is_file():
                raise EnvironmentProblem(
                    f"instance {inst.id}: its cached image {inst.base_image} is gone "
                    "(cache pruned?)",
                    hint=f"launch it again: imagekit launch {inst.image_id}",
                )
            continue
        if not drive.path.exists():
            raise EnvironmentProblem(f"instance {inst.id}: {drive.kind} disk {drive.path} is gone")


def boot(
    settings: Settings,
    store: InstanceStore,
    inst: Instance,
    *,
    fresh_root: bool,
) -> Instance:
    """Start qemu again on the saved instance (the command line is rebuilt from it).
    Caller holds the lock and checked the state. Returns the instance in Boot."""
    qemu = (
        inst.qemu
        if os.path.isabs(inst.qemu) and os.access(inst.qemu, os.X_OK)
        else find_tool(q.QEMU)
    )
    find_tool(q.QEMU_IMG)
    _check_disks(inst, fresh_root=fresh_root)
    volumes = VolumeStore(settings.state_dir)
    for name in inst.volumes:
        vol = volumes.get(name)
        if vol.attached_to not in (None, inst.id):
            raise InvalidState(f"volume {name} is attached to {vol.attached_to}")
    port = inst.ssh_port if _port_free(inst.ssh_port) else q.free_loopback_port()
    ports = []
    for fwd in inst.ports:
        if q.is_port_free(fwd.address, fwd.host_port):
            ports.append(fwd)
        elif fwd.fixed:
            raise InvalidState(
                f"host port {fwd.address}:{fwd.host_port} (for guest port "
                f"{fwd.guest_port} of {inst.label}) is in use"
            )
        else:
            ports.append(dataclasses.replace(fwd, host_port=q.free_loopback_port()))
    # --- side effects from here
    for name in inst.volumes:
        volumes.acquire(name, inst.id)
    root = root_drive(inst)
    if fresh_root:
        size = int(disk_info(root.path)["virtual-size"]) if root.path.exists() else None
        fresh = root.path.with_name(f".{root.path.name}.new")
        fresh.unlink(missing_ok=True)
        q.create_overlay(inst.base_image, inst.base_format, fresh)
        base_size = int(disk_info(fresh)["virtual-size"])
        if size and size > base_size:
            prepare_root_disk(fresh, persistent=False, size_mib=-(-size // (1 << 20)))
        os.replace(fresh, root.path)
    if inst.console_log.exists():
        # qemu truncates the log when it starts: keep the previous boot's
        os.replace(inst.console_log, inst.previous_console_log)
    for p in (inst.qmp_socket, inst.pid_file, inst.directory / q.QGA_SOCKET, inst.console_socket):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    inst = store.transition(
        inst,
        State.BOOT,
        "",
        pid=None,
        ssh_port=port,
        qemu=qemu,
        ports=tuple(ports),
        started=datetime.now(UTC),
        finished=None,
    )
    try:
        pid = q.start(inst, qemu=qemu)
    except ImagekitError as e:
        store.transition(inst, State.FAILED, f"qemu did not start: {e}")
        raise
    return store.save(dataclasses.replace(inst, pid=pid))


def wait_running(store: InstanceStore, inst: Instance, timeout: float) -> Instance:
    inst = store.wait(inst, {State.RUNNING}, timeout=timeout)
    if inst.state is not State.RUNNING:
        raise EnvironmentProblem(
            f"instance {inst.id} is {inst.state}: {inst.reason}", hint=f"imagekit console {inst.id}"
        )
    return inst


def start(settings: Settings, name: str, *, timeout: float = START_TIMEOUT) -> Instance:
    """Boot a Stopped instance again on the same disks (an ephemeral one on a fresh overlay
    over the cached image); Done and Failed instances whose disks remain start too.

    Raises NotFound, Ambiguous, InvalidState (already running, still launching, disks gone,
    a volume held by another instance), EnvironmentProblem (cached image pruned, qemu
    refused to start or died while booting), ToolMissing.
    """
    store, inst = _load_live(settings, name)
    with store.lock(inst.id):
        inst = store.load(inst.id)
        _check_startable(inst)
        inst = boot(settings, store, inst, fresh_root=not inst.persistent)
    return wait_running(store, inst, timeout)


def reboot(
    settings: Settings, name: str, *, hard: bool = False, timeout: float = STOP_TIMEOUT
) -> Instance:
    """Reboot a running instance inside the same qemu process (disks untouched).

    ``hard``: QMP ``system_reset`` (the reset button: no shutdown, unsynced data is lost).
    Otherwise: the ACPI power button, wait for the guest to power off (qemu stays, it runs
    with ``-no-shutdown``), then ``system_reset`` and ``cont``: a clean reboot that works
    with any guest that honours the power button. Raises InvalidState (not Running),
    StopTimeout (the guest ignored the button: nothing changed; try ``hard``).
    """
    store, inst = _load_live(settings, name)
    with store.lock(inst.id):
        inst = store.load(inst.id)
        if inst.state not in (State.RUNNING, State.BOOT):
            raise InvalidState(f"instance {inst.id} is {inst.state}, not Running")
        _live_pid(store, inst)
        with QMP(inst.qmp_socket, timeout=10) as qmp:
            if not hard and _status(qmp) != "shutdown":
                qmp.command("system_powerdown")
                if not _wait_powered_off(qmp, timeout):
                    raise StopTimeout(
                        f"instance {inst.id}: the guest did not power off within "
                        f"{timeout:.0f}s of the ACPI power button",
                        hint=f"imagekit reboot --hard {inst.id}",
                    )
            qmp.command("system_reset")
            if _status(qmp) != "running":
                # after a power-off qemu (-no-shutdown) waits in "prelaunch" once reset
                qmp.command("cont")
        reason = "rebooted (reset)" if hard else "rebooted"
        return store.transition(inst, State.RUNNING, reason)


@contextlib.contextmanager
def paused(inst: Instance) -> Iterator[None]:
    """Hold the guest's vCPUs (QMP ``stop`` also flushes every drive, qcow2 metadata
    included) and resume it afterwards."""
    with QMP(inst.qmp_socket, timeout=30) as qmp:
        was_running = _status(qmp) == "running"
        if was_running:
            qmp.command("stop")
        try:
            yield
        finally:
            if was_running:
                qmp.command("cont")


# --- bootable volumes -------------------------------------------------------------------


def create_boot_volume(
    settings: Settings,
    name: str,
    reference: str,
    *,
    size_mib: int | None = None,
    client: Any = None,
    progress: Any = None,
    on_state: Any = None,
) -> Volume:
    """``imagekit volume create --from-image REF --name NAME``: a persistent volume holding
    a standalone qcow2 copy of a verified image (resolved, verified and policy-checked as
    ``launch`` does, fetched through the digest-keyed cache), grown to ``size_mib``.

    ``on_state(text)`` hears "Downloading" then "Available". The volume appears in the
    registry only when complete (atomic), so nobody can attach a half-copied disk.
    Raises InputError (bad or taken name, a data disk, shrinking), NotFound, the
    VerificationError family, NetworkError, EnvironmentProblem.
    """
    check_name(name)
    volumes = VolumeStore(settings.state_dir)
    if (volumes.root / f"{name}.json").exists():
        raise InputError(f"volume {name!r} already exists")
    qemu_img = find_tool(q.QEMU_IMG)
    ImageCache(settings.cache_dir).ensure_writable()
    volumes.root.mkdir(parents=True, exist_ok=True)
    notify = on_state or (lambda _s: None)

    notify("Downloading")
    verified, cached = fetch_machine_image(
        settings, reference, purpose="a machine image", client=client, progress=progress
    )
    entry = verified.entry
    fmt = qemu_format(entry)
    path = volumes.root / f"{name}.qcow2"
    tmp = volumes.root / f".{name}.qcow2.{os.getpid()}.part"
    try:
        run(
            [qemu_img, "convert", "-O", "qcow2", "-f", fmt, str(cached), str(tmp)], timeout=6 * 3600
        )
        if size_mib is not None:
            prepare_root_disk(tmp, persistent=False, size_mib=size_mib)
        size_gb = max(1, -(-int(disk_info(tmp)["virtual-size"]) // (1 << 30)))
        with volumes._lock():
            if (volumes.root / f"{name}.json").exists():
                raise InputError(f"volume {name!r} already exists")
            os.replace(tmp, path)
            volume = Volume(name, path, size_gb, datetime.now(UTC).isoformat(timespec="seconds"))
            volumes._write(volume)
            # what it was made from (beside the registry record, which keeps its own keys)
            atomic_write(
                volumes.root / f"{name}.origin",
                json.dumps({"image_id": entry.identifier, "bootable": True}) + "\n",
            )
    finally:
        tmp.unlink(missing_ok=True)
    notify("Available")
    return volume
