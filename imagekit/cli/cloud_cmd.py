"""``imagekit sync`` and the ``--cloud NAME`` side of launch, instances, console, kill, stop,
start and snapshot: parse, call ``imagekit.cloud``, render."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..errors import ImagekitError, InputError
from ._app import cli, emit_json, info, settings

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``4h``, ``30m``, ``90s``, ``1d``, ``600`` (seconds) -> seconds. Raises InputError."""
    m = _DURATION.fullmatch(text.strip().lower())
    if not m or float(m.group(1)) <= 0:
        raise InputError(f"not a duration: {text!r} (use e.g. 4h, 30m, 90s)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _connect(name: str) -> Any:
    from ..cloud.connection import connect

    return connect(name)


def _progress_bars() -> tuple[Callable[[str, int], Any], Callable[[], None]]:
    from ..progress import ProgressBar

    bars: list[Any] = []

    def progress(label: str, total: int) -> Any:
        bar = ProgressBar(label[:24], total)
        bar.__enter__()
        bars.append(bar)
        return bar

    def close() -> None:
        for bar in bars:
            bar.__exit__(None, None, None)
        bars.clear()

    return progress, close


@cli.command("sync")
@click.option(
    "--cloud",
    metavar="NAME",
    required=True,
    help="the OpenStack cloud (clouds.yaml / OS_* variables)",
)
@click.option(
    "--site",
    "site_path",
    type=click.Path(path_type=Path),
    help="site config: [sync] subscribe, retire, visibility (default: site setting)",
)
@click.option("--dry-run", is_flag=True, help="say what would be added, updated, hidden, kept")
@click.option("--every", metavar="INTERVAL", help="keep running: sync again every 4h, 30m...")
@click.option("--marketplace", help="marketplace base URL")
@click.option("--trust", help="trusted certificates (PEM file or directory)")
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(path_type=Path),
    help="site policy (TOML or StratusLab policy.cfg)",
)
@click.option(
    "--allow-private-locations",
    is_flag=True,
    default=None,
    help="allow downloads from private/loopback addresses",
)
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def sync_cmd(
    cloud: str,
    site_path: Path | None,
    dry_run: bool,
    every: str | None,
    marketplace: str | None,
    trust: str | None,
    policy_path: Path | None,
    allow_private_locations: bool | None,
    as_json: bool,
) -> None:
    """Keep CLOUD's Glance in step with the marketplace under the site policy.

    Each subscription (endorser:tag or ID) is resolved, verified here and checked against
    the policy, its image fetched and verified, and uploaded to Glance once; images whose
    entries are no longer accepted are hidden (or deleted) unless a server uses them. One
    line per image on stdout (or --json); exit 1 if an image failed.

    \b
    Example:
      imagekit sync --cloud mysite --site /etc/imagekit/site.toml --dry-run
      imagekit sync --cloud mysite --every 4h
    """
    from ..cloud.sync import SiteConfig, SyncItem, sync

    s = settings(
        marketplace=marketplace,
        trust=trust,
        policy=policy_path,
        allow_private_locations=allow_private_locations,
        site=site_path,
    )
    if s.site is None:
        raise InputError(
            "no site config: nothing to subscribe to",
            hint="--site FILE with [sync] subscribe = [...] (or the site setting)",
        )
    interval = parse_duration(every) if every else None
    SiteConfig.load(s.site)  # a bad file fails now, not at the first round

    def line(item: SyncItem) -> None:
        if not as_json:
            click.echo(item.line(dry_run=dry_run))

    while True:
        progress, close = _progress_bars()
        try:
            site = SiteConfig.load(s.site)  # each round reads it again, as it does the policy
            with _connect(cloud) as conn:
                report = sync(
                    s,
                    site,
                    conn,
                    dry_run=dry_run,
                    on_item=line,
                    progress=None if as_json else progress,
                )
        except ImagekitError as e:
            if interval is None:
                raise
            info(f"imagekit: error: {e}")
            report = None
        finally:
            close()
        if report is not None:
            if as_json:
                emit_json(report.to_dict())
            counts = ", ".join(f"{n} {a}" for a, n in sorted(report.counts().items()))
            info(f"sync {cloud}: {counts or 'nothing subscribed'} in {report.seconds:.2f}s")
        if interval is None:
            if report is not None and not report.ok:
                sys.exit(1)
            return
        time.sleep(interval)


# --- the --cloud side of other commands (called from launch_cmd and lifecycle_cmd) ---------


_LOCAL_ONLY = {
    "swap": "--swap",
    "files": "--file",
    "volatile": "--volatile-disk",
    "persistent": "--persistent-disk",
    "persistent_root": "--persistent",
    "disk_size": "--disk-size",
    "boot_volume": "--boot-volume",
    "hostname": "--hostname",
    "context_scheme": "--context-scheme",
    "accel": "--accel",
    "count": "--count",
    "entry_file": "--entry",
    "image_file": "--image",
    "ports": "--port",
    "no_entry_ports": "--no-entry-ports",
}


