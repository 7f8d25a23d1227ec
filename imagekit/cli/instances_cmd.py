"""``imagekit instances | ssh | console | kill | rm``: the instances a launch made."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..errors import InputError
from ._app import cli, emit_json, info, settings
from ._cloud import cloud_option


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _ports_cell(inst: Any) -> str:
    return ",".join(f"{p.host_port}->{p.guest_port}" for p in inst.ports) or "-"


@cli.command("instances")
@click.argument("instance", required=False)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@cloud_option
def instances_cmd(instance: str | None, as_json: bool, cloud: str | None = None) -> None:
    """List instances (state, name, CPU, memory, ssh and forwarded ports, image ID, uptime),
    or describe one: its drives, context, ports, image and endorser, reason, console log.

    \b
    Examples:
      imagekit instances
      imagekit instances web1
    """
    from ..launch.instances import DriveKind, InstanceStore

    if cloud:
        from . import cloud_cmd

        if instance:
            raise click.UsageError("with --cloud, instances lists the servers (no INSTANCE)")
        return cloud_cmd.instances(cloud, as_json=as_json)

    store = InstanceStore(settings().state_dir)
    if instance is not None:
        inst = store.refresh(store.find(instance))
        if as_json:
            emit_json(dict(inst.to_dict(), uptime=inst.uptime()))
            return
        _describe(inst)
        return
    items = store.all()
    if as_json:
        emit_json([dict(i.to_dict(), uptime=i.uptime()) for i in items])
        return
    click.echo(
        f"{'ID':<12} {'NAME':<16} {'STATE':<8} {'ROOT':<10} {'CPU':>3} {'MEMORY':>7} "
        f"{'SSH':>5}  {'PORTS':<14} {'IMAGE':<27} {'UPTIME':>8}  REASON"
    )
    for i in items:
        root = (
            "volume"
            if any(d.kind is DriveKind.BOOT_VOLUME for d in i.drives)
            else "persistent"
            if i.persistent
            else "ephemeral"
        )
        click.echo(
            f"{i.id:<12} {i.name or '-':<16} {i.state:<8} {root:<10} "
            f"{i.machine.cpu:>3} {i.machine.ram_mib:>6}M "
            f"{i.ssh_port:>5}  {_ports_cell(i):<14} {i.image_id:<27} "
            f"{_uptime(i.uptime()):>8}  {i.reason}"
        )


def _describe(inst: Any) -> None:
    def row(label: str, value: object) -> None:
        click.echo(f"{label + ':':<14}{value}")

    row("id", inst.id)
    row("name", inst.name or "-")
    row("state", inst.state)
    row("reason", inst.reason or "-")
    m = inst.machine
    row("machine", f"{m.name}: {m.cpu} CPU, {m.ram_mib} MiB RAM, {m.swap_mib} MiB swap")
    row("accelerator", inst.accel)
    row("image", inst.image_id or "-")
    row("endorser", inst.endorser or "-")
    row("root", "persistent" if inst.persistent else "ephemeral (copy-on-write overlay)")
    if str(inst.base_image) not in ("", "."):
        row("base image", inst.base_image)
    row("created", inst.created.isoformat(timespec="seconds"))
    row("started", inst.started.isoformat(timespec="seconds") if inst.started else "-")
    row("finished", inst.finished.isoformat(timespec="seconds") if inst.finished else "-")
    row("uptime", _uptime(inst.uptime()))
    row("pid", inst.pid or "-")
    row("context", f"{inst.context_scheme}  {inst.context_iso or '-'}")
    click.echo("ports:")
    click.echo(f"  127.0.0.1:{inst.ssh_port}->22/tcp  ssh")
    for p in inst.ports:
        click.echo(f"  {p}  {'--port' if p.source == 'option' else 'entry inbound-port'}")
    click.echo("drives:")
    for d in inst.drives:
        flags = ["ro" if d.readonly else "rw", d.bus, d.format]
        what = f" {d.identifier}" if d.identifier else ""
        size = f" {d.size_gb}G" if d.size_gb else ""
        click.echo(f"  {d.kind:<12} {' '.join(flags):<18} {d.path}{what}{size}")
    row("console log", inst.console_log)
    if inst.previous_console_log.exists():
        row("previous log", inst.previous_console_log)
    row(
        "console",
        f"imagekit console {inst.label} --attach"
        if inst.console == "socket"
        else "read-only (started before console attach existed)",
    )


@cli.command("ssh", context_settings={"ignore_unknown_options": True})
@click.argument("instance")
@click.option("-l", "--user", default="root", show_default=True, help="guest user")
@click.option("-i", "--identity", type=click.Path(path_type=Path), help="private key")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh_cmd(instance: str, user: str, identity: Path | None, command: tuple[str, ...]) -> None:
    """Open ssh to an instance (through its forwarded loopback port).

    \b
    Example:
      imagekit ssh vm-1a2b -l debian -- uname -a
    """
    from .._run import find_tool
    from ..launch.instances import InstanceStore, State
    from ..launch.sshkeys import identity_for

    s = settings()
    store = InstanceStore(s.state_dir)
    inst = store.refresh(store.find(instance))
    if identity is None and s.ssh_key is not None:
        identity = identity_for(s.ssh_key)  # the private half of the key launch injected
    if inst.state is not State.RUNNING:
        raise InputError(f"instance {inst.id} is {inst.state}, not Running")
    argv = [
        find_tool("ssh"),
        "-p",
        str(inst.ssh_port),
        # the guest's host key is new for every instance and the port is reused
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
    ]
    if identity:
        argv += ["-i", str(identity)]
    argv += [f"{user}@127.0.0.1", *command]
    sys.stdout.flush()
    os.execv(argv[0], argv)


@cli.command("console")
@click.argument("instance")
@click.option("-f", "--follow", is_flag=True, help="keep printing while the VM runs")
@click.option("--previous", is_flag=True, help="the log of the boot before the last start")
@click.option("--tail", type=click.IntRange(1), metavar="N", help="begin with the last N lines")
@click.option(
    "-a", "--attach", is_flag=True, help="type into the serial console (detach: Ctrl-] then q)"
)
@cloud_option
def console_cmd(
    instance: str,
    follow: bool,
    previous: bool,
    tail: int | None,
    attach: bool,
    cloud: str | None = None,
) -> None:
    """Print INSTANCE's serial console log (what the guest wrote on ttyS0), or attach to it.

    --attach connects your terminal to the guest's serial console: what you type goes to
    the guest (a grub prompt, a manual fsck, a login). Detach with Ctrl-] followed by q
    (Ctrl-] twice sends one Ctrl-] to the guest). The log keeps being written meanwhile,
    for --follow and, after a restart, --previous.

    \b
    Examples:
      imagekit console web1 --follow
      imagekit console web1 --previous --tail 50     # where did the last boot stop?
      imagekit console web1 --attach
    """
    from ..launch.instances import InstanceStore

    if follow and previous:
        raise click.UsageError("--follow reads the running boot's log, not --previous")
    if attach and (follow or previous or tail):
        raise click.UsageError("--attach is interactive: no --follow, --previous or --tail")
    if cloud:
        from . import cloud_cmd

        if previous or attach:
            raise click.UsageError("with --cloud: the console log only (--follow, --tail)")
        return cloud_cmd.console(cloud, instance, follow=follow, tail=tail)
    store = InstanceStore(settings().state_dir)
    inst = store.find(instance)
    if attach:
        from ..launch.console import attach_console

        attach_console(
            store.refresh(inst),
            sys.stdin.fileno(),
            sys.stdout.fileno(),
            on_attach=lambda: info(f"attached to {inst.label}'s console; detach: Ctrl-] then q"),
        )
        info(f"detached from {inst.label}")
        return
    path = inst.previous_console_log if previous else inst.console_log
    if previous and not path.exists():
        raise InputError(f"instance {inst.label} has no previous console log yet")
    out = sys.stdout.buffer
    try:
        fp = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return  # nothing written yet
    with fp:
        if tail is not None:
            lines = fp.read().rstrip(b"\n").split(b"\n")[-tail:]
            out.write(b"\n".join(lines) + b"\n")
        while True:
            chunk = fp.read(65536)
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if not follow or store.refresh(store.load(inst.id)).state.is_final:
                return
            time.sleep(0.3)


@cli.command("kill")
@click.argument("instances", nargs=-1, required=True)
@click.option("--rm", "forget", is_flag=True, help="then forget them (as imagekit rm)")
@cloud_option
def kill_cmd(instances: tuple[str, ...], forget: bool, cloud: str | None = None) -> None:
    """Stop instances and delete their overlay, context ISO, volatile and swap disks.
    The record and console log stay (imagekit instances) until imagekit rm, or --rm.

    \b
    Examples:
      imagekit kill web1
      imagekit kill --rm worker-1 worker-2
    """
    from ..launch.launcher import kill

    if cloud:
        from . import cloud_cmd

        return cloud_cmd.kill(cloud, instances)
    s = settings()
    for name in instances:
        inst = kill(s, name, forget=forget)
        info(f"{inst.label}: {inst.state} ({inst.reason})" + (", forgotten" if forget else ""))


@cli.command("rm")
@click.argument("instances", nargs=-1, required=True)
def rm_cmd(instances: tuple[str, ...]) -> None:
    """Forget Done or Failed instances: their records, console logs and any files left.
    Volumes stay. A live instance is refused (imagekit kill --rm stops and forgets).

    \b
    Example:
      imagekit rm web1
    """
    from ..launch.launcher import remove

    s = settings()
    for name in instances:
        inst = remove(s, name)
        info(f"{inst.label}: forgotten")
