"""``imagekit cdrom`` (read-only data disks) and ``imagekit context`` (context media)."""

from __future__ import annotations

from pathlib import Path

import click

from ..context import ContextFile, ContextScheme, ContextSpec, make_context_iso, parse_ssh_keys
from ..context._spec import ContextError, parse_variable
from ..isofs import IsoError, check_label, extract_iso, list_iso, make_iso
from ..progress import ProgressBar
from ._app import cli, emit_json, info


def _tree_bytes(src: Path) -> int:
    total = 0
    for p in src.rglob("*"):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


@cli.command("cdrom")
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@click.option(
    "--label", "-L", help="volume label: A-Z 0-9 _ (a-z upper-cased), ≤16 (32 with --no-joliet)"
)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="the ISO to write")
@click.option("--no-joliet", is_flag=True, help="Rock Ridge only (labels up to 32 characters)")
@click.option(
    "--list",
    "list_path",
    type=click.Path(path_type=Path),
    metavar="ISO",
    help="list an ISO's files (name, size, mode)",
)
@click.option(
    "--extract",
    nargs=2,
    type=click.Path(path_type=Path),
    metavar="ISO DIR",
    help="extract an ISO into DIR (refuses names or symlinks leaving DIR; drops "
    "setuid/setgid/sticky and world-writable bits)",
)
@click.option(
    "--max-bytes",
    type=click.IntRange(0),
    metavar="N",
    help="with --extract: most bytes to write (default: the ISO's size)",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def cdrom(
    directory: Path | None,
    label: str | None,
    output: Path | None,
    no_joliet: bool,
    list_path: Path | None,
    extract: tuple[Path, Path] | None,
    max_bytes: int | None,
    as_json: bool,
) -> None:
    """Make a read-only data disk (ISO 9660 + Rock Ridge + Joliet) of DIRECTORY, or list or
    extract one. The same tree always gives the same bytes (SOURCE_DATE_EPOCH or a fixed
    date), hence the same Marketplace ID, printed on stdout.

    \b
    Example:
      imagekit cdrom ./flora-and-fauna --label CDROM -o flora.iso
      imagekit cdrom --list flora.iso
      imagekit cdrom --extract flora.iso ./out
    """
    modes = sum(x is not None for x in (directory, list_path, extract))
    if modes != 1:
        raise click.UsageError("give exactly one of DIRECTORY, --list ISO or --extract ISO DIR")
    if list_path is not None:
        members = list_iso(list_path)
        if as_json:
            emit_json([m.to_dict() for m in members])
            return
        for m in members:
            kind = {"dir": "d", "file": "-", "symlink": "l"}[m.kind]
            arrow = f" -> {m.target}" if m.kind == "symlink" else ""
            click.echo(f"{kind}{m.mode:04o} {m.size:>12} {m.path}{arrow}")
        return
    if extract is not None:
        iso_path, dest = extract
        members = extract_iso(iso_path, dest, max_bytes=max_bytes)
        if as_json:
            emit_json({"extracted": len(members), "directory": str(dest)})
        else:
            info(f"extracted {len(members)} entries into {dest}")
        return
    assert directory is not None
    if not label or output is None:
        raise click.UsageError("building an ISO needs --label and -o/--output")
    if not directory.is_dir():
        raise IsoError(f"{directory} is not a directory")
    check_label(label, joliet=not no_joliet)
    from ..image.digests import DigestAlgorithm, MultiHasher
    from ..image.identifier import sha1_to_id

    # hashed in threads while pycdlib writes: the ISO is never read back
    with MultiHasher([DigestAlgorithm.SHA1, DigestAlgorithm.SHA256]) as hasher:
        with ProgressBar("writing ISO", _tree_bytes(directory)) as bar:
            make_iso(
                directory,
                output,
                label=label,
                joliet=not no_joliet,
                progress=bar,
                sink=hasher.update,
            )
        digests = hasher.finish()
    sha1 = digests.values[DigestAlgorithm.SHA1]
    identifier = sha1_to_id(sha1)
    if as_json:
        emit_json(
            {
                "path": str(output),
                "label": check_label(label, joliet=not no_joliet),
                "bytes": digests.size,
                "identifier": identifier,
                "sha1": sha1,
                "sha256": digests.values[DigestAlgorithm.SHA256],
            }
        )
        return
    info(f"wrote {output} ({digests.size} bytes)")
    click.echo(identifier)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ContextError(f"{what}: cannot read {path}: {e.strerror}") from e


@cli.command("context")
@click.option(
    "--scheme",
    type=click.Choice([s.value for s in ContextScheme]),
    default=ContextScheme.NOCLOUD.value,
    show_default=True,
    help="who reads it",
)
@click.option(
    "--ssh-key",
    "ssh_keys",
    multiple=True,
    type=click.Path(path_type=Path),
    help="public key file (repeatable; authorized_keys style files allowed)",
)
@click.option("--hostname", help="guest host name")
@click.option("--instance-id", help="instance id (default: a new UUID)")
@click.option(
    "--user-data",
    type=click.Path(path_type=Path),
    help="script (#!), #cloud-config, #include or MIME multipart",
)
@click.option("--var", "variables", multiple=True, metavar="K=V", help="extra variable")
@click.option(
    "--file", "files", multiple=True, metavar="DST=SRC", help="put local SRC at DST in the guest"
)
@click.option(
    "--network-config",
    type=click.Path(path_type=Path),
    help="nocloud: YAML v1/v2; configdrive: network_data.json",
)
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def context(
    scheme: str,
    ssh_keys: tuple[Path, ...],
    hostname: str | None,
    instance_id: str | None,
    user_data: Path | None,
    variables: tuple[str, ...],
    files: tuple[str, ...],
    network_config: Path | None,
    output: Path,
    as_json: bool,
) -> None:
    """Make a contextualization ISO: ssh keys, host name, user data, variables and files
    for cloud-init (nocloud, configdrive), OpenNebula or StratusLab guests.

    \b
    Example:
      imagekit context --scheme nocloud --ssh-key ~/.ssh/id_ed25519.pub \\
          --hostname web1 --user-data setup.sh -o seed.iso
    """
    keys: list[str] = []
    for path in ssh_keys:
        keys += parse_ssh_keys(_read(path, "--ssh-key").decode("utf-8", "replace"))
    pairs: dict[str, str] = {}
    for text in variables:
        name, value = parse_variable(text)
        if name in pairs:
            raise ContextError(f"variable {name} given twice")
        pairs[name] = value

    def read(path: Path | None, what: str) -> bytes | None:
        return None if path is None else _read(path, what)

    spec = ContextSpec.build(
        instance_id=instance_id,
        hostname=hostname,
        ssh_keys=keys,
        user_data=read(user_data, "--user-data"),
        variables=pairs,
        files=[ContextFile.from_option(f) for f in files],
        network_config=read(network_config, "--network-config"),
    )
    make_context_iso(scheme, spec, output)
    if as_json:
        emit_json({"path": str(output), "scheme": scheme, "instance_id": spec.instance_id})
    else:
        info(f"wrote {output} ({scheme}, instance id {spec.instance_id})")
