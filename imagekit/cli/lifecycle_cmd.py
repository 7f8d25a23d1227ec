"""``imagekit stop | start | reboot | snapshot``: an instance after its launch."""

from __future__ import annotations

from pathlib import Path

import click

from ..launch import lifecycle
from ..launch.instances import Instance
from ._app import cli, emit_json, info, settings
from ._cloud import cloud_option


def _done(inst: Instance, what: str) -> None:
    info(f"{inst.id}: {what} ({inst.state}{', ' + inst.reason if inst.reason else ''})")
    click.echo(inst.id)


@cli.command("stop")
@click.argument("instance")
@click.option(
    "--force",
    is_flag=True,
    help="if the guest ignores the power button, stop qemu anyway (pull the plug)",
)
@click.option(
    "--timeout",
    default=lifecycle.STOP_TIMEOUT,
    show_default=True,
    type=float,
    help="seconds the guest gets to power off",
)
@cloud_option
def stop_cmd(instance: str, force: bool, timeout: float, cloud: str | None = None) -> None:
    """Shut INSTANCE down cleanly (ACPI power button) and keep its disks: state Stopped.

    A persistent instance keeps its root disk; an ephemeral one gets a fresh overlay over
    the image at its next start.

    \b
    Example:
      imagekit stop vm-1a2b3c4d
      imagekit stop --force --timeout 30 vm-1a2b3c4d
    """
    if cloud:
        from . import cloud_cmd

        if force:
            raise click.UsageError(
                "--force: on the cloud Nova pulls the plug itself after its shutdown timeout"
            )
        return cloud_cmd.stop(cloud, instance, timeout=timeout)
    _done(lifecycle.stop(settings(), instance, timeout=timeout, force=force), "stopped")


@cli.command("start")
@click.argument("instance")
@click.option(
    "--timeout",
    default=lifecycle.START_TIMEOUT,
    show_default=True,
    type=float,
    help="seconds to wait for the guest to run",
)
@cloud_option
def start_cmd(instance: str, timeout: float, cloud: str | None = None) -> None:
    """Boot a Stopped INSTANCE again on the same disks (also a powered-off or crashed one).

    \b
    Example:
      imagekit start vm-1a2b3c4d
    """
    if cloud:
        from . import cloud_cmd

        return cloud_cmd.start(cloud, instance, timeout=timeout)
    _done(lifecycle.start(settings(), instance, timeout=timeout), "started")


@cli.command("reboot")
@click.argument("instance")
@click.option("--hard", is_flag=True, help="reset button (QMP system_reset): no clean shutdown")
@click.option(
    "--timeout",
    default=lifecycle.STOP_TIMEOUT,
    show_default=True,
    type=float,
    help="seconds the guest gets to power off before the reset",
)
def reboot_cmd(instance: str, hard: bool, timeout: float) -> None:
    """Reboot INSTANCE: a clean power-off then a reset (or, with --hard, the reset only).

    \b
    Example:
      imagekit reboot vm-1a2b3c4d
      imagekit reboot --hard vm-1a2b3c4d
    """
    _done(lifecycle.reboot(settings(), instance, hard=hard, timeout=timeout), "rebooted")


@cli.command("snapshot")
@click.argument("instance")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="the new image (qcow2, compressed)",
)
@click.option(
    "--entry",
    "entry_output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="its unsigned metadata entry [default: OUTPUT.xml]",
)
@click.option("--title", help="dcterms:title [default: the base's]")
@click.option("--description", help="dcterms:description [default: the base's]")
@click.option("--version", "version_", help="slterms:version [default: the base's, bumped]")
@click.option("--tag", help="dcterms:alternative (endorser:tag users follow)")
@click.option("--no-base", is_flag=True, help="do not ask the marketplace for the base entry")
@click.option(
    "--force",
    is_flag=True,
    help="no guest agent and the guest ignores the power button: pull the plug",
)
@click.option(
    "--timeout",
    default=lifecycle.STOP_TIMEOUT,
    show_default=True,
    type=float,
    help="seconds the guest gets to power off (when it has no agent)",
)
@click.option("--overwrite", is_flag=True, help="replace existing output files")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@cloud_option
def snapshot_cmd(
    instance: str,
    output: Path,
    entry_output: Path | None,
    title: str | None,
    description: str | None,
    version_: str | None,
    tag: str | None,
    no_base: bool,
    force: bool,
    timeout: float,
    overwrite: bool,
    as_json: bool,
    cloud: str | None = None,
) -> None:
    """Save INSTANCE's root disk as a new appliance: image plus unsigned metadata entry.

    The guest's file systems are frozen through the qemu guest agent when it runs one;
    otherwise the instance is shut down cleanly for the copy and booted again. The entry
    gets fresh checksums and ID, dcterms:replaces = the base ID and the base's version
    bumped (1.0 -> 1.1). Sign it, then publish it.

    \b
    Example:
      imagekit snapshot vm-1a2b3c4d -o web-v2.qcow2 --title "Web server" --version 2.0
      imagekit sign web-v2.qcow2.xml --key me.key --cert me.crt
      imagekit publish web-v2.qcow2.xml --image web-v2.qcow2 --to s3://images/web
    """
    from ..launch.snapshot import snapshot

    fields = {"title": title, "description": description, "version": version_, "tag": tag}
    if cloud:
        from . import cloud_cmd

        snap = cloud_cmd.snapshot(
            cloud,
            instance,
            output,
            entry_output=entry_output,
            fields={k: v for k, v in fields.items() if v is not None},
            carry_base=not no_base,
            overwrite=overwrite,
        )
    else:
        snap = snapshot(
            settings(),
            instance,
            output,
            entry_output=entry_output,
            fields={k: v for k, v in fields.items() if v is not None},
            carry_base=not no_base,
            overwrite=overwrite,
            force_stop=force,
            stop_timeout=timeout,
        )
    if as_json:
        emit_json(
            {
                "id": snap.entry.identifier,
                "image": str(snap.image),
                "entry": str(snap.entry_path),
                "bytes": snap.entry.bytes,
                "replaces": snap.entry.replaces,
                "version": snap.entry.version,
                "method": snap.method,
                "seconds": round(snap.seconds, 2),
            }
        )
        return
    info(
        f"snapshot of {instance} ({snap.method}, {snap.seconds:.1f}s): {snap.image}, "
        f"entry {snap.entry_path} (version {snap.entry.version}, "
        f"replaces {snap.entry.replaces})"
    )
    info(f"next: imagekit sign {snap.entry_path}")
    click.echo(snap.entry.identifier)
