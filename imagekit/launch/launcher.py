"""Launch an appliance by its Marketplace ID (or endorser:tag, or a signed entry file) in
a real qemu VM.

Two phases, so that a refusal never leaves anything behind:

1. ``plan_launch`` (``plan_launches`` for ``--count``): check EVERY precondition without side
   effects — the names are free, the host ports asked for are free, the trust store and the
   policy load, every reference (image and read-only disks) resolves to a verified,
   acceptable entry (a local entry file through the same checks), its hardware terms are
   ones qemu can give (hypervisor, disk bus), the context renders, volumes exist and are
   free (a boot volume too), ``--disk-size`` does not shrink the image, qemu, qemu-img (and
   mkswap) are installed, the cache directory is writable with room for the downloads,
   loopback ports are free, the accelerator is known (the probe runs last, only if
   everything else passed).
2. ``execute``: record the instance, fetch and verify the bytes into the cache (or hit it),
   create the overlay (or take hold of the boot volume instead), context ISO, volatile and
   swap disks, start qemu. A failure there marks the instance Failed with the reason and
   removes what it created (a boot volume is only released); ``execute_all`` also kills
   and forgets the instances of the same ``--count`` it had started.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import stat
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._run import find_tool
from ..context import ContextFile, ContextSpec, make_context_iso, render_context
from ..errors import (
    CommandError,
    EnvironmentProblem,
    ImagekitError,
    InputError,
    InvalidState,
    SizeMismatch,
)
from ..fetch.cache import ImageCache
from ..fetch.download import check_locations
from ..policy.rules import Policy
from ..progress import Progress
from ..settings import Settings
from ..signing.verify import VerifiedEntry
from . import qemu as q
from ._qmp import QMP, QMPError
from .disks import disk_info, prepare_root_disk, qemu_format
from .images import fetch_verified, make_resolver
from .instances import (
    DiskBus,
    Drive,
    DriveKind,
    Instance,
    InstanceStore,
    PortForward,
    State,
    new_instance_id,
)
from .machines import MachineType
from .ports import PortRequest, check_ports, forwards, free_port
from .terms import can_use_swap, check_hypervisor, disk_bus
from .volumes import VolumeStore

log = logging.getLogger(__name__)


# qemu-img format names for dcterms:format values
@dataclasses.dataclass(frozen=True)
class LaunchRequest:
    image: str  # ID or endorser:tag; "" with ``boot_volume``
    machine: MachineType
    ssh_keys: tuple[str, ...] = ()
    user_data: bytes | None = None
    readonly_disks: tuple[str, ...] = ()
    volatile_disks: tuple[int, ...] = ()  # sizes in GB
    persistent_disks: tuple[str, ...] = ()  # volume names
    context_scheme: str = "nocloud"
    hostname: str | None = None
    variables: Mapping[str, str] = dataclasses.field(default_factory=dict)
    files: tuple[ContextFile, ...] = ()
    persistent: bool = False  # root disk: a standalone copy kept across stop/start
    disk_size_mib: int | None = None  # grow the root disk to this size
    boot_volume: str | None = None  # boot from this volume (create_boot_volume) instead
    endorser: str | None = None  # take ``image`` as endorsed by this e-mail only
    name: str = ""  # the instance's name (with a count: NAME-1..N)
    ports: tuple[PortRequest, ...] = ()  # --port [HOST:]GUEST
    entry_ports: bool = True  # forward the entry's inbound ports too
    entry_xml: bytes | None = None  # a signed entry file instead of a marketplace reference
    image_file: Path | None = None  # the image bytes of ``entry_xml`` (else its locations)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything checked, nothing done yet."""

    request: LaunchRequest
    instance_id: str
    directory: Path
    root: VerifiedEntry | None  # None: the root disk is ``request.boot_volume``
    readonly: tuple[VerifiedEntry, ...]
    policy: Policy
    context: ContextSpec
    qemu: str
    accel: str
    ssh_port: int
    uncached_bytes: int
    image_id: str = ""  # what the root disk was made from
    name: str = ""
    ports: tuple[PortForward, ...] = ()
    bus: DiskBus = DiskBus.VIRTIO
    swap: bool = False  # attach a swap disk (the machine has swap and the image can use it)


