"""Verified marketplace images in Glance: one Glance image per Marketplace ID.

Every image imagekit uploads carries the tag ``imagekit`` and its own properties: the
Marketplace ID, the endorser, the endorsement date, the SHA-256 of the signed entry and the
image's SHA-256 from the entry, besides the standard ``os_distro``, ``os_version``,
``architecture``, ``hw_disk_bus`` and ``min_disk``. All of them are found with ONE
``GET /v2/images?tag=imagekit`` call.

Properties are claims anyone with write access to Glance could copy onto another image,
so they only *select* candidates. What ties a Glance image to a verified entry is Glance's
own ``os_hash_value`` (``os_hash_algo``: SHA-512 unless the operator chose otherwise),
which Glance computes from the bytes it stored and no client can set:

* it must equal the entry's signed checksum for that algorithm, or, when the entry has
  none, the digest imagekit computed itself from the verified bytes while uploading them
  (kept in ``state_dir``, never read back from Glance);
* ``size`` must equal the entry's ``bytes``, the status must be ``active``.

An image whose hash disagrees is *tampered* and is never used; one that nothing proves
(another machine uploaded it and the entry has no checksum of Glance's algorithm) is
*unproven*, not used either: launch then uploads its own copy from the verified cache.

Uploads are safe to interrupt: the image is created hidden (``os_hidden``), the verified
cached file is streamed (hashed in the same pass when the entry lacks Glance's algorithm),
then Glance's hash and size are compared, and only then is the image unhidden. Any failure
deletes the image; a crash leaves a hidden image that ``sync`` deletes (not active, or not
proven) or, if its bytes prove right, completes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from .._files import atomic_write
from ..entry import Entry, format_date
from ..errors import ChecksumMismatch, InputError, SizeMismatch
from ..image.digests import DigestAlgorithm
from ..signing.verify import VerifiedEntry
from .connection import Cloud
from .errors import CloudError, ImageInError, cloud_errors

log = logging.getLogger(__name__)

TAG = "imagekit"
P_ID = "imagekit_id"
P_ENDORSER = "imagekit_endorser"
P_CREATED = "imagekit_endorsement_created"
P_ENTRY_SHA256 = "imagekit_entry_sha256"
P_SHA256 = "imagekit_sha256"
P_ORIGIN = "imagekit_origin"
P_KIND = "imagekit_kind"

# dcterms:format values Glance knows as disk formats (container: bare)
_GLANCE_FORMATS = {
    "raw": "raw",
    "qcow2": "qcow2",
    "vmdk": "vmdk",
    "vdi": "vdi",
    "vhd": "vhd",
    "vhdx": "vhdx",
    "iso": "iso",
}
_DISK_BUSES = {"virtio", "ide", "scsi", "sata", "usb", "xen", "uml", "lxc", "fdc"}
# What a libvirt guest image says as its architecture (Glance's ``architecture`` values)
_ARCHES = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "i386": "i686",
    "i686": "i686",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}
_CHUNK = 1 << 20
_PAGE = 1000  # Glance's default api_limit_max


class Proof(StrEnum):
    """What a Glance image is, for one verified entry."""

    PROVEN = "proven"  # active, right size, Glance's hash equals a digest of verified bytes
    TAMPERED = "tampered"  # claims the entry, but its size or Glance's hash disagree
    UNPROVEN = "unproven"  # nothing here can tie Glance's hash to the entry
    PARTIAL = "partial"  # not active: an upload in progress or interrupted
    FAILED = "failed"  # killed / deleted / error
    OTHER = "other"  # another entry's image (other ID or other image SHA-256)


@dataclasses.dataclass(frozen=True)
class GlanceImage:
    """The parts of a Glance image imagekit reads."""

    id: str
    name: str
    status: str
    size: int | None
    hash_algo: str | None
    hash_value: str | None
    hidden: bool
    visibility: str
    owner: str
    created_at: str
    properties: Mapping[str, str]

    @classmethod
    def from_sdk(cls, img: Any) -> GlanceImage:
        props: dict[str, str] = {}
        raw = getattr(img, "properties", None) or {}
        for key, value in dict(raw).items():
            if key.startswith("imagekit_") and value is not None:
                props[key] = str(value)
        return cls(
            id=str(img.id),
            name=str(img.name or ""),
            status=str(img.status or ""),
            size=int(img.size) if img.size is not None else None,
            hash_algo=str(img.hash_algo) if img.hash_algo else None,
            hash_value=str(img.hash_value) if img.hash_value else None,
            hidden=bool(img.is_hidden),
            visibility=str(img.visibility or ""),
            owner=str(img.owner_id or img.owner or ""),
            created_at=str(img.created_at or ""),
            properties=props,
        )

    @property
    def identifier(self) -> str:
        return self.properties.get(P_ID, "")

    @property
    def origin(self) -> str:
        return self.properties.get(P_ORIGIN, "")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"properties": dict(self.properties)}


# --- digests imagekit computed itself from verified bytes --------------------------------


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


class VerifiedDigests:
    """SHA-512 values imagekit computed itself from verified bytes, per Marketplace ID.

    ``state_dir/cloud/digests.json``: ``{ID: {"sha256": the entry's, "sha512": computed,
    "size": n}}``. A digest of the verified bytes is a fact about the bytes, so it proves or
    disproves every Glance image that claims the entry, whoever uploaded it. Consulted only
    when the entry itself has no checksum of Glance's algorithm; written when an upload
    computed it (after the same pass checked the entry's SHA-256), before the image is made
    visible.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "cloud" / "digests.json"

    def load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, dict[str, Any]]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = self.load()
                before = json.dumps(data, sort_keys=True)
                yield data
                if json.dumps(data, sort_keys=True) != before:
                    atomic_write(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def add(self, entry: Entry, sha512: str) -> None:
        sha256 = entry.checksum(DigestAlgorithm.SHA256)
        with self._locked() as data:
            data[entry.identifier] = {
                "sha256": sha256.hex.lower() if sha256 else "",
                "sha512": sha512.lower(),
                "size": entry.bytes,
            }


# --- properties -----------------------------------------------------------------------------


def entry_sha256(verified: VerifiedEntry) -> str:
    """SHA-256 of the signed entry as served (names the endorsement, not only the bytes)."""
    return hashlib.sha256(verified.xml).hexdigest()


def _created(entry: Entry) -> str:
    created: datetime | None = entry.endorsement_created
    return format_date(created) if created else ""


def glance_disk_format(entry: Entry) -> str:
    fmt = str(entry.format) if entry.format else "raw"
    try:
        return _GLANCE_FORMATS[fmt]
    except KeyError:
        raise InputError(f"entry {entry.identifier}: Glance cannot hold format {fmt!r}") from None


def image_properties(verified: VerifiedEntry, *, origin: str) -> dict[str, Any]:
    """Glance attributes for the verified entry: standard ones where the entry knows them,
    and imagekit's own claims (which select an image; Glance's hash proves it)."""
    entry = verified.entry
    sha256 = entry.checksum(DigestAlgorithm.SHA256)
    props: dict[str, Any] = {
        P_ID: entry.identifier,
        P_ENDORSER: (entry.endorser_email or "").lower(),
        P_CREATED: _created(entry),
        P_ENTRY_SHA256: entry_sha256(verified),
        P_SHA256: sha256.hex if sha256 else "",
        P_ORIGIN: origin,
        P_KIND: str(entry.kind) if entry.kind else "machine",
    }
    if entry.os and entry.os.lower() not in ("none", ""):
        props["os_distro"] = entry.os.lower()
    if entry.os_version and entry.os_version.lower() != "none":
        props["os_version"] = entry.os_version
    if entry.os_arch and entry.os_arch.lower() in _ARCHES:
        props["architecture"] = _ARCHES[entry.os_arch.lower()]
    if entry.disks_bus and entry.disks_bus.lower() in _DISK_BUSES:
        props["hw_disk_bus"] = entry.disks_bus.lower()
    if glance_disk_format(entry) in ("raw", "iso"):
        # a raw image's virtual size is its byte count: the smallest root disk that holds it
        props["min_disk"] = max(1, -(-entry.bytes // (1 << 30)))
    return props


def image_name(entry: Entry) -> str:
    label = entry.tag or entry.title or "appliance"
    return f"{label[:200]} {entry.identifier}"


# --- proof -------------------------------------------------------------------------------


def _expected_hash(
    image: GlanceImage, entry: Entry, records: Mapping[str, Mapping[str, Any]]
) -> str | None:
    """The hex value Glance's hash must have: the entry's signed checksum for Glance's
    algorithm, else the SHA-512 imagekit computed itself from the verified bytes."""
    if not image.hash_algo:
        return None
    try:
        algorithm = DigestAlgorithm.parse(image.hash_algo)
    except InputError:
        algorithm = None
    if algorithm is not None:
        signed = entry.checksum(algorithm)
        if signed is not None:
            return signed.hex.lower().rjust(algorithm.hex_length, "0")
    known = records.get(entry.identifier)
    sha256 = entry.checksum(DigestAlgorithm.SHA256)
    if (
        known
        and image.hash_algo.lower() == "sha512"
        and sha256 is not None
        and known.get("size") == entry.bytes
        and _same_hex(str(known.get("sha256", "")), sha256.value)
    ):
        return str(known.get("sha512", "")).lower() or None
    return None


def _same_hex(a: str, b: str) -> bool:
    try:
        return int(a, 16) == int(b, 16)
    except ValueError:
        return False


def assess(image: GlanceImage, entry: Entry, records: Mapping[str, Mapping[str, Any]]) -> Proof:
    """What ``image`` is for ``entry`` (see ``Proof``). Pure: no call to the cloud."""
    sha256 = entry.checksum(DigestAlgorithm.SHA256)
    if image.identifier != entry.identifier:
        return Proof.OTHER
    claimed = image.properties.get(P_SHA256, "")
    if sha256 is not None and claimed and int(claimed, 16) != int(sha256.value, 16):
        return Proof.OTHER  # another (conflicting) entry of the same ID: not ours to judge
    if image.status in ("killed", "deleted", "pending_delete", "deactivated"):
        return Proof.FAILED
    if image.status != "active":
        return Proof.PARTIAL
    if image.size != entry.bytes:
        return Proof.TAMPERED
    expected = _expected_hash(image, entry, records)
    if expected is None:
        return Proof.UNPROVEN
    if (image.hash_value or "").lower() != expected:
        return Proof.TAMPERED
    return Proof.PROVEN


@dataclasses.dataclass(frozen=True)
class Match:
    """The Glance images that claim one entry, sorted by what they are."""

    proven: tuple[GlanceImage, ...] = ()
    tampered: tuple[GlanceImage, ...] = ()
    unproven: tuple[GlanceImage, ...] = ()
    partial: tuple[GlanceImage, ...] = ()
    failed: tuple[GlanceImage, ...] = ()

    @property
    def best(self) -> GlanceImage | None:
        """The proven image to use: a visible one first, then the oldest."""
        ordered = sorted(self.proven, key=lambda i: (i.hidden, i.created_at, i.id))
        return ordered[0] if ordered else None


def match(
    images: Sequence[GlanceImage], entry: Entry, records: Mapping[str, Mapping[str, Any]]
) -> Match:
    groups: dict[Proof, list[GlanceImage]] = {p: [] for p in Proof}
    for image in images:
        groups[assess(image, entry, records)].append(image)
    return Match(
        proven=tuple(groups[Proof.PROVEN]),
        tampered=tuple(groups[Proof.TAMPERED]),
        unproven=tuple(groups[Proof.UNPROVEN]),
        partial=tuple(groups[Proof.PARTIAL]),
        failed=tuple(groups[Proof.FAILED]),
    )


# --- calls to Glance -------------------------------------------------------------------------


def list_images(cloud: Cloud, *, hidden: bool = False) -> list[GlanceImage]:
    """imagekit's images (tag ``imagekit``) that this project can see: visible ones, or
    with ``hidden`` the hidden ones (Glance lists either, never both). One call for up to
    1000 images."""
    from openstack.image.v2.image import Image as SdkImage

    query: dict[str, Any] = {"tag": TAG, "limit": _PAGE}
    if hidden:
        query["is_hidden"] = True
    out: list[GlanceImage] = []
    with cloud_errors(f"cloud {cloud.name}: list images"):
        while True:
            # one page per call: the proxy's images() always asks for a next page, even
            # after a short one (a second round trip for every list)
            page = [
                GlanceImage.from_sdk(i)
                for i in SdkImage.list(cloud.conn.image, paginated=False, **query)
            ]
            out += page
            if len(page) < _PAGE:
                return out
            query["marker"] = page[-1].id


def get_image(cloud: Cloud, glance_id: str) -> GlanceImage:
    with cloud_errors(f"cloud {cloud.name}: image {glance_id}"):
        return GlanceImage.from_sdk(cloud.conn.image.get_image(glance_id))


def set_hidden(cloud: Cloud, image: GlanceImage, hidden: bool) -> None:
    with cloud_errors(f"cloud {cloud.name}: image {image.id}"):
        cloud.conn.image.update_image(image.id, is_hidden=hidden)


def update_properties(cloud: Cloud, image: GlanceImage, props: Mapping[str, Any]) -> None:
    with cloud_errors(f"cloud {cloud.name}: image {image.id}"):
        cloud.conn.image.update_image(image.id, **dict(props))


def delete_image(cloud: Cloud, glance_id: str) -> None:
    """Delete a Glance image; one that is already gone is not an error (a protected one
    is: imagekit never lifts an operator's protection)."""
    with cloud_errors(f"cloud {cloud.name}: delete image {glance_id}"):
        cloud.conn.image.delete_image(glance_id, ignore_missing=True)


def images_in_use(cloud: Cloud) -> dict[str, int]:
    """Glance image ID -> number of servers booted from it (all projects when allowed)."""
    from openstack import exceptions as ox

    counts: dict[str, int] = {}
    with cloud_errors(f"cloud {cloud.name}: list servers"):
        try:
            servers = list(cloud.conn.compute.servers(all_projects=True))
        except ox.ForbiddenException:
            servers = list(cloud.conn.compute.servers())
    for server in servers:
        image = getattr(server, "image", None) or {}
        gid = image.get("id") if isinstance(image, Mapping) else getattr(image, "id", None)
        if gid:
            counts[str(gid)] = counts.get(str(gid), 0) + 1
    return counts


class _HashingReader:
    """A file object for the HTTP body: reads the cached file once, hashing as it goes."""

    def __init__(
        self,
        fp: IO[bytes],
        size: int,
        hashers: Sequence[Any],
        progress: Callable[[int], None] | None,
    ) -> None:
        self.fp = fp
        self.size = size
        self.sent = 0
        self.hashers = list(hashers)
        self.progress = progress

    def __len__(self) -> int:
        return self.size

    def read(self, n: int = -1) -> bytes:
        # At least a MiB per read: http.client asks for 8 KiB blocks and sends whatever a
        # read returns, and 8 KiB pieces cost a Python round of hashing and progress each.
        data = self.fp.read(_CHUNK if n is None or n < 0 else max(n, _CHUNK))
        for h in self.hashers:
            h.update(data)
        self.sent += len(data)
        if self.progress and data:
            self.progress(len(data))
        return data


def upload_verified(
    cloud: Cloud,
    verified: VerifiedEntry,
    path: Path,
    *,
    origin: str,
    records: VerifiedDigests,
    visibility: str = "private",
    hidden: bool = False,
    progress: Callable[[int], None] | None = None,
) -> GlanceImage:
    """Upload the verified cached bytes at ``path`` as a new Glance image for ``verified``.

    The image is created hidden, streamed once (hashed in the same pass if the entry lacks
    SHA-512, the algorithm Glance uses unless configured otherwise), then Glance's own hash
    and size are compared with the entry (or with the digest just computed) before it is
    made visible. Any failure, an interrupt included, deletes the image.

    Raises ChecksumMismatch / SizeMismatch (Glance holds other bytes than were verified),
    ImageInError (Glance did not make it active), CloudError, QuotaExceeded, NetworkError.
    """
    import time

    entry = verified.entry
    size = path.stat().st_size
    if size != entry.bytes:
        raise SizeMismatch(f"cached image {path}: {size} bytes, the entry says {entry.bytes}")
    props = image_properties(verified, origin=origin)
    min_disk = props.pop("min_disk", None)
    t0 = time.monotonic()
    # Hash in the upload pass what the entry cannot vouch for by itself: SHA-512 (Glance's
    # default algorithm) to record, and SHA-256 to check the cached file once more.
    own: dict[str, Any] = {}
    if entry.checksum(DigestAlgorithm.SHA512) is None:
        own = {"sha512": hashlib.sha512(), "sha256": hashlib.sha256()}
    with cloud_errors(f"cloud {cloud.name}: create image for {entry.identifier}"):
        from openstack.image.v2.image import Image as SdkImage

        # the resource itself, not the proxy's create_image (which looks images up by name,
        # adds properties of its own and uploads in its own way)
        sdk_image = SdkImage.new(
            name=image_name(entry),
            disk_format=glance_disk_format(entry),
            container_format="bare",
            visibility=visibility,
            tags=[TAG],
            is_hidden=True,
            **({"min_disk": min_disk} if min_disk else {}),
            **props,
        ).create(cloud.conn.image)
    glance_id = str(sdk_image.id)
    try:
        with open(path, "rb") as fp, cloud_errors(f"cloud {cloud.name}: upload {entry.identifier}"):
            body = _HashingReader(fp, size, list(own.values()), progress)
            sdk_image.upload(cloud.conn.image, data=body, size=size)
        if own:
            got = own["sha256"].hexdigest()
            sha256 = entry.checksum(DigestAlgorithm.SHA256)
            if sha256 is None or int(got, 16) != int(sha256.value, 16):
                raise ChecksumMismatch(
                    f"cached image {path}: SHA-256 {got} differs from the entry: not uploaded"
                )
        image = _wait_active(cloud, glance_id)
        if image.size != entry.bytes:
            raise SizeMismatch(
                f"Glance stored {image.size} bytes of {entry.identifier}, "
                f"the entry says {entry.bytes}"
            )
        if own and image.hash_algo and image.hash_algo.lower() == "sha512":
            records.add(entry, own["sha512"].hexdigest())
        proof = assess(image, entry, records.load())
        if proof is not Proof.PROVEN:
            raise ChecksumMismatch(
                f"Glance image {glance_id}: its {image.hash_algo} {image.hash_value} does not "
                f"match the verified bytes of {entry.identifier} ({proof})"
            )
        if not hidden:
            set_hidden(cloud, image, False)
            image = dataclasses.replace(image, hidden=False)
        log.debug("uploaded %s as %s in %.1fs", entry.identifier, glance_id, time.monotonic() - t0)
        return image
    except BaseException:
        with contextlib.suppress(Exception):
            delete_image(cloud, glance_id)
        raise


def _wait_active(cloud: Cloud, glance_id: str, timeout: float = 600) -> GlanceImage:
    import time

    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        image = get_image(cloud, glance_id)
        if image.status == "active":
            return image
        if image.status in ("killed", "deleted", "pending_delete", "deactivated", "error"):
            raise ImageInError(f"Glance image {glance_id} went to status {image.status}")
        if time.monotonic() > deadline:
            raise CloudError(f"Glance image {glance_id} still {image.status} after {timeout}s")
        time.sleep(delay)
        delay = min(2.0, delay * 2)
