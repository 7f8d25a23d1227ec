"""Persistent volumes: qcow2 disks under ``state_dir/volumes`` that outlive instances.

A volume is attached to at most one VM at a time. The registry (``<name>.json`` beside
``<name>.qcow2``) records the holder; every change happens under one lock file, and a
holder whose qemu is gone no longer holds the volume (a crashed VM does not lock a disk
forever). qemu's own image locking backs this up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from .._files import atomic_write, locked
from .._run import find_tool, run
from ..errors import InputError, InvalidState, NotFound
from .instances import InstanceStore

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclasses.dataclass(frozen=True)
class Volume:
    name: str
    path: Path
    size_gb: int
    created: str
    attached_to: str | None = None


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InputError(f"volume name {name!r}: use letters, digits, . _ - (max 64)")
    return name


class VolumeStore:
    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "volumes"
        # A hold lapses when its instance's qemu is gone (InstanceStore.is_alive).
        self._instances = InstanceStore(state_dir)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with locked(self.root / ".lock"):
            yield

    def _meta(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def _read(self, name: str) -> Volume:
        try:
            data = json.loads(self._meta(check_name(name)).read_text())
        except FileNotFoundError:
            raise NotFound(f"no volume {name!r}", hint="see: imagekit volume list") from None
        holder = data.get("attached_to")
        if holder and not self._instances.is_alive(holder):
            holder = None
        path = self.root / f"{name}.qcow2"
        return Volume(name, path, int(data["size_gb"]), data["created"], holder)

    def _write(self, volume: Volume) -> None:
        atomic_write(
            self._meta(volume.name),
            json.dumps(
                {
                    "size_gb": volume.size_gb,
                    "created": volume.created,
                    "attached_to": volume.attached_to,
                },
                indent=1,
            ),
        )

    def get(self, name: str) -> Volume:
        return self._read(name)

    def list(self) -> list[Volume]:
        if not self.root.is_dir():
            return []
        return [self._read(p.stem) for p in sorted(self.root.glob("*.json"))]

    def create(self, name: str, size_gb: int) -> Volume:
        """Raises InputError if the name is taken or the size is not positive."""
        check_name(name)
        if size_gb < 1:
            raise InputError("volume size must be at least 1 GB")
        qemu_img = find_tool("qemu-img")
        with self._lock():
            if self._meta(name).exists():
                raise InputError(f"volume {name!r} already exists")
            path = self.root / f"{name}.qcow2"
            run([qemu_img, "create", "-q", "-f", "qcow2", str(path), f"{size_gb}G"], timeout=60)
            volume = Volume(name, path, size_gb, datetime.now(UTC).isoformat(timespec="seconds"))
            self._write(volume)
            return volume

    def delete(self, name: str) -> None:
        """Remove the volume, its registry record and its origin. Raises InvalidState while
        attached."""
        with self._lock():
            volume = self._read(name)
            if volume.attached_to:
                raise InvalidState(f"volume {name} is attached to {volume.attached_to}")
            volume.path.unlink(missing_ok=True)
            self._origin(name).unlink(missing_ok=True)
            self._meta(name).unlink()

    def _origin(self, name: str) -> Path:
        # written by lifecycle.create_boot_volume beside the registry record
        return self.root / f"{name}.origin"

    def find_origin(self, name: str) -> str | None:
        """The marketplace ID a bootable volume was made from; None for a blank volume.
        Raises NotFound if there is no such volume."""
        self._read(name)
        try:
            data = json.loads(self._origin(name).read_text())
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise InputError(f"volume {name}: corrupt origin file: {e}") from e
        if not isinstance(data, dict) or not data.get("bootable"):
            return None
        return str(data.get("image_id") or "") or None

    def check_free(self, name: str) -> Volume:
        """Precondition: the volume exists and nobody holds it (no change made)."""
        volume = self._read(name)
        if volume.attached_to:
            raise InvalidState(
                f"volume {name} is attached to {volume.attached_to}",
                hint=f"imagekit volume detach {name}",
            )
        return volume

    def acquire(self, name: str, instance_id: str) -> Volume:
        """Record ``instance_id`` as the holder. Raises InvalidState if held by another."""
        with self._lock():
            volume = self._read(name)
            if volume.attached_to and volume.attached_to != instance_id:
                raise InvalidState(
                    f"volume {name} is attached to {volume.attached_to}",
                    hint=f"imagekit volume detach {name}",
                )
            volume = dataclasses.replace(volume, attached_to=instance_id)
            self._write(volume)
            return volume

    def release(self, name: str, instance_id: str | None = None) -> None:
        with self._lock(), contextlib.suppress(NotFound):
            volume = self._read(name)
            if instance_id is None or volume.attached_to in (instance_id, None):
                self._write(dataclasses.replace(volume, attached_to=None))

    def release_all(self, instance_id: str) -> None:
        for volume in self.list():
            if volume.attached_to == instance_id:
                self.release(volume.name, instance_id)