def plan_launch(
    request: LaunchRequest,
    settings: Settings,
    *,
    client: Any = None,
    now: datetime | None = None,
) -> Plan:
    """Check every precondition of ``request``; no file is created, no process started
    (except, with accel = auto and no remembered answer, the accelerator probe, last).

    Raises the first refusal: InputError (bad request, no trust, a hypervisor or disk bus
    this launcher cannot give), NotFound, Ambiguous, VerificationError (signature, trust,
    Expired, Deprecated, PolicyRefused, Rollback, DigestConflict: endorsers of the ID
    disagree on its bytes, ``request.endorser`` picks; ChecksumMismatch of ``--image``),
    ToolMissing, EnvironmentProblem (cache not writable, no space, KVM unusable),
    InvalidState (volume in use, name taken, host port taken), NetworkError. With
    ``request.boot_volume`` no root image is resolved or fetched: the volume (made by
    ``lifecycle.create_boot_volume``) is the root disk.
    """
    (plan,) = plan_launches(request, settings, count=1, client=client, now=now)
    return plan


def plan_launches(
    request: LaunchRequest,
    settings: Settings,
    *,
    count: int = 1,
    client: Any = None,
    now: datetime | None = None,
) -> list[Plan]:
    """``plan_launch`` for ``count`` instances of one request: everything is resolved,
    verified and checked once; each instance gets its own ID, name (``NAME-1..N`` when
    ``count`` > 1), context and ports. Their root disks are copy-on-write overlays over the
    one cached image."""
    _check_root_choice(request)
    if count < 1 or count > 64:
        raise InputError(f"--count {count}: must be 1..64")
    if count > 1 and request.boot_volume:
        raise InputError("a boot volume boots one instance: --count does not apply")
    if count > 1 and any(p.host_port for p in request.ports):
        raise InputError(
            "--count with a fixed host port: each instance needs its own; "
            "give only the guest port (--port 80)"
        )
    if request.context_scheme not in ("nocloud", "configdrive", "opennebula", "stratuslab"):
        raise InputError(f"unknown context scheme {request.context_scheme!r}")
    for size in request.volatile_disks:
        if size < 1 or size > 4096:
            raise InputError(f"volatile disk size {size} GB: must be 1..4096")
    store = InstanceStore(settings.state_dir)
    names = [""] * count
    if request.name:
        names = [request.name] if count == 1 else [f"{request.name}-{i + 1}" for i in range(count)]
        for name in names:
            store.check_name_free(name)
    check_ports(request.ports, settings.port_address)
    resolver, policy = make_resolver(settings, client=client, now=now)

    root: VerifiedEntry | None = None
    if request.entry_xml is not None:
        root = resolver.resolve_entry_bytes(request.entry_xml, source=request.image or "--entry")
    elif request.image_file is not None:
        raise InputError(
            "--image FILE goes with --entry FILE (the signed entry it is checked against)"
        )
    elif not request.boot_volume:
        root = resolver.resolve(request.image, endorser=request.endorser)
    if root is not None:
        if root.entry.kind is not None and str(root.entry.kind) == "disk":
            raise InputError(
                f"{root.entry.identifier} is a data disk, not a machine image",
                hint="attach it with --readonly-disk",
            )
        qemu_format(root.entry)
        check_hypervisor(root.entry)
    if request.image_file is not None:
        assert root is not None
        _check_image_file(request.image_file, root)
    bus = disk_bus(root.entry) if root else DiskBus.VIRTIO
    readonly = tuple(resolver.resolve(ref) for ref in request.readonly_disks)
    for ro in readonly:
        qemu_format(ro.entry)
    swap = request.machine.swap_mib > 0 and (root is None or can_use_swap(root.entry))
    if bus is DiskBus.IDE:
        disks = (
            2
            + len(readonly)
            + len(request.volatile_disks)
            + len(request.persistent_disks)
            + int(swap)
        )
        if disks > q.IDE_MAX_DISKS:
            raise InputError(
                f"the image wants IDE disks: at most {q.IDE_MAX_DISKS} (root, "
                f"context and swap count), this launch needs {disks}",
                hint="--swap 0, or fewer data disks",
            )

    specs = [
        ContextSpec.build(
            instance_id=instance_id,
            hostname=request.hostname or names[i] or None,
            ssh_keys=request.ssh_keys,
            user_data=request.user_data,
            variables=dict(request.variables),
            files=request.files,
            swap_label=q.SWAP_LABEL if swap else None,
        )
        for i, instance_id in enumerate(new_instance_id() for _ in range(count))
    ]
    for spec in specs:
        render_context(request.context_scheme, spec)  # refuses what the scheme cannot carry

    volumes = VolumeStore(settings.state_dir)
    vols = [*request.persistent_disks, *([request.boot_volume] if request.boot_volume else [])]
    if len(set(vols)) != len(vols):
        raise InputError("a persistent disk is given twice")
    if count > 1 and request.persistent_disks:
        raise InputError("a persistent disk is attached to one instance: --count does not apply")
    for name in vols:
        volumes.check_free(name)
    image_id = root.entry.identifier if root else _boot_volume_origin(volumes, request)

    qemu = find_tool(q.QEMU)
    find_tool(q.QEMU_IMG)
    if swap:
        find_tool("mkswap")

    cache = ImageCache(settings.cache_dir)
    if root and request.disk_size_mib:
        _check_disk_size(root, request.disk_size_mib, cache, policy)
    cache.ensure_writable()
    fetched = (root, *readonly) if root else readonly
    uncached = sum(
        v.entry.bytes for v in fetched if not cache.has(v.entry, policy.digest_algorithms(v.entry))
    )
    for v in fetched:
        if v is root and request.image_file is not None:
            continue  # the bytes are the user's file, checked when they enter the cache
        if not cache.has(v.entry, policy.digest_algorithms(v.entry)):
            check_locations(v.entry, allow_private=settings.allow_private_locations)
    free = cache.free_bytes()
    if uncached and uncached + (256 << 20) > free:
        raise EnvironmentProblem(
            f"not enough space in {cache.root}: {uncached} bytes to download, {free} free"
        )
    try:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EnvironmentProblem(f"state directory {settings.state_dir}: {e.strerror}") from e

    taken: set[int] = set()
    plans = []
    for spec in specs:
        ssh_port = free_port("127.0.0.1", taken)
        inbound = root.entry.inbound_ports if root is not None and request.entry_ports else ()
        plans.append(
            (
                spec,
                ssh_port,
                forwards(request.ports, inbound, address=settings.port_address, taken=taken),
            )
        )
    accel = q.resolve_accel(settings.accel, qemu=qemu, state_dir=settings.state_dir)
    return [
        Plan(
            request=request,
            instance_id=spec.instance_id,
            directory=store.directory(spec.instance_id),
            root=root,
            readonly=readonly,
            policy=policy,
            context=spec,
            qemu=qemu,
            accel=accel,
            ssh_port=ssh_port,
            uncached_bytes=uncached,
            image_id=image_id,
            name=names[i],
            ports=forwards,
            bus=bus,
            swap=swap,
        )
        for i, (spec, ssh_port, forwards) in enumerate(plans)
    ]


