"""Run a verified appliance on Nova: ``launch --cloud`` and the instance commands.

``plan_cloud_launch`` checks everything before the first side effect: the reference
resolves, through the same resolver as a local launch, to an entry verified HERE (the
cloud is not trusted), acceptable to the site policy; the flavor exists (by machine-type
name, or the smallest that fits ``--cpu``/``--ram`` and the image's ``min_disk``); the key,
user data and metadata fit Nova's limits; read-only disks need a block-storage service.
It also finds the Glance image to boot: one whose imagekit properties claim the entry and
whose Glance hash and size prove it (``images.match``). A tampered image is never booted.

``execute_cloud_launch`` then uploads the verified image if Glance has no proven copy
(fetched and verified through the image cache, as a local launch does), creates a key
pair for an injected key, the volumes, and the server with a config drive carrying the
user data, the key and imagekit's metadata; it waits for ACTIVE. Any failure removes what
this launch created (server, key pair, volumes, image) and is raised as one line naming
the cloud's cause (quota, no valid host, image in error).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import Ambiguous, InputError, InvalidState, NotFound
from ..fetch.cache import ImageCache
from ..fetch.download import check_locations
from ..launch.images import fetch_verified, make_resolver
from ..launch.machines import MACHINE_TYPES
from ..settings import Settings
from ..signing.verify import VerifiedEntry
from . import images as gi
from .connection import Cloud
from .errors import CloudError, ImageInError, NoBlockStorage, classify, cloud_errors

log = logging.getLogger(__name__)

M_IMAGE = "imagekit_image"  # server metadata: the Marketplace ID it runs
M_ENDORSER = "imagekit_endorser"
M_KEYPAIR = "imagekit_keypair"  # a key pair this launch made (deleted with the server)
M_VOLUMES = "imagekit_volumes"  # volumes this launch made (comma-separated IDs)
_META_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,255}")
_USER_DATA_MAX = 65535  # Nova's limit on the base64 text
NOVA_SHUTDOWN_WAIT = 120.0
POLL = 0.5  # seconds between status polls (the bench's baseline polls at the same rate)


@dataclasses.dataclass(frozen=True)
class CloudLaunchRequest:
    image: str  # ID or endorser:tag
    name: str
    flavor: str | None = None  # flavor / machine type name
    cpu: int | None = None
    ram_mib: int | None = None
    ssh_keys: tuple[str, ...] = ()
    key_name: str | None = None  # an existing Nova key pair instead
    user_data: bytes | None = None
    variables: Mapping[str, str] = dataclasses.field(default_factory=dict)
    readonly_disks: tuple[str, ...] = ()
    endorser: str | None = None  # take ``image`` as endorsed by this e-mail only
    timeout: float = 600.0


@dataclasses.dataclass(frozen=True)
class Flavor:
    id: str
    name: str
    vcpus: int
    ram_mib: int
    disk_gb: int

    @classmethod
    def from_sdk(cls, f: Any) -> Flavor:
        return cls(str(f.id), str(f.name), int(f.vcpus or 0), int(f.ram or 0), int(f.disk or 0))


@dataclasses.dataclass(frozen=True)
class CloudPlan:
    request: CloudLaunchRequest
    root: VerifiedEntry
    readonly: tuple[VerifiedEntry, ...]
    flavor: Flavor
    image: gi.GlanceImage | None  # a proven Glance image, or None: upload one
    tampered: tuple[gi.GlanceImage, ...]
    policy: Any  # the site policy the entries were accepted under (imagekit.policy.Policy)


@dataclasses.dataclass(frozen=True)
class CloudServer:
    id: str
    name: str
    status: str
    flavor: str
    image_id: str  # Marketplace ID
    glance_image: str
    endorser: str
    created: str
    keypair: str = ""
    volumes: tuple[str, ...] = ()
    fault: str = ""

    @classmethod
    def from_sdk(cls, s: Any) -> CloudServer:
        meta = dict(s.metadata or {})
        image = s.image or {}
        flavor = s.flavor or {}
        fault = s.fault or {}
        return cls(
            id=str(s.id),
            name=str(s.name or ""),
            status=str(s.status or ""),
            flavor=str(flavor.get("original_name") or flavor.get("name") or flavor.get("id") or ""),
            image_id=str(meta.get(M_IMAGE, "")),
            glance_image=str(image.get("id", "") if isinstance(image, Mapping) else ""),
            endorser=str(meta.get(M_ENDORSER, "")),
            created=str(s.created_at or ""),
            keypair=str(meta.get(M_KEYPAIR, "")),
            volumes=tuple(v for v in str(meta.get(M_VOLUMES, "")).split(",") if v),
            fault=str(fault.get("message", "")) if isinstance(fault, Mapping) else "",
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- flavors ---------------------------------------------------------------------------


def _flavors(cloud: Cloud) -> list[Flavor]:
    with cloud_errors(f"cloud {cloud.name}: list flavors"):
        return [Flavor.from_sdk(f) for f in cloud.conn.compute.flavors()]


def choose_flavor(
    flavors: list[Flavor],
    *,
    name: str | None,
    cpu: int | None,
    ram_mib: int | None,
    min_disk_gb: int = 0,
) -> Flavor:
    """The flavor named ``name``, or the smallest (RAM, then CPUs, then disk) with at least
    ``cpu``/``ram_mib`` (defaults: the machine type ``name``'s values) and a root disk that
    holds the image (a 0 GB flavor disk takes the image's size). Pure.

    Raises NotFound naming the flavors there are.
    """
    known = ", ".join(
        f"{f.name} ({f.vcpus} CPU, {f.ram_mib} MiB)"
        for f in sorted(flavors, key=lambda f: (f.ram_mib, f.vcpus))
    )
    if name and cpu is None and ram_mib is None:
        for f in flavors:
            if f.name == name or f.id == name:
                return f
        if name not in MACHINE_TYPES:
            raise NotFound(f"the cloud has no flavor {name!r}", hint=f"flavors: {known}")
    if name and name in MACHINE_TYPES:
        cpu = cpu if cpu is not None else MACHINE_TYPES[name].cpu
        ram_mib = ram_mib if ram_mib is not None else MACHINE_TYPES[name].ram_mib
    want_cpu, want_ram = cpu or 1, ram_mib or 0
    fits = [
        f
        for f in flavors
        if f.vcpus >= want_cpu
        and f.ram_mib >= want_ram
        and (f.disk_gb == 0 or f.disk_gb >= min_disk_gb)
    ]
    if not fits:
        raise NotFound(
            f"no flavor has {want_cpu} CPU(s) and {want_ram} MiB"
            + (f" and a {min_disk_gb} GB disk" if min_disk_gb else ""),
            hint=f"flavors: {known}",
        )
    return min(fits, key=lambda f: (f.ram_mib, f.vcpus, f.disk_gb, f.name))


# --- servers --------------------------------------------------------------------------------


def list_servers(cloud: Cloud) -> list[CloudServer]:
    """Servers imagekit launched in this project (metadata ``imagekit_image``): one call."""
    with cloud_errors(f"cloud {cloud.name}: list servers"):
        servers = list(cloud.conn.compute.servers(details=True))
    return [CloudServer.from_sdk(s) for s in servers if (s.metadata or {}).get(M_IMAGE)]


def find_server(cloud: Cloud, name: str) -> CloudServer:
    """The imagekit server named ``name`` (or with that ID, or an ID prefix).

    Raises NotFound (also for servers imagekit did not launch), Ambiguous.
    """
    servers = list_servers(cloud)
    exact = [s for s in servers if s.id == name] or [s for s in servers if s.name == name]
    hits = exact or [s for s in servers if s.id.startswith(name)]
    if not hits:
        raise NotFound(
            f"cloud {cloud.name}: no server {name!r} launched by imagekit",
            hint=f"imagekit instances --cloud {cloud.name}",
        )
    if len(hits) > 1:
        raise Ambiguous(
            f"cloud {cloud.name}: {name!r} names several servers: " + ", ".join(s.id for s in hits)
        )
    return hits[0]


def _check_metadata(variables: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for key, value in variables.items():
        if not _META_KEY.fullmatch(key) or key.startswith("imagekit_"):
            raise InputError(
                f"--var {key}: Nova metadata keys are 1-255 of A-Z a-z 0-9 _ . : -"
                " (and imagekit_ is reserved)"
            )
        if len(value) > 255:
            raise InputError(f"--var {key}: Nova metadata values are at most 255 characters")
        out[key] = value
    if len(out) > 100:
        raise InputError("at most 100 --var values fit in Nova's metadata")
    return out


def _find_image(
    cloud: Cloud,
    verified: VerifiedEntry,
    records: gi.VerifiedDigests,
) -> tuple[gi.GlanceImage | None, tuple[gi.GlanceImage, ...]]:
    recs = records.load()
    found = gi.match(gi.list_images(cloud), verified.entry, recs)
    tampered = found.tampered
    if found.best is None:
        hidden = gi.match(gi.list_images(cloud, hidden=True), verified.entry, recs)
        tampered += hidden.tampered
        return hidden.best, tampered
    return found.best, tampered


def plan_cloud_launch(
    cloud: Cloud,
    request: CloudLaunchRequest,
    settings: Settings,
    *,
    client: Any = None,
    now: datetime | None = None,
) -> CloudPlan:
    """Check every precondition of ``request``; nothing is created (see the module doc).

    Raises InputError (name, key, user data, metadata), NotFound (flavor, reference),
    VerificationError (signature, trust, policy, rollback), NoBlockStorage, InvalidState
    (a server of that name exists), cloud errors.
    """
    if not request.name or len(request.name) > 255:
        raise InputError("give the server a name (--name), at most 255 characters")
    if request.key_name and request.ssh_keys:
        raise InputError("give --ssh-key or --key-name, not both")
    if len(request.ssh_keys) > 1:
        raise InputError(
            "a Nova key pair holds one key: give one --ssh-key",
            hint="put further keys in --user-data",
        )
    if request.user_data is not None and len(base64.b64encode(request.user_data)) > _USER_DATA_MAX:
        raise InputError(f"user data is too large for Nova ({_USER_DATA_MAX} bytes of base64)")
    _check_metadata(request.variables)
    cloud.check_compute_version()
    if request.readonly_disks and not cloud.has_block_storage:
        raise NoBlockStorage(
            f"cloud {cloud.name} has no block-storage service: --readonly-disk needs one (cinder)"
        )
    resolver, policy = make_resolver(settings, client=client, now=now)
    root = resolver.resolve(request.image, endorser=request.endorser)
    if root.entry.kind is not None and str(root.entry.kind) == "disk":
        raise InputError(
            f"{request.image} is a data disk, not a machine image",
            hint="attach it with --readonly-disk",
        )
    gi.glance_disk_format(root.entry)
    readonly = tuple(resolver.resolve(ref) for ref in request.readonly_disks)
    with cloud_errors(f"cloud {cloud.name}: servers"):
        clash = [
            s
            for s in cloud.conn.compute.servers(name=f"^{re.escape(request.name)}$")
            if s.name == request.name
        ]
    if clash:
        raise InvalidState(f"cloud {cloud.name} already has a server named {request.name}")
    if request.key_name:
        with cloud_errors(f"cloud {cloud.name}: key pair {request.key_name}"):
            if cloud.conn.compute.find_keypair(request.key_name) is None:
                raise NotFound(f"cloud {cloud.name} has no key pair {request.key_name!r}")
    min_disk = int(gi.image_properties(root, origin="launch").get("min_disk", 0))
    flavor = choose_flavor(
        _flavors(cloud),
        name=request.flavor,
        cpu=request.cpu,
        ram_mib=request.ram_mib,
        min_disk_gb=min_disk,
    )
    records = gi.VerifiedDigests(settings.state_dir)
    image, tampered = _find_image(cloud, root, records)
    cache = ImageCache(settings.cache_dir)
    for v in (root, *readonly) if image is None else readonly:
        if not cache.has(v.entry, policy.digest_algorithms(v.entry)):
            check_locations(v.entry, allow_private=settings.allow_private_locations)
    return CloudPlan(
        request,
        root,
        readonly,
        flavor,
        image,
        tampered,
        policy,
    )


@dataclasses.dataclass
class _Created:
    """What a launch made so far, removed in reverse on failure."""

    images: list[str] = dataclasses.field(default_factory=list)
    keypair: str = ""
    volumes: list[str] = dataclasses.field(default_factory=list)
    server: str = ""


def _ensure_image(
    cloud: Cloud,
    verified: VerifiedEntry,
    settings: Settings,
    *,
    created: _Created,
    policy: Any,
    progress: Callable[[str, int], Callable[[int], None] | None] | None,
) -> gi.GlanceImage:
    cb = progress(verified.entry.identifier, verified.entry.bytes) if progress else None
    path = fetch_verified(settings, verified, policy, progress=cb)
    records = gi.VerifiedDigests(settings.state_dir)
    up = progress(f"upload {verified.entry.identifier}", verified.entry.bytes) if progress else None
    image = gi.upload_verified(cloud, verified, path, origin="launch", records=records, progress=up)
    created.images.append(image.id)
    return image


def _readonly_volume(
    cloud: Cloud,
    verified: VerifiedEntry,
    settings: Settings,
    *,
    created: _Created,
    policy: Any,
    timeout: float,
    progress: Callable[[str, int], Callable[[int], None] | None] | None,
) -> str:
    records = gi.VerifiedDigests(settings.state_dir)
    image, _tampered = _find_image(cloud, verified, records)
    if image is None:
        image = _ensure_image(
            cloud, verified, settings, created=created, policy=policy, progress=progress
        )
    size_gb = max(1, -(-verified.entry.bytes // (1 << 30)))
    with cloud_errors(f"cloud {cloud.name}: volume for {verified.entry.identifier}"):
        vol = cloud.conn.block_storage.create_volume(
            size=size_gb, image_id=image.id, name=f"imagekit-ro-{verified.entry.identifier}"
        )
        created.volumes.append(str(vol.id))
        vol = cloud.conn.block_storage.wait_for_status(
            vol, status="available", failures=["error"], interval=POLL, wait=timeout
        )
        cloud.conn.block_storage.set_volume_readonly(vol, True)
    return str(vol.id)


def execute_cloud_launch(
    cloud: Cloud,
    plan: CloudPlan,
    settings: Settings,
    *,
    progress: Callable[[str, int], Callable[[int], None] | None] | None = None,
    on_event: Callable[[str], None] | None = None,
) -> CloudServer:
    """Carry out a checked plan; return the ACTIVE server. On any failure (an interrupt
    included) remove what this launch created, then raise the cause."""
    req = plan.request
    say = on_event or (lambda _m: None)
    for bad in plan.tampered:
        say(
            f"Glance image {bad.id} claims {plan.root.entry.identifier} but its bytes differ: "
            "not used"
        )
    created = _Created()
    try:
        image = plan.image
        if image is None:
            say(f"uploading verified {plan.root.entry.identifier} to Glance")
            image = _ensure_image(
                cloud,
                plan.root,
                settings,
                created=created,
                policy=plan.policy,
                progress=progress,
            )
        volumes = [
            _readonly_volume(
                cloud,
                ro,
                settings,
                created=created,
                policy=plan.policy,
                timeout=req.timeout,
                progress=progress,
            )
            for ro in plan.readonly
        ]
        key_name = req.key_name
        if req.ssh_keys:
            created.keypair = f"imagekit-{req.name[:40]}-{secrets.token_hex(4)}"
            with cloud_errors(f"cloud {cloud.name}: key pair"):
                cloud.conn.compute.create_keypair(name=created.keypair, public_key=req.ssh_keys[0])
            key_name = created.keypair
        metadata = _check_metadata(req.variables) | {
            M_IMAGE: plan.root.entry.identifier,
            M_ENDORSER: (plan.root.entry.endorser_email or "").lower()[:255],
        }
        if created.keypair:
            metadata[M_KEYPAIR] = created.keypair
        if volumes:
            metadata[M_VOLUMES] = ",".join(volumes)[:255]
        attrs: dict[str, Any] = {
            "name": req.name,
            "image_id": image.id,
            "flavor_id": plan.flavor.id,
            # no NIC: the context comes on the config drive (compute API >= 2.37)
            "networks": "none",
            "config_drive": True,
            "metadata": metadata,
        }
        if key_name:
            attrs["key_name"] = key_name
        if req.user_data is not None:
            attrs["user_data"] = base64.b64encode(req.user_data).decode("ascii")
        if volumes:
            attrs["block_device_mapping_v2"] = [
                {
                    "boot_index": 0,
                    "uuid": image.id,
                    "source_type": "image",
                    "destination_type": "local",
                    "delete_on_termination": True,
                },
                *(
                    {
                        "boot_index": -1,
                        "uuid": v,
                        "source_type": "volume",
                        "destination_type": "volume",
                        "delete_on_termination": True,
                    }
                    for v in volumes
                ),
            ]
        with cloud_errors(f"cloud {cloud.name}: create server {req.name}"):
            server = cloud.conn.compute.create_server(**attrs)
        created.server = str(server.id)
        say(f"{req.name}: server {server.id} BUILD")
        return _wait_status(cloud, created.server, "ACTIVE", req.timeout, what=req.name)
    except BaseException:
        _remove(cloud, created)
        raise


def _poll_server(cloud: Cloud, server_id: str, what: str, deadline: float) -> Any | None:
    """The server's current record, None once it is gone (404). A 5xx answer while polling
    (an API worker's hiccup) is asked again until ``deadline``, then raised."""
    from openstack import exceptions as ox

    while True:
        try:
            return cloud.conn.compute.get_server(server_id)
        except ox.NotFoundException:
            return None
        except ox.HttpException as e:
            if (e.status_code or 0) < 500 or time.monotonic() > deadline:
                raise classify(e, f"cloud {cloud.name}: server {what}") from e
        except Exception as e:
            with cloud_errors(f"cloud {cloud.name}: server {what}"):
                raise e
        time.sleep(POLL)


def _wait_status(
    cloud: Cloud, server_id: str, status: str, timeout: float, *, what: str
) -> CloudServer:
    from openstack import exceptions as ox

    deadline = time.monotonic() + timeout
    while True:
        s = _poll_server(cloud, server_id, what, deadline)
        if s is None:
            raise CloudError(f"server {what} disappeared while waiting for {status}")
        if s.status == status:
            return CloudServer.from_sdk(s)
        if s.status == "ERROR":
            fault = (s.fault or {}).get("message") or "no reason given"
            raise classify(ox.ResourceFailure(str(fault)), f"server {what} failed")
        if time.monotonic() > deadline:
            raise CloudError(f"server {what} still {s.status} after {timeout:.0f}s")
        time.sleep(POLL)


def _wait_gone(cloud: Cloud, server_id: str, timeout: float) -> None:
    """Until the server answers 404 (``DELETED`` can still be shown for a moment)."""
    deadline = time.monotonic() + timeout
    while _poll_server(cloud, server_id, server_id, deadline) is not None:
        if time.monotonic() > deadline:
            raise CloudError(f"server {server_id} was not deleted within {timeout:.0f}s")
        time.sleep(POLL)


def _remove(cloud: Cloud, created: _Created, timeout: float = 120) -> None:
    """Best effort, in reverse order of creation; every step is tried."""
    if created.server:
        with contextlib.suppress(Exception):
            with cloud_errors(f"cloud {cloud.name}: delete server"):
                cloud.conn.compute.delete_server(created.server, ignore_missing=True)
            _wait_gone(cloud, created.server, timeout)
    if created.keypair:
        with contextlib.suppress(Exception), cloud_errors(f"cloud {cloud.name}: key pair"):
            cloud.conn.compute.delete_keypair(created.keypair, ignore_missing=True)
    for vol in created.volumes:
        with contextlib.suppress(Exception), cloud_errors(f"cloud {cloud.name}: volume"):
            cloud.conn.block_storage.delete_volume(vol, ignore_missing=True)
    for image in created.images:
        with contextlib.suppress(Exception):
            gi.delete_image(cloud, image)


# --- after the launch ----------------------------------------------------------------------


def console_log(cloud: Cloud, name: str, *, lines: int | None = None) -> str:
    """The server's console log (what the guest wrote on its serial port)."""
    server = find_server(cloud, name)
    with cloud_errors(f"cloud {cloud.name}: console of {server.name}"):
        out = cloud.conn.compute.get_server_console_output(server.id, length=lines)
    return str((out or {}).get("output") or "")


def kill(cloud: Cloud, name: str, *, timeout: float = 120) -> CloudServer:
    """Delete the server and wait until it is gone; delete the key pair and volumes its
    launch made. Nothing of the launch is left (the verified Glance image stays: sync or
    another launch re-uses it)."""
    server = find_server(cloud, name)
    with cloud_errors(f"cloud {cloud.name}: delete server {server.name}"):
        cloud.conn.compute.delete_server(server.id, ignore_missing=True)
    _wait_gone(cloud, server.id, timeout)
    _remove(cloud, _Created(keypair=server.keypair, volumes=list(server.volumes)), timeout)
    return dataclasses.replace(server, status="DELETED")


def stop(cloud: Cloud, name: str, *, timeout: float = 120) -> CloudServer:
    server = find_server(cloud, name)
    if server.status == "SHUTOFF":
        return server
    if server.status != "ACTIVE":
        raise InvalidState(f"server {server.name} is {server.status}, not ACTIVE")
    with cloud_errors(f"cloud {cloud.name}: stop {server.name}"):
        cloud.conn.compute.stop_server(server.id)
    # Nova presses the power button, then pulls the plug itself after its own
    # shutdown_timeout (60 s unless the operator or the image's os_shutdown_timeout says
    # otherwise): wait for that too
    return _wait_status(cloud, server.id, "SHUTOFF", timeout + NOVA_SHUTDOWN_WAIT, what=server.name)


def start(cloud: Cloud, name: str, *, timeout: float = 120) -> CloudServer:
    server = find_server(cloud, name)
    if server.status == "ACTIVE":
        return server
    if server.status != "SHUTOFF":
        raise InvalidState(f"server {server.name} is {server.status}, not SHUTOFF")
    with cloud_errors(f"cloud {cloud.name}: start {server.name}"):
        cloud.conn.compute.start_server(server.id)
    return _wait_status(cloud, server.id, "ACTIVE", timeout, what=server.name)


def download_server_image(
    cloud: Cloud, name: str, dest: Path, *, timeout: float = 900
) -> tuple[CloudServer, str]:
    """Snapshot the server into Glance, stream that image to ``dest``, delete it from Glance.

    Returns the server and the snapshot's disk format. Raises ImageInError, CloudError.
    """
    server = find_server(cloud, name)
    snap_name = f"imagekit-snapshot-{server.name[:60]}-{secrets.token_hex(3)}"
    snap_id = ""
    try:
        with cloud_errors(f"cloud {cloud.name}: snapshot {server.name}"):
            snap = cloud.conn.compute.create_server_image(server.id, snap_name, wait=False)
            snap_id = str(snap.id)
        image = gi._wait_active(cloud, snap_id, timeout)
        with (
            cloud_errors(f"cloud {cloud.name}: download snapshot {snap_id}"),
            open(dest, "wb") as fp,
        ):
            response = cloud.conn.image.download_image(snap_id, stream=True)
            for chunk in response.iter_content(chunk_size=1 << 20):
                fp.write(chunk)
        if image.size is not None and dest.stat().st_size != image.size:
            raise ImageInError(
                f"snapshot {snap_id}: got {dest.stat().st_size} bytes of {image.size}"
            )
        with cloud_errors(f"cloud {cloud.name}: snapshot {snap_id}"):
            fmt = str(cloud.conn.image.get_image(snap_id).disk_format or "qcow2")
        return server, fmt
    finally:
        if snap_id:
            with contextlib.suppress(Exception):
                gi.delete_image(cloud, snap_id)
