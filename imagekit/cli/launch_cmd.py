"""``imagekit launch | types | volume | cache | policy``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from ..context import ContextScheme
from ..errors import InputError
from ._app import cli, emit_json, info, settings, state
from ._cloud import cloud_option
from ._options import setting_option


def _read(path: Path, what: str) -> bytes:
    try:
        return path.expanduser().read_bytes()
    except OSError as e:
        raise InputError(f"{what} {path}: {e.strerror}") from e


def _machine_types(s: Any) -> Any:
    """Built-in and site machine types; the site's come from the config file in use."""
    from ..launch.machines import site_types
    from ..settings import config_path

    return site_types(s.types, state().config or config_path())


_common = [
    setting_option("marketplace"),
    setting_option("trust"),
    setting_option("policy", "policy_path"),
]


def common(f: Any) -> Any:
    for option in reversed(_common):
        f = option(f)
    return f


@cli.command("launch")
@click.argument("image", required=False, default="")
@click.option("--name", metavar="NAME", help="name the instance (with --count: NAME-1..N)")
@click.option(
    "--count",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="launch N instances over one cached image",
)
@click.option(
    "--entry",
    "entry_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="a signed entry file instead of a marketplace ID (verified the same way)",
)
@click.option(
    "--image",
    "image_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="with --entry: the image file (else fetched from the entry's locations)",
)
@click.option("--type", "type_", default="m1.small", show_default=True, help="machine type")
@click.option("--cpu", type=int, help="override the type's CPU count")
@click.option("--ram", help="override the type's memory (e.g. 2G, 512M)")
@click.option("--swap", help="override the type's swap disk (0 for none)")
@click.option(
    "--ssh-key",
    "ssh_keys",
    multiple=True,
    type=click.Path(path_type=Path),
    help="public key file (repeatable; default: the ssh_key setting, else "
    "~/.ssh/id_ed25519.pub, id_ecdsa.pub or id_rsa.pub)",
)
@click.option(
    "--port",
    "ports",
    multiple=True,
    metavar="[HOST:]GUEST",
    help="forward a guest TCP port (repeatable; host side on port_address, "
    "loopback by default; no HOST: a free port)",
)
@click.option(
    "--no-entry-ports", is_flag=True, default=False, help="do not forward the entry's inbound ports"
)
@click.option("--user-data", type=click.Path(path_type=Path), help="script or cloud-config")
@click.option("--hostname", help="guest host name (default: the instance name)")
@click.option("--var", "variables", multiple=True, metavar="K=V", help="context variable")
@click.option("--file", "files", multiple=True, metavar="DST=SRC", help="file for the guest")
@click.option(
    "--context-scheme",
    default="nocloud",
    show_default=True,
    type=click.Choice([s.value for s in ContextScheme]),
)
@click.option(
    "--readonly-disk",
    "readonly",
    multiple=True,
    metavar="ID|ENDORSER:TAG",
    help="verified data disk from the marketplace, attached read-only",
)
@click.option(
    "--volatile-disk",
    "volatile",
    multiple=True,
    type=int,
    metavar="GB",
    help="blank disk deleted on kill",
)
@click.option(
    "--persistent-disk",
    "persistent",
    multiple=True,
    metavar="NAME",
    help="persistent volume (imagekit volume create)",
)
@click.option(
    "--persistent",
    "persistent_root",
    is_flag=True,
    default=False,
    help="root disk kept across stop/start (a standalone copy of the image)",
)
@click.option("--disk-size", metavar="SIZE", help="grow the root disk to SIZE (e.g. 20G)")
@click.option(
    "--boot-volume",
    metavar="NAME",
    help="boot from this volume (volume create --from-image) instead of an image",
)
@setting_option("accel")
@setting_option("allow_private_locations")
@click.option(
    "--endorser",
    metavar="EMAIL",
    help="use this endorser's entry of the ID (when endorsers disagree on its bytes)",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@cloud_option
@click.option("--key-name", help="with --cloud: an existing key pair instead of --ssh-key")
@common
def launch_cmd(
    image: str,
    type_: str,
    cpu: int | None,
    ram: str | None,
    swap: str | None,
    ssh_keys: tuple[Path, ...],
    user_data: Path | None,
    hostname: str | None,
    variables: tuple[str, ...],
    files: tuple[str, ...],
    context_scheme: str,
    readonly: tuple[str, ...],
    volatile: tuple[int, ...],
    persistent: tuple[str, ...],
    accel: str | None,
    allow_private_locations: bool | None,
    as_json: bool,
    marketplace: str | None,
    trust: str | None,
    policy_path: Path | None,
    persistent_root: bool = False,
    disk_size: str | None = None,
    boot_volume: str | None = None,
    endorser: str | None = None,
    name: str | None = None,
    count: int = 1,
    entry_file: Path | None = None,
    image_file: Path | None = None,
    ports: tuple[str, ...] = (),
    no_entry_ports: bool = False,
    cloud: str | None = None,
    key_name: str | None = None,
) -> None:
    """Run an appliance by its Marketplace ID (or endorser:tag) in a qemu VM.

    The entry is verified locally against your trust store and site policy, the image is
    downloaded (or taken from the cache), checked against the signed digests, and booted
    on a copy-on-write overlay with a context ISO. Prints the instance ID (one a line).
    Your ssh key goes in unless you give another (--ssh-key); the entry's inbound ports
    are forwarded to free loopback ports (see: imagekit instances NAME). With --entry FILE
    a signed entry you hold (say, from imagekit snapshot and sign) is launched without a
    marketplace, under the same verification, trust, policy and rollback rules. With
    --boot-volume NAME (and no IMAGE) the VM boots from that volume instead: what it
    writes there outlives kill, and the next launch from the volume finds it.

    \b
    Examples:
      imagekit launch images@site.example.org:debian-base --name web1 --port 8080:80
      imagekit launch BtSKdXa2SvHlSVTvgFgivIYDq-- --count 3 --name worker
      imagekit launch --entry web1-v2.qcow2.xml --image web1-v2.qcow2 --name web2
      imagekit launch BtSKdXa2SvHlSVTvgFgivIYDq-- --type m1.small \\
          --readonly-disk GPAUQFkojP5dMQJNdJ4qD_62mCo --volatile-disk 2 --user-data setup.sh
      imagekit launch --boot-volume web-root --type m1.small
      imagekit launch --cloud mysite me@example.org:web --name web1 --type m1.small
    """
    from ..context import ContextFile, parse_variable
    from ..launch.launcher import LaunchRequest, execute_all, plan_launches
    from ..launch.machines import machine_type, parse_size_mib
    from ..launch.ports import parse_port
    from ..launch.sshkeys import find_default_ssh_key, read_ssh_keys
    from ..progress import ProgressBar

    s = settings(
        marketplace=marketplace,
        trust=trust,
        policy=policy_path,
        accel=accel,
        allow_private_locations=allow_private_locations,
    )
    if image and entry_file:
        raise InputError("give either IMAGE or --entry FILE")
    keys: list[str] = []
    for path in ssh_keys:
        keys += read_ssh_keys(path)
    default = None if ssh_keys else find_default_ssh_key(s)
    if default is not None:
        keys = read_ssh_keys(default, what="ssh key")
    pairs = dict(parse_variable(v) for v in variables)
    if cloud:
        from . import cloud_cmd

        cloud_cmd.refuse_local_options(
            swap=swap,
            files=files,
            volatile=volatile,
            persistent=persistent,
            persistent_root=persistent_root,
            disk_size=disk_size,
            boot_volume=boot_volume,
            hostname=hostname,
            context_scheme=context_scheme,
            accel=accel,
            count=count if count != 1 else None,
            entry_file=entry_file,
            image_file=image_file,
            ports=ports,
            no_entry_ports=no_entry_ports,
        )
        return cloud_cmd.launch(
            cloud,
            image=image,
            name=name,
            type_=type_,
            cpu=cpu,
            ram=ram,
            ssh_keys=keys,
            key_name=key_name,
            variables=pairs,
            user_data=_read(user_data, "--user-data") if user_data else None,
            readonly=readonly,
            as_json=as_json,
            s=s,
            endorser=endorser,
        )
    if key_name:
        raise InputError("--key-name goes with --cloud")
    types = _machine_types(s)
    request = LaunchRequest(
        image=image if not entry_file else str(entry_file),
        machine=machine_type(type_, cpu=cpu, ram=ram, swap=swap, types=types),
        ssh_keys=tuple(keys),
        user_data=_read(user_data, "--user-data") if user_data else None,
        readonly_disks=readonly,
        volatile_disks=volatile,
        persistent_disks=persistent,
        context_scheme=context_scheme,
        hostname=hostname,
        variables=pairs,
        files=tuple(ContextFile.from_option(f) for f in files),
        persistent=persistent_root,
        disk_size_mib=parse_size_mib(disk_size) if disk_size else None,
        boot_volume=boot_volume,
        endorser=endorser,
        name=name or "",
        ports=tuple(parse_port(p) for p in ports),
        entry_ports=not no_entry_ports,
        entry_xml=_read(entry_file, "--entry") if entry_file else None,
        image_file=image_file,
    )
    plans = plan_launches(request, s, count=count)
    if default is not None:
        info(f"ssh key: {default}")
    elif not keys:
        # after the checks: a refused launch says only why it was refused
        click.echo(
            "imagekit: warning: no ssh key injected (no --ssh-key, no ssh_key "
            "setting, no ~/.ssh/id_*.pub): imagekit ssh will not get in",
            err=True,
        )
    bars: list[ProgressBar] = []

    def progress(label: str, total: int) -> Any:
        bar = ProgressBar(f"fetch {label[:12]}", total)
        bar.__enter__()
        bars.append(bar)
        return bar

    try:
        launched = execute_all(
            plans, s, progress=progress, on_state=lambda i: info(f"{i.label}: {i.state}")
        )
    finally:
        for bar in bars:
            bar.__exit__(None, None, None)
    if as_json:
        if count == 1:
            emit_json(launched[0].to_dict())
        else:
            emit_json([i.to_dict() for i in launched])
        return
    for inst in launched:
        click.echo(inst.id)
        forwards = "".join(f", {p}" for p in inst.ports)
        info(
            f"{inst.label}: ssh: imagekit ssh {inst.label}  (127.0.0.1 port "
            f"{inst.ssh_port}{forwards}); console: imagekit console {inst.label}"
        )


@cli.command("types")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def types_cmd(as_json: bool) -> None:
    """List machine types (CPU, memory, swap in MiB): the built-in ones and the site's own
    from the config file ([types.NAME] cpu, ram, swap), each marked with where it comes from.

    \b
    Example:
      imagekit types
    """
    from ..launch.machines import DEFAULT_TYPE

    s = settings()
    types = _machine_types(s)
    if as_json:
        emit_json([dict(t.to_dict(), source=t.source) for t in types.values()])
        return
    click.echo(f"  {'TYPE':<12} {'CPU':>4} {'RAM':>8} {'SWAP':>8}  SOURCE")
    for t in types.values():
        flag = "*" if t.name == DEFAULT_TYPE else " "
        click.echo(f"{flag} {t.name:<12} {t.cpu:>4} {t.ram_mib:>7}M {t.swap_mib:>7}M  {t.source}")


# --- volumes ----------------------------------------------------------------------------


def _volumes() -> Any:
    from ..launch.volumes import VolumeStore

    return VolumeStore(settings().state_dir)


@cli.group("volume")
def volume_group() -> None:
    """Persistent disks: qcow2 volumes attached to one VM at a time.

    \b
    Example:
      imagekit volume create data 10 && imagekit launch ID --persistent-disk data
      imagekit volume create --from-image ID --name web-root && \\
          imagekit launch --boot-volume web-root
    """


@volume_group.command("create")
@click.argument("name", required=False)
@click.argument("size_gb", type=int, required=False)
@click.option(
    "--from-image",
    "reference",
    metavar="ID|ENDORSER:TAG",
    help="a bootable volume: a copy of this verified image",
)
@click.option("--name", "name_option", metavar="NAME", help="the volume's name")
@click.option("--size", metavar="SIZE", help="with --from-image: grow the disk to SIZE (e.g. 20G)")
@setting_option("allow_private_locations")
@common
def volume_create(
    name: str | None,
    size_gb: int | None,
    reference: str | None,
    name_option: str | None,
    size: str | None,
    allow_private_locations: bool | None,
    marketplace: str | None,
    trust: str | None,
    policy_path: Path | None,
) -> None:
    """Create a blank volume of SIZE_GB gigabytes, or a bootable one from an image.

    --from-image resolves, verifies and policy-checks the image as launch does, fetches it
    through the cache and copies it into the volume (Downloading, then Available); boot
    from it with launch --boot-volume NAME.

    \b
    Example:
      imagekit volume create data 10
      imagekit volume create --from-image BtSKdXa2SvHlSVTvgFgivIYDq-- --name web-root --size 20G
    """
    if name and name_option and name != name_option:
        raise InputError(f"two names given: {name!r} and --name {name_option!r}")
    name = name or name_option
    if not name:
        raise InputError("give the volume a name (--name NAME)")
    if reference is None:
        if size is not None:
            raise InputError("--size goes with --from-image; a blank volume takes SIZE_GB")
        if size_gb is None:
            raise InputError(
                "give the size in GB (imagekit volume create NAME SIZE_GB) or --from-image ID"
            )
        v = _volumes().create(name, size_gb)
        click.echo(v.name)
        return
    if size_gb is not None:
        raise InputError("a volume made --from-image takes --size, not SIZE_GB")
    from ..launch.lifecycle import create_boot_volume
    from ..launch.machines import parse_size_mib
    from ..progress import ProgressBar

    s = settings(
        marketplace=marketplace,
        trust=trust,
        policy=policy_path,
        allow_private_locations=allow_private_locations,
    )
    size_mib = parse_size_mib(size) if size else None
    with ProgressBar(f"fetch {name[:12]}", None) as bar:
        v = create_boot_volume(
            s,
            name,
            reference,
            size_mib=size_mib,
            progress=bar,
            on_state=lambda state: info(f"{name}: {state}"),
        )
    click.echo(v.name)


@volume_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def volume_list(as_json: bool) -> None:
    """List volumes and who holds them.

    \b
    Example:
      imagekit volume list
    """
    items = _volumes().list()
    if as_json:
        emit_json(
            [
                {
                    "name": v.name,
                    "size_gb": v.size_gb,
                    "created": v.created,
                    "attached_to": v.attached_to,
                    "path": str(v.path),
                }
                for v in items
            ]
        )
        return
    click.echo(f"{'NAME':<20} {'SIZE':>6} {'ATTACHED TO':<12} CREATED")
    for v in items:
        click.echo(f"{v.name:<20} {v.size_gb:>5}G {v.attached_to or '-':<12} {v.created}")


@volume_group.command("delete")
@click.argument("name")
def volume_delete(name: str) -> None:
    """Delete a volume that no VM holds.

    \b
    Example:
      imagekit volume delete data
    """
    _volumes().delete(name)


@volume_group.command("attach")
@click.argument("name")
@click.argument("instance")
def volume_attach(name: str, instance: str) -> None:
    """Hot-plug a volume into a running instance.

    \b
    Example:
      imagekit volume attach data vm-1a2b
    """
    from ..launch.launcher import attach_volume

    inst = attach_volume(settings(), instance, name)
    info(f"{name} attached to {inst.id}")


@volume_group.command("detach")
@click.argument("name")
def volume_detach(name: str) -> None:
    """Unplug a volume from the instance holding it.

    \b
    Example:
      imagekit volume detach data
    """
    from ..launch.launcher import detach_volume

    detach_volume(settings(), name)


# --- cache ------------------------------------------------------------------------------


@cli.group("cache")
def cache_group() -> None:
    """The verified-image cache shared by instances.

    \b
    Example:
      imagekit cache list
    """


@cache_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def cache_list(as_json: bool) -> None:
    """List cached images (digest key, size, IDs, last use).

    \b
    Example:
      imagekit cache list --json
    """
    from ..fetch.cache import ImageCache

    items = ImageCache(settings().cache_dir).list()
    if as_json:
        emit_json(
            [
                {
                    "key": i.key,
                    "path": str(i.path),
                    "size": i.size,
                    "identifiers": list(i.identifiers),
                    "verified": i.verified,
                    "last_used": i.last_used,
                }
                for i in items
            ]
        )
        return
    for i in items:
        click.echo(f"{i.key[:24]:<24} {i.size:>12} {','.join(i.identifiers):<27} {i.last_used}")


@cache_group.command("prune")
@click.option(
    "--older-than",
    type=float,
    metavar="DAYS",
    help="only images unused for this many days (default: all unused)",
)
def cache_prune(older_than: float | None) -> None:
    """Remove cached images no instance uses.

    \b
    Example:
      imagekit cache prune --older-than 30
    """
    from ..fetch.cache import ImageCache
    from ..launch.lifecycle import images_in_use

    s = settings()
    age = timedelta(days=older_than) if older_than is not None else None
    for item in ImageCache(s.cache_dir).prune(in_use=images_in_use(s), older_than=age):
        info(f"removed {item.key} ({item.size} bytes)")


# --- policy -----------------------------------------------------------------------------


@cli.group("policy")
def policy_group() -> None:
    """The site policy: which verified entries may run.

    \b
    Example:
      imagekit policy check BtSKdXa2SvHlSVTvgFgivIYDq--
    """


@policy_group.command("check")
@click.argument("reference")
@click.option("--endorser", metavar="EMAIL", help="only this endorser's entries of the ID")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@common
def policy_check(
    reference: str,
    as_json: bool,
    marketplace: str | None,
    trust: str | None,
    policy_path: Path | None,
    endorser: str | None = None,
) -> None:
    """Verify every candidate for an ID (or endorser:tag) and apply the policy.

    Exits 0 if one is acceptable (and names it), else with the refusal of the newest.

    \b
    Example:
      imagekit policy check alice@example.org:debian-base --policy site.toml
    """
    from ..launch.images import make_resolver
    from ..market.resolve import Reference, pick

    s = settings(marketplace=marketplace, trust=trust, policy=policy_path)
    resolver, policy = make_resolver(s)
    ref = Reference.parse(reference, endorser=endorser)
    cands = resolver.candidates(ref)
    rows = []
    for c in cands:
        e = c.verified.entry if c.verified else None
        rows.append(
            {
                "identifier": e.identifier if e else None,
                "endorser": e.endorser_email if e else None,
                "created": e.endorsement_created.isoformat()
                if e and e.endorsement_created
                else None,
                "accepted": c.accepted,
                "reason": None if c.error is None else f"{type(c.error).__name__}: {c.error}",
            }
        )
    if as_json:
        emit_json({"policy": policy.describe(), "source": policy.source, "candidates": rows})
    else:
        info(f"policy ({policy.source}): {policy.describe()}")
        for r in rows:
            verdict = "ACCEPT" if r["accepted"] else "REFUSE"
            click.echo(
                f"{verdict} {r['identifier'] or '?'} {r['endorser'] or '?'} "
                f"{r['created'] or '?'}" + (f"  {r['reason']}" if r["reason"] else "")
            )
    best = pick(ref, cands)  # raises the refusal when nothing is acceptable
    info(
        f"would launch {best.entry.identifier} endorsed by {best.entry.endorser_email} "
        f"at {best.entry.endorsement_created}"
    )


@policy_group.command("show")
@common
def policy_show(marketplace: str | None, trust: str | None, policy_path: Path | None) -> None:
    """Print the effective policy's rules.

    \b
    Example:
      imagekit policy show --policy /etc/imagekit/policy.cfg
    """
    from ..policy.rules import load_policy

    p = load_policy(settings(policy=policy_path).policy)
    click.echo(f"# {p.source}")
    click.echo(p.describe())
    if p.allow_sha1_signatures:
        click.echo("SHA-1 signatures accepted")


@policy_group.command("import")
@click.argument("cfg", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="TOML file (default: stdout)")
def policy_import(cfg: Path, output: Path | None) -> None:
    """Convert a StratusLab policy.cfg into imagekit's TOML policy.

    \b
    Example:
      imagekit policy import /etc/stratuslab/policy.cfg -o /etc/imagekit/policy.toml
    """
    from .._files import atomic_write
    from ..policy.rules import stratuslab_to_toml

    text = stratuslab_to_toml(_read(cfg, "policy").decode("utf-8", "replace"), source=cfg.name)
    if output is None:
        click.echo(text, nl=False)
    else:
        atomic_write(output, text)
        info(f"wrote {output}")