# --- local images ----------------------------------------------------------------------


def _check_image_file(path: Path, root: VerifiedEntry) -> None:
    """Cheap checks before anything is created: the file is there, regular, of the signed
    size (its digests are checked as it enters the cache)."""
    try:
        st = path.stat()
    except OSError as e:
        raise InputError(f"--image {path}: {e.strerror}") from e
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"--image {path}: not a regular file")
    if root.entry.compression in (None, "") and st.st_size != root.entry.bytes:
        raise SizeMismatch(
            f"--image {path}: {st.st_size} bytes, the signed entry "
            f"{root.entry.identifier} says {root.entry.bytes}"
        )


def _check_root_choice(request: LaunchRequest) -> None:
    if request.entry_xml is not None:
        if request.boot_volume:
            raise InputError("give either --entry FILE or --boot-volume NAME")
    elif bool(request.image) == bool(request.boot_volume):
        raise InputError(
            "give either an image (ID or endorser:tag), --entry FILE or --boot-volume NAME"
        )
    if request.boot_volume and request.persistent:
        raise InputError("--persistent does not apply to a boot volume: it always keeps its data")
    if request.boot_volume and request.disk_size_mib:
        raise InputError(
            "--disk-size does not apply to a boot volume",
            hint="size it when creating it: imagekit volume create --size",
        )


