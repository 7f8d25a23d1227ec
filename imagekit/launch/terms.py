"""The entry's hardware terms, read before qemu starts: which hypervisor the image was made
for, which bus its disks expect, and whether a Linux swap disk means anything to it."""

from __future__ import annotations

from ..entry import Entry
from ..errors import InputError
from .instances import DiskBus

# slterms:hypervisor values qemu can stand in for (StratusLab used "kvm"; others wrote
# "qemu" or "kvm/qemu"); an image built for another hypervisor (xen, vmware, hyper-v,
# virtualbox) may lack drivers for what qemu emulates, so it is refused, not guessed at
_HYPERVISORS = {"kvm", "qemu", "kvm/qemu", "qemu/kvm", "qemu-kvm", "tcg"}
_NO_SWAP_OS = {"windows", "none"}  # mkswap's format means nothing to these


def check_hypervisor(entry: Entry) -> None:
    """Raise InputError if the entry names a hypervisor other than qemu/KVM."""
    hv = (entry.hypervisor or "").strip().lower()
    if hv and hv not in _HYPERVISORS:
        raise InputError(
            f"entry {entry.identifier} is made for hypervisor {entry.hypervisor!r}"
            "; imagekit runs qemu (kvm or tcg)",
            hint="launch an image whose hypervisor is kvm or qemu",
        )


def disk_bus(entry: Entry) -> DiskBus:
    """The entry's ``disks-bus`` (virtio when absent). Raises InputError for another bus."""
    text = (entry.disks_bus or "virtio").strip().lower()
    try:
        return DiskBus(text)
    except ValueError:
        raise InputError(
            f"entry {entry.identifier}: disks-bus {entry.disks_bus!r} is not one "
            "of ide, scsi, virtio"
        ) from None


def can_use_swap(entry: Entry) -> bool:
    """Whether a Linux swap disk means anything to the image (its ``os``)."""
    return (entry.os or "").strip().lower() not in _NO_SWAP_OS
