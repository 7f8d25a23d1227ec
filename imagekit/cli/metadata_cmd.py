"""``imagekit metadata``: describe an image file as an unsigned metadata entry."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from .._files import atomic_write
from ..entry import entry_to_bytes, entry_to_dict, parse_date
from ..entry.describe import DEFAULT_VALID_DAYS, describe_image
from ..errors import InputError
from ..image.digests import DigestAlgorithm
from ..progress import ProgressBar
from ._app import cli, emit_json, info

# Options holding one text term each: option name -> Entry field.
_TEXT_OPTIONS = {
    "os": "os",
    "os_version": "os_version",
    "os_arch": "os_arch",
    "title": "title",
    "description": "description",
    "tag": "alternative",
    "version": "version",
    "hypervisor": "hypervisor",
    "disks_bus": "disks_bus",
    "creator": "creator",
    "publisher": "publisher",
    "replaces": "replaces",
    "is_replaced_by": "is_replaced_by",
    "deprecated": "deprecated",
    "entry_type": "type",
}


def _whole(option: str, text: str) -> int:
    """A non-negative whole number from an option (range checks are the entry's)."""
    value = text.strip()
    if not (value.isascii() and value.isdigit()):
        raise InputError(f"{option}: {text!r} is not a whole number")
    return int(value)


def _valid_until(text: str) -> datetime:
    value = text.strip()
    if len(value) == len("yyyy-mm-dd"):
        value += "T00:00:00Z"
    return parse_date(value, term="--valid-until")


@cli.command("metadata")
@click.argument("image", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="write the entry here (atomically); default: standard output",
)
@click.option("--json", "as_json", is_flag=True, help="print the entry as JSON on stdout")
@click.option("--os", "os_", metavar="NAME", help="slterms:os (default: unknown, none for a disk)")
@click.option("--os-version", metavar="VERSION", help="slterms:os-version")
@click.option("--os-arch", metavar="ARCH", help="slterms:os-arch (x86_64, i686, ...)")
@click.option("--title", help="dcterms:title")
@click.option("--description", help="dcterms:description")
@click.option(
    "--tag", metavar="TAG", help="dcterms:alternative: the name people follow across rebuilds"
)
@click.option(
    "--location",
    "locations",
    multiple=True,
    metavar="URL",
    help="slterms:location, where the image bytes can be fetched (repeatable)",
)
@click.option(
    "--valid-days",
    metavar="DAYS",
    help=f"dcterms:valid = now + DAYS (default {DEFAULT_VALID_DAYS})",
)
@click.option(
    "--valid-until",
    metavar="DATE",
    help="dcterms:valid as yyyy-mm-dd or yyyy-mm-ddTHH:MM:SSZ (UTC)",
)
@click.option("--kind", metavar="machine|disk", help="slterms:kind (default machine)")
@click.option(
    "--format",
    "disk_format",
    metavar="FORMAT",
    help="dcterms:format (default: from the magic bytes)",
)
@click.option(
    "--compression",
    metavar="gz|bz2|xz|none",
    help="dcterms:compression (default: from the file suffix)",
)
@click.option("--version", metavar="VERSION", help="slterms:version (default 1.0)")
@click.option("--serial-number", metavar="N", help="slterms:serial-number")
@click.option("--hypervisor", metavar="NAME", help="slterms:hypervisor (kvm, ...)")
@click.option("--disks-bus", metavar="BUS", help="slterms:disks-bus (virtio, scsi, ...)")
@click.option(
    "--inbound-port",
    "inbound_ports",
    multiple=True,
    metavar="PORT",
    help="slterms:inbound-port, 0-65535 (repeatable)",
)
@click.option(
    "--outbound-port",
    "outbound_ports",
    multiple=True,
    metavar="PORT",
    help="slterms:outbound-port, 0-65535 (repeatable)",
)
@click.option(
    "--icmp",
    "icmp",
    multiple=True,
    metavar="TYPE",
    help="slterms:icmp, an ICMP type 0-255 (repeatable)",
)
@click.option("--creator", help="dcterms:creator")
@click.option("--publisher", help="dcterms:publisher")
@click.option("--replaces", metavar="ID", help="dcterms:replaces: the entry this one supersedes")
@click.option("--is-replaced-by", metavar="ID", help="dcterms:isReplacedBy")
@click.option(
    "--deprecated",
    metavar="REASON",
    help="slterms:deprecated: mark the image deprecated, with a reason",
)
@click.option("--type", "entry_type", metavar="TYPE", help="dcterms:type (default: the kind)")
@click.option(
    "--algorithm",
    "algorithms",
    multiple=True,
    metavar="ALG",
    help="checksum algorithm: MD5, SHA-1, SHA-256, SHA-512 (repeatable; "
    "default all; SHA-1 is always included, it makes the ID)",
)
def metadata(
    image: Path,
    output: Path | None,
    as_json: bool,
    os_: str | None,
    locations: tuple[str, ...],
    valid_days: str | None,
    valid_until: str | None,
    kind: str | None,
    disk_format: str | None,
    compression: str | None,
    serial_number: str | None,
    inbound_ports: tuple[str, ...],
    outbound_ports: tuple[str, ...],
    icmp: tuple[str, ...],
    algorithms: tuple[str, ...],
    **text: str | None,
) -> None:
    """Describe IMAGE as an unsigned metadata entry (checksums, size, ID, format).

    The image is read once; size and checksums are of the uncompressed bytes (a .gz, .bz2
    or .xz file is decompressed on the fly). The entry is a draft: `imagekit sign` fills
    the endorsement and signs it.

    \b
    Example:
      imagekit metadata debian-12.qcow2 --os debian --os-version 12 --os-arch x86_64 \\
          --tag debian-base --location https://images.example.org/debian-12.qcow2 \\
          --inbound-port 22 -o debian-12.xml
    """
    fields: dict[str, Any] = {}
    text["os"] = os_
    for option, field in _TEXT_OPTIONS.items():
        if text.get(option) is not None:
            fields[field] = text[option]
    fields["locations"] = locations
    fields["inbound_ports"] = tuple(_whole("--inbound-port", p) for p in inbound_ports)
    fields["outbound_ports"] = tuple(_whole("--outbound-port", p) for p in outbound_ports)
    fields["icmp"] = tuple(_whole("--icmp", t) for t in icmp)
    if serial_number is not None:
        fields["serial_number"] = _whole("--serial-number", serial_number)
    if valid_days is not None and valid_until is not None:
        raise InputError("give --valid-days or --valid-until, not both")
    now = datetime.now(UTC).replace(microsecond=0)
    days = DEFAULT_VALID_DAYS
    if valid_days is not None:
        days = _whole("--valid-days", valid_days)
        if days < 1:
            raise InputError("--valid-days: must be at least 1")
    if valid_until is not None:
        fields["valid"] = _valid_until(valid_until)
        if fields["valid"] <= now:
            raise InputError(f"--valid-until: {valid_until} is not in the future")
    chosen = [DigestAlgorithm.parse(a) for a in algorithms] or None

    size = image.stat().st_size if image.is_file() else None
    with ProgressBar(f"hashing {image.name}", size) as bar:
        entry = describe_image(
            image,
            **({"algorithms": chosen} if chosen else {}),
            compression=compression,
            format=disk_format,
            kind=kind,
            now=now,
            valid_days=days,
            progress=bar,
            **fields,
        )
    xml = entry_to_bytes(entry)
    if output is not None:
        atomic_write(output, xml)
        info(f"imagekit: wrote {output} (ID {entry.identifier})")
    if as_json:
        emit_json(entry_to_dict(entry))
    elif output is None:
        click.echo(xml.decode(), nl=False)