def _boot_volume_origin(volumes: VolumeStore, request: LaunchRequest) -> str:
    assert request.boot_volume
    origin = volumes.find_origin(request.boot_volume)
    if origin is None:
        raise InputError(
            f"volume {request.boot_volume} is not bootable (it was not made from an image)",
            hint="imagekit volume create --from-image ID --name NAME",
        )
    return origin


def _check_disk_size(root: VerifiedEntry, size_mib: int, cache: ImageCache, policy: Policy) -> None:
    """Refuse a root disk size below the image's virtual size, when that is known before the
    download: a raw image is its bytes, a cached one is asked (``qemu-img info``, read-only).
    Otherwise ``prepare_root_disk`` refuses it after the download."""
    if qemu_format(root.entry) == "raw":
        size = root.entry.bytes
    elif (hit := cache.lookup(root.entry, policy.digest_algorithms(root.entry))) is not None:
        size = int(disk_info(hit.path)["virtual-size"])
    else:
        return
    if size_mib * 1024 * 1024 < size:
        raise InputError(
            f"disk size {size_mib} MiB is smaller than the image "
            f"({-(-size // (1024 * 1024))} MiB): disks only grow"
        )


def execute(
    plan: Plan,
    settings: Settings,
    *,
    progress: Callable[[str, int], Progress | None] | None = None,
    on_state: Callable[[Instance], None] | None = None,
) -> Instance:
    """Carry out a checked plan; return the instance (Running, or Failed with a reason).

    ``progress(label, total)`` may return a callback for each download.
    Raises what fails, after marking the instance Failed and removing what it created.
    """
    store = InstanceStore(settings.state_dir)
    volumes = VolumeStore(settings.state_dir)
    req = plan.request
    d = plan.directory
    d.mkdir(mode=0o700, parents=True, exist_ok=False)  # context.iso holds user-data secrets
    root_entry = plan.root.entry if plan.root else None
    inst = Instance(
        id=plan.instance_id,
        directory=d,
        image_id=plan.image_id or (root_entry.identifier if root_entry else ""),
        base_image=Path(),
        base_format=qemu_format(root_entry) if root_entry else "qcow2",
        machine=req.machine,
        accel=plan.accel,
        ssh_port=plan.ssh_port,
        drives=(),
        context_scheme=req.context_scheme,
        endorser=(root_entry.endorser_email or "") if root_entry else "",
        state=State.PENDING,
        qemu=plan.qemu,
        # a boot volume keeps its data across stop/start like a persistent root disk
        persistent=req.persistent or bool(req.boot_volume),
        name=plan.name,
        ports=plan.ports,
        console="socket",
    )
    store.save(inst)
    bus = plan.bus
    notify = on_state or (lambda _i: None)
    try:
        inst = store.transition(inst, State.PROLOG)
        notify(inst)

        def get(v: VerifiedEntry) -> Path:
            cb = progress(v.entry.identifier, v.entry.bytes) if progress else None
            image_file = req.image_file if v is plan.root else None
            return fetch_verified(settings, v, plan.policy, progress=cb, image_file=image_file)

        drives: list[Drive] = []
        if plan.root is None:
            assert req.boot_volume
            vol = volumes.acquire(req.boot_volume, inst.id)
            drives.append(
                Drive(
                    DriveKind.BOOT_VOLUME,
                    vol.path,
                    "qcow2",
                    serial="root",
                    identifier=req.boot_volume,
                    bus=bus,
                )
            )
            inst = store.save(dataclasses.replace(inst, drives=tuple(drives)))
        else:
            base = get(plan.root)
            overlay = d / "overlay.qcow2"
            drives.append(
                Drive(
                    DriveKind.ROOT,
                    overlay,
                    "qcow2",
                    serial="root",
                    identifier=plan.root.entry.identifier,
                    bus=bus,
                )
            )
            inst = store.save(dataclasses.replace(inst, base_image=base, drives=tuple(drives)))
            q.create_overlay(base, inst.base_format, overlay)
            if req.persistent or req.disk_size_mib:
                prepare_root_disk(overlay, persistent=req.persistent, size_mib=req.disk_size_mib)

        context = d / "context.iso"
        make_context_iso(req.context_scheme, plan.context, context)
        drives.append(
            Drive(DriveKind.CONTEXT, context, "raw", readonly=True, serial="context", bus=bus)
        )
        for i, ro in enumerate(plan.readonly):
            path = get(ro)
            drives.append(
                Drive(
                    DriveKind.READONLY,
                    path,
                    qemu_format(ro.entry),
                    readonly=True,
                    serial=f"ro{i}",
                    identifier=ro.entry.identifier,
                    bus=bus,
                )
            )
        for i, size in enumerate(req.volatile_disks):
            path = d / f"volatile-{i}.qcow2"
            drives.append(
                Drive(
                    DriveKind.VOLATILE, path, "qcow2", serial=f"volatile{i}", size_gb=size, bus=bus
                )
            )
            inst = store.save(dataclasses.replace(inst, drives=tuple(drives)))
            q.create_blank(path, size * 1024)
        for name in req.persistent_disks:
            vol = volumes.acquire(name, inst.id)
            drives.append(
                Drive(
                    DriveKind.VOLUME,
                    vol.path,
                    "qcow2",
                    serial=f"vol-{name}"[:20],
                    identifier=name,
                    bus=bus,
                )
            )
            inst = store.save(dataclasses.replace(inst, drives=tuple(drives)))
        if plan.swap:
            # raw, formatted here: the context names its label and the guest enables it
            path = d / "swap.raw"
            drives.append(Drive(DriveKind.SWAP, path, "raw", serial="swap", bus=bus))
            inst = store.save(dataclasses.replace(inst, drives=tuple(drives)))
            q.create_swap(path, req.machine.swap_mib)
        inst = store.transition(inst, State.BOOT, drives=tuple(drives))
        notify(inst)
        pid = _start_with_port_retry(store, inst)
        inst = store.save(
            dataclasses.replace(store.load(inst.id), pid=pid, started=datetime.now(UTC))
        )
        inst = store.wait(inst, {State.RUNNING}, timeout=30)
        notify(inst)
        return inst
    except BaseException as e:
        _abort(store, volumes, store.load(inst.id), e)
        raise


