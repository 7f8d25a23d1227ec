"""Machine types: named (CPU, RAM, swap) triples, StratusLab's table, with overrides.

The built-in values are StratusLab's client defaults (``VmManager.getDefaultInstanceTypes``),
in MiB. A site adds its own (OpenStack's flavors) in the config file::

    [types."site.big"]
    cpu = 8
    ram = "16G"
    swap = "2G"

A site type of a built-in name replaces it. ``--cpu``, ``--ram`` and ``--swap`` override a
type's values one by one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InputError, NotFound


@dataclasses.dataclass(frozen=True)
class MachineType:
    name: str
    cpu: int
    ram_mib: int
    swap_mib: int
    source: str = "built-in"  # or the config file that defines it

    def __post_init__(self) -> None:
        if self.cpu < 1 or self.cpu > 64:
            raise InputError(f"machine {self.name}: cpu must be 1..64, not {self.cpu}")
        if self.ram_mib < 32:
            raise InputError(f"machine {self.name}: ram must be at least 32 MiB")
        if self.swap_mib < 0:
            raise InputError(f"machine {self.name}: swap cannot be negative")

    def to_dict(self) -> dict[str, object]:
        d = dataclasses.asdict(self)
        del d["source"]  # where a type came from is not part of an instance's record
        return d

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> MachineType:
        return cls(
            name=str(data["name"]),
            cpu=int(data["cpu"]),  # type: ignore[call-overload]
            ram_mib=int(data["ram_mib"]),  # type: ignore[call-overload]
            swap_mib=int(data["swap_mib"]),  # type: ignore[call-overload]
        )


DEFAULT_TYPE = "m1.small"

MACHINE_TYPES: dict[str, MachineType] = {
    t.name: t
    for t in (
        MachineType("t1.micro", 1, 512, 512),
        MachineType("m1.small", 1, 1536, 1536),
        MachineType("m1.medium", 1, 3072, 3072),
        MachineType("m1.large", 2, 6144, 6144),
        MachineType("m1.xlarge", 4, 8192, 8192),
        MachineType("c1.medium", 2, 1536, 1536),
        MachineType("c1.xlarge", 4, 6144, 6144),
    )
}


def parse_size_mib(text: str | int) -> int:
    """``512``, ``512M``, ``1.5G``, ``2GiB`` -> MiB. Plain numbers are MiB."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    if not isinstance(text, str):
        raise InputError(f"not a size: {text!r} (use e.g. 512M or 2G)")
    s = text.strip().upper().removesuffix("IB").removesuffix("B")
    factor = 1.0
    if s.endswith("G"):
        factor, s = 1024.0, s[:-1]
    elif s.endswith("M"):
        s = s[:-1]
    elif s.endswith("T"):
        factor, s = 1024.0 * 1024, s[:-1]
    try:
        value = float(s) * factor
    except ValueError as e:
        raise InputError(f"not a size: {text!r} (use e.g. 512M or 2G)") from e
    if value < 0:
        raise InputError(f"size cannot be negative: {text!r}")
    return int(value)


def site_types(
    table: Mapping[str, Mapping[str, Any]] | None, source: Path | str | None = None
) -> dict[str, MachineType]:
    """The built-in types plus the site's (the ``types`` setting), site ones last.

    Raises InputError for a site type without cpu or ram, with an unknown key or a bad size.
    """
    out = dict(MACHINE_TYPES)
    where = str(source or "config")
    for name, spec in (table or {}).items():
        unknown = set(spec) - {"cpu", "ram", "swap"}
        if unknown:
            raise InputError(
                f"{where}: type {name}: unknown key {sorted(unknown)[0]!r} (cpu, ram, swap)"
            )
        if "cpu" not in spec or "ram" not in spec:
            raise InputError(f"{where}: type {name} needs cpu and ram")
        cpu = spec["cpu"]
        if not isinstance(cpu, int) or isinstance(cpu, bool):
            raise InputError(f"{where}: type {name}: cpu must be a whole number")
        out[name] = MachineType(
            name,
            cpu,
            parse_size_mib(spec["ram"]),
            parse_size_mib(spec.get("swap", 0)),
            source=where,
        )
    return out


def machine_type(
    name: str = DEFAULT_TYPE,
    *,
    cpu: int | None = None,
    ram: str | int | None = None,
    swap: str | int | None = None,
    types: Mapping[str, MachineType] | None = None,
) -> MachineType:
    """The named type (of ``types``, default the built-in ones) with any overrides applied.
    Raises NotFound for an unknown name."""
    table = MACHINE_TYPES if types is None else types
    try:
        base = table[name]
    except KeyError:
        known = ", ".join(table)
        raise NotFound(f"unknown machine type {name!r}", hint=f"known types: {known}") from None
    if cpu is None and ram is None and swap is None:
        return base
    return MachineType(
        name=base.name + "+custom",
        cpu=base.cpu if cpu is None else cpu,
        ram_mib=base.ram_mib if ram is None else parse_size_mib(ram),
        swap_mib=base.swap_mib if swap is None else parse_size_mib(swap),
    )