def refuse_local_options(**given: Any) -> None:
    """Options of a local launch that a cloud server cannot take: named, not ignored."""
    defaults = {"context_scheme": "nocloud"}
    used = [
        _LOCAL_ONLY[k] for k, v in given.items() if v not in (None, False, (), "", defaults.get(k))
    ]
    if used:
        raise InputError(
            f"{', '.join(used)}: not available with --cloud",
            hint="on the cloud --type/--cpu/--ram pick the flavor, the config drive carries "
            "--ssh-key, --user-data and --var, and --name is the host name",
        )


def launch(
    cloud: str,
    *,
    image: str,
    name: str | None,
    type_: str | None,
    cpu: int | None,
    ram: str | None,
    ssh_keys: list[str],
    key_name: str | None,
    user_data: bytes | None,
    variables: dict[str, str],
    readonly: tuple[str, ...],
    as_json: bool,
    s: Any,
    endorser: str | None = None,
) -> None:
    from ..cloud.servers import CloudLaunchRequest, execute_cloud_launch, plan_cloud_launch
    from ..launch.machines import parse_size_mib

    if not image:
        raise InputError("launch --cloud takes an image (ID or endorser:tag)")
    if not name:
        raise InputError("launch --cloud needs --name for the server")
    request = CloudLaunchRequest(
        image=image,
        name=name,
        flavor=type_,
        cpu=cpu,
        ram_mib=parse_size_mib(ram) if ram else None,
        ssh_keys=tuple(ssh_keys),
        key_name=key_name,
        user_data=user_data,
        variables=variables,
        readonly_disks=readonly,
        endorser=endorser,
    )
    progress, close = _progress_bars()
    with _connect(cloud) as conn:
        plan = plan_cloud_launch(conn, request, s)
        info(
            f"{name}: {plan.root.entry.identifier} verified; flavor {plan.flavor.name}; "
            + (f"Glance image {plan.image.id}" if plan.image else "not in Glance yet")
        )
        try:
            server = execute_cloud_launch(conn, plan, s, progress=progress, on_event=info)
        finally:
            close()
    if as_json:
        emit_json(server.to_dict())
        return
    click.echo(server.id)
    info(f"{server.name}: {server.status}; console: imagekit console --cloud {cloud} {server.name}")


def instances(cloud: str, *, as_json: bool) -> None:
    from ..cloud.servers import list_servers

    with _connect(cloud) as conn:
        items = list_servers(conn)
    if as_json:
        emit_json([i.to_dict() for i in items])
        return
    click.echo(f"{'ID':<36} {'NAME':<20} {'STATUS':<8} {'FLAVOR':<12} {'IMAGE':<27} CREATED")
    for i in items:
        click.echo(
            f"{i.id:<36} {i.name[:20]:<20} {i.status:<8} {i.flavor[:12]:<12} "
            f"{i.image_id:<27} {i.created}"
        )


def console(cloud: str, name: str, *, follow: bool, tail: int | None) -> None:
    from ..cloud.servers import console_log, find_server

    with _connect(cloud) as conn:
        text = console_log(conn, name, lines=tail)
        sys.stdout.write(text)
        sys.stdout.flush()
        while follow:
            time.sleep(1.0)
            if find_server(conn, name).status not in ("ACTIVE", "BUILD", "REBOOT"):
                return
            new = console_log(conn, name)
            # the log only grows while the server runs: print what was not printed yet
            if new.startswith(text):
                sys.stdout.write(new[len(text) :])
            else:
                sys.stdout.write(new)
            sys.stdout.flush()
            text = new


def kill(cloud: str, names: tuple[str, ...]) -> None:
    from ..cloud.servers import kill as kill_server

    with _connect(cloud) as conn:
        for name in names:
            server = kill_server(conn, name)
            info(
                f"{server.name}: deleted (server {server.id}"
                + (f", key pair {server.keypair}" if server.keypair else "")
                + ")"
            )


def stop(cloud: str, name: str, *, timeout: float) -> None:
    from ..cloud.servers import stop as stop_server

    with _connect(cloud) as conn:
        server = stop_server(conn, name, timeout=timeout)
    info(f"{server.name}: {server.status}")
    click.echo(server.id)


def start(cloud: str, name: str, *, timeout: float) -> None:
    from ..cloud.servers import start as start_server

    with _connect(cloud) as conn:
        server = start_server(conn, name, timeout=timeout)
    info(f"{server.name}: {server.status}")
    click.echo(server.id)


def snapshot(
    cloud: str,
    name: str,
    output: Path,
    *,
    entry_output: Path | None,
    fields: dict[str, Any],
    carry_base: bool,
    overwrite: bool,
) -> Any:
    """The server's image as a new local appliance and draft entry (``imagekit snapshot``
    shows it as it shows a local instance's)."""
    from ..cloud.snapshot import snapshot_server

    with _connect(cloud) as conn:
        return snapshot_server(
            settings(),
            conn,
            name,
            output,
            entry_output=entry_output,
            fields=fields,
            carry_base=carry_base,
            overwrite=overwrite,
        )