def _start_with_port_retry(store: InstanceStore, inst: Instance) -> int:
    for attempt in range(3):
        try:
            return q.start(inst, qemu=inst.qemu)
        except CommandError as e:
            # another process took a port between the check and qemu's bind: new ones for
            # those imagekit chose (a port the user chose is theirs to free)
            if ("hostfwd" not in e.stderr and "host forwarding" not in e.stderr) or attempt == 2:
                raise
            ports = tuple(
                p if p.fixed else dataclasses.replace(p, host_port=free_port(p.address, set()))
                for p in inst.ports
            )
            inst = store.save(
                dataclasses.replace(inst, ssh_port=q.free_loopback_port(), ports=ports)
            )
    raise AssertionError("unreachable")


def _abort(store: InstanceStore, volumes: VolumeStore, inst: Instance, e: BaseException) -> None:
    with contextlib.suppress(Exception):
        store.stop(inst)
    with contextlib.suppress(Exception):
        store.remove_owned_files(inst)
    with contextlib.suppress(Exception):
        volumes.release_all(inst.id)
    reason = str(e) or type(e).__name__
    with contextlib.suppress(Exception):
        store.transition(store.load(inst.id), State.FAILED, reason)


def launch(
    request: LaunchRequest,
    settings: Settings,
    *,
    client: Any = None,
    now: datetime | None = None,
    progress: Callable[[str, int], Progress | None] | None = None,
) -> Instance:
    """Plan (every check) then execute. See ``plan_launch`` and ``execute``."""
    plan = plan_launch(request, settings, client=client, now=now)
    return execute(plan, settings, progress=progress)


def execute_all(
    plans: list[Plan],
    settings: Settings,
    *,
    progress: Callable[[str, int], Progress | None] | None = None,
    on_state: Callable[[Instance], None] | None = None,
) -> list[Instance]:
    """``execute`` each plan in turn (the first fills the cache, the others hit it). If one
    fails, the instances this call started are killed and forgotten, and the failure is
    raised (its own record stays, Failed, with the reason)."""
    done: list[Instance] = []
    try:
        for plan in plans:
            done.append(execute(plan, settings, progress=progress, on_state=on_state))
    except BaseException:
        for inst in done:
            with contextlib.suppress(ImagekitError):
                kill(settings, inst.id, forget=True)
        raise
    return done


