"""What to build: a ``Recipe`` from command-line options or a YAML file, validated when made.

A recipe names a base (``debian:bookworm``, an existing raw/qcow2 image, or a Marketplace
ID), packages to install, files to place and scripts to run (in order), the disk size and
format, and the descriptive fields that go into the image's metadata entry.

YAML form (``imagekit build -f appliance.yaml``); relative paths are relative to the file::

    base: debian:bookworm
    packages: [nginx, curl]
    files:
      /etc/motd: ./motd            # or a list of {dest, src, mode}
    scripts: [setup.sh]
    size: 4G
    format: qcow2
    title: Web appliance
    description: nginx on Debian
    version: "1.0"
    tag: web
    os: debian                     # default from the base
    os-version: "12"
    os-arch: x86_64
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from ..errors import InputError

# Debian releases the builder knows, with their version numbers for the metadata entry.
DEBIAN_RELEASES = {"bullseye": "11", "bookworm": "12", "trixie": "13"}
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")  # Debian policy 5.6.1
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
MIN_SIZE = 1 << 30  # a Debian root with cloud-init and grub does not fit in less
DEFAULT_SIZE = 2 << 30
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{27}$")


class OutputFormat(StrEnum):
    QCOW2 = "qcow2"
    RAW = "raw"


class PartitionTable(StrEnum):
    MBR = "mbr"
    GPT = "gpt"


class BaseKind(StrEnum):
    DISTRO = "distro"  # bootstrapped from packages (debootstrap via diskimage-builder)
    IMAGE = "image"  # an existing raw/qcow2 file on disk
    MARKETPLACE = "marketplace"  # a Marketplace ID, resolved and verified like a launch


@dataclasses.dataclass(frozen=True)
class FileSpec:
    """One file to place in the image: ``dest`` (absolute, in the guest) from ``src``."""

    dest: str
    src: Path
    mode: int | None = None

    def __post_init__(self) -> None:
        dest = PurePosixPath(self.dest)
        if not dest.is_absolute() or ".." in dest.parts or str(dest) == "/":
            raise InputError(f"file destination must be an absolute path: {self.dest!r}")
        if self.mode is not None and not 0 <= self.mode <= 0o7777:
            raise InputError(f"file mode out of range for {self.dest}: {self.mode:o}")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A validated build recipe. Build with ``Recipe.make`` / ``from_yaml``; never mutated."""

    base: str
    packages: tuple[str, ...] = ()
    files: tuple[FileSpec, ...] = ()
    scripts: tuple[Path, ...] = ()
    size: int | None = None
    format: OutputFormat = OutputFormat.QCOW2
    partition_table: PartitionTable = PartitionTable.MBR
    title: str | None = None
    description: str | None = None
    version: str | None = None
    tag: str | None = None
    creator: str | None = None
    os: str | None = None
    os_version: str | None = None
    os_arch: str = "x86_64"

    def __post_init__(self) -> None:
        if not self.base:
            raise InputError("a base is required (e.g. debian:bookworm, an image file, an ID)")
        for pkg in self.packages:
            if not _PACKAGE_RE.match(pkg):
                raise InputError(f"not a Debian package name: {pkg!r}")
        if len(set(self.packages)) != len(self.packages):
            raise InputError("a package is listed twice")
        dests = [f.dest for f in self.files]
        if len(set(dests)) != len(dests):
            raise InputError("two files have the same destination")
        for f in self.files:
            if not f.src.is_file():
                raise InputError(f"file to copy not found: {f.src}")
        for script in self.scripts:
            if not script.is_file():
                raise InputError(f"script not found: {script}")
        if self.size is not None and self.size < MIN_SIZE:
            raise InputError(f"size {self.size} bytes is too small; at least 1G")
        if self.os_arch not in ("x86_64", "amd64"):
            raise InputError(f"only x86_64 images can be built, not {self.os_arch!r}")
        if self.base_kind is BaseKind.DISTRO:
            distro, _, release = self.base.partition(":")
            if distro != "debian" or release not in DEBIAN_RELEASES:
                raise InputError(
                    f"unknown base {self.base!r}",
                    hint="use debian:"
                    + "|debian:".join(DEBIAN_RELEASES)
                    + ", an image file or a Marketplace ID",
                )
        if self.base_kind is BaseKind.IMAGE and not Path(self.base).is_file():
            raise InputError(f"base image not found: {self.base}")

    # --- the base -------------------------------------------------------------------------

    @property
    def base_kind(self) -> BaseKind:
        if re.fullmatch(r"[a-z]+:[a-z0-9.]+", self.base):
            return BaseKind.DISTRO
        if _ID_RE.match(self.base) and not Path(self.base).exists():
            return BaseKind.MARKETPLACE
        return BaseKind.IMAGE

    @property
    def release(self) -> str | None:
        """The Debian release of a distro base (``bookworm``), else None."""
        if self.base_kind is BaseKind.DISTRO:
            return self.base.partition(":")[2]
        return None

    @property
    def entry_os(self) -> tuple[str, str, str]:
        """(os, os-version, os-arch) for the metadata entry, defaulted from a distro base."""
        release = self.release
        os_ = self.os or ("debian" if release else "linux")
        version = self.os_version or (DEBIAN_RELEASES[release] if release else "unknown")
        return os_, version, "x86_64" if self.os_arch == "amd64" else self.os_arch

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def make(
        cls,
        *,
        base: str,
        packages: Iterable[str] = (),
        files: Iterable[str | FileSpec] = (),
        scripts: Iterable[str | Path] = (),
        size: str | int | None = None,
        format: str | None = None,
        partition_table: str | None = None,
        relative_to: Path | None = None,
        **fields: Any,
    ) -> Recipe:
        """A recipe from loose values (CLI options): ``files`` as ``DEST=SRC`` strings."""
        rel = relative_to or Path.cwd()
        specs = tuple(f if isinstance(f, FileSpec) else parse_file_option(f, rel) for f in files)
        base = str(base).strip()
        if base and not base.startswith("debian:") and (rel / base).exists():
            base = str((rel / base).resolve())
        try:
            fmt = OutputFormat(format or "qcow2")
        except ValueError:
            raise InputError(f"format must be qcow2 or raw, not {format!r}") from None
        try:
            table = PartitionTable(partition_table or "mbr")
        except ValueError:
            raise InputError(
                f"partition table must be mbr or gpt, not {partition_table!r}"
            ) from None
        unknown = set(fields) - _TEXT_FIELDS
        if unknown:
            raise InputError(f"unknown recipe field(s): {', '.join(sorted(unknown))}")
        text: dict[str, Any] = {k: (None if v is None else str(v)) for k, v in fields.items()}
        if text.get("os_arch") is None:
            text.pop("os_arch", None)
        return cls(
            base=base,
            packages=tuple(str(p).strip() for p in packages),
            files=specs,
            scripts=tuple((rel / Path(s)).resolve() for s in scripts),
            size=parse_size(size) if size is not None else None,
            format=fmt,
            partition_table=table,
            **text,
        )

    @classmethod
    def from_yaml(cls, path: Path, **overrides: Any) -> Recipe:
        """Read a recipe file; ``overrides`` (CLI options that were given) win over it."""
        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read recipe {path}: {e}") from e
        except yaml.YAMLError as e:
            raise InputError(f"recipe {path} is not valid YAML: {e}") from e
        if not isinstance(doc, Mapping):
            raise InputError(f"recipe {path} must be a mapping of fields")
        return cls.from_dict(doc, relative_to=path.parent.resolve(), **overrides)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], *, relative_to: Path, **overrides: Any) -> Recipe:
        values: dict[str, Any] = {}
        for key, value in doc.items():
            name = str(key).replace("-", "_")
            if name == "partitions":
                name = "partition_table"
            values[name] = value
        values.update({k: v for k, v in overrides.items() if v is not None and v != () and v != []})
        files = values.pop("files", None) or []
        specs: list[str | FileSpec] = []
        if isinstance(files, Mapping):
            specs = [f"{dest}={src}" for dest, src in files.items()]
        elif isinstance(files, list | tuple):
            for item in files:
                if isinstance(item, Mapping):
                    specs.append(_file_from_mapping(item, relative_to))
                else:
                    specs.append(str(item))
        else:
            raise InputError("recipe 'files' must be a mapping DEST: SRC or a list")
        for list_field in ("packages", "scripts"):
            value = values.get(list_field) or ()
            if isinstance(value, str) or not isinstance(value, Iterable):
                raise InputError(f"recipe {list_field!r} must be a list")
            values[list_field] = [str(v) for v in value]
        if "base" not in values:
            raise InputError("recipe has no 'base'")
        return cls.make(files=specs, relative_to=relative_to, **values)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain data (what goes into the metadata entry's description)."""
        out: dict[str, Any] = {"base": self.base}
        if self.packages:
            out["packages"] = list(self.packages)
        if self.files:
            out["files"] = {f.dest: f.src.name for f in self.files}
        if self.scripts:
            out["scripts"] = [s.name for s in self.scripts]
        out["size"] = self.size or DEFAULT_SIZE
        out["format"] = str(self.format)
        return out

    def summary(self) -> str:
        """One line naming what the image was built from, for the entry's description."""
        return "imagekit build " + json.dumps(self.to_dict(), sort_keys=True)

    def content_digest(self) -> str:
        """SHA-256 over everything that shapes the image: paths by content, not by name."""
        h = hashlib.sha256()
        h.update(json.dumps(dataclasses.asdict(self), sort_keys=True, default=str).encode())
        for f in self.files:
            h.update(f.src.read_bytes())
        for s in self.scripts:
            h.update(s.read_bytes())
        return h.hexdigest()


_TEXT_FIELDS = {
    "title",
    "description",
    "version",
    "tag",
    "creator",
    "os",
    "os_version",
    "os_arch",
}


def _file_from_mapping(item: Mapping[str, Any], rel: Path) -> FileSpec:
    try:
        dest, src = str(item["dest"]), Path(str(item["src"]))
    except KeyError as e:
        raise InputError(f"recipe file entry lacks {e.args[0]!r}") from None
    mode = item.get("mode")
    if isinstance(mode, str):
        mode = int(mode, 8)
    return FileSpec(dest, (rel / src).resolve(), mode)


def parse_file_option(text: str, relative_to: Path) -> FileSpec:
    """``/etc/motd=./motd`` (or ``/etc/motd=./motd:0644``) to a FileSpec."""
    dest, sep, src = text.partition("=")
    if not sep or not dest or not src:
        raise InputError(f"--file wants DEST=SRC, got {text!r}")
    mode: int | None = None
    head, colon, tail = src.rpartition(":")
    if colon and re.fullmatch(r"[0-7]{3,4}", tail):
        src, mode = head, int(tail, 8)
    return FileSpec(dest, (relative_to / src).resolve(), mode)


def parse_size(value: str | int) -> int:
    """``4G``, ``512M``, ``4GiB`` or a byte count to bytes."""
    if isinstance(value, int):
        return value
    m = _SIZE_RE.match(str(value))
    if not m:
        raise InputError(f"not a size: {value!r} (e.g. 4G, 2048M)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])