# --- other instance operations ----------------------------------------------------------


def kill(settings: Settings, name: str, *, forget: bool = False) -> Instance:
    """Stop the instance's qemu and remove its overlay, context ISO, volatile and swap disks;
    release its volumes (a boot volume is kept, like every volume). The record (and console
    log) stays, state Done (or Failed) — unless ``forget``: then it goes too (``rm``)."""
    store = InstanceStore(settings.state_dir)
    inst = store.find(name)
    with store.lock(inst.id):
        inst = store.load(inst.id)
        store.stop(inst)
        store.remove_owned_files(inst)
        VolumeStore(settings.state_dir).release_all(inst.id)
        if not inst.state.is_final:
            inst = store.transition(inst, State.DONE, "killed")
    if forget:
        store.forget(inst)
    return inst


def remove(settings: Settings, name: str) -> Instance:
    """Forget a Done or Failed instance: its record, console logs and any files left (a
    persistent root disk too); volumes stay. Raises InvalidState for any other state."""
    store = InstanceStore(settings.state_dir)
    inst = store.find(name)
    store.forget(inst)
    VolumeStore(settings.state_dir).release_all(inst.id)
    return inst


def attach_volume(settings: Settings, instance_name: str, volume: str) -> Instance:
    """Hot-plug a persistent volume into a running instance (virtio, via QMP)."""
    store = InstanceStore(settings.state_dir)
    volumes = VolumeStore(settings.state_dir)
    inst = store.refresh(store.find(instance_name))
    if inst.state is not State.RUNNING:
        raise InvalidState(f"instance {inst.id} is {inst.state}, not Running")
    vol = volumes.acquire(volume, inst.id)
    node = f"vol-{volume}"[:31]
    try:
        with QMP(inst.qmp_socket) as qmp:
            qmp.command(
                "blockdev-add",
                **{
                    "node-name": node,
                    "driver": "qcow2",
                    "file": {"driver": "file", "filename": str(vol.path)},
                },
            )
            for port in q.HOTPLUG_PORTS:
                try:
                    qmp.command(
                        "device_add",
                        driver="virtio-blk-pci",
                        drive=node,
                        id=node,
                        serial=node[:20],
                        bus=port,
                    )
                    break
                except QMPError as e:
                    last = e
            else:
                qmp.command("blockdev-del", **{"node-name": node})
                raise EnvironmentProblem(
                    f"cannot hot-plug {volume} into {inst.id}: {last}",
                    hint="kill it and launch with --persistent-disk",
                )
    except (QMPError, EnvironmentProblem):
        volumes.release(volume, inst.id)
        raise
    drive = Drive(DriveKind.VOLUME, vol.path, "qcow2", serial=node[:20], identifier=volume)
    return store.save(dataclasses.replace(inst, drives=(*inst.drives, drive)))


def detach_volume(settings: Settings, volume: str) -> None:
    """Unplug a volume from the instance holding it (or just release a stale hold)."""
    store = InstanceStore(settings.state_dir)
    volumes = VolumeStore(settings.state_dir)
    vol = volumes.get(volume)
    if vol.attached_to is None:
        volumes.release(volume)
        return
    inst = store.refresh(store.load(vol.attached_to))
    if any(d.kind is DriveKind.BOOT_VOLUME and d.identifier == volume for d in inst.drives):
        raise InvalidState(
            f"volume {volume} is the boot disk of {inst.id}", hint=f"imagekit kill {inst.id}"
        )
    node = f"vol-{volume}"[:31]
    if inst.state is State.RUNNING:
        with QMP(inst.qmp_socket, timeout=30) as qmp:
            try:
                qmp.command("device_del", id=node)
                qmp.wait_event("DEVICE_DELETED")
                qmp.command("blockdev-del", **{"node-name": node})
            except QMPError as e:
                raise EnvironmentProblem(
                    f"cannot detach {volume} from {inst.id}: {e}",
                    hint="volumes attached at launch stay until the instance is killed",
                ) from e
    volumes.release(volume, inst.id)
    store.save(
        dataclasses.replace(
            inst,
            drives=tuple(
                d for d in inst.drives if d.identifier != volume or d.kind is not DriveKind.VOLUME
            ),
        )
    )
