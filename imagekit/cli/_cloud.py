"""The ``--cloud NAME`` option that launch, instances, console, kill, stop, start and snapshot
share (a module of its own, so that loading those commands does not load the cloud side)."""

from __future__ import annotations

import click

cloud_option = click.option(
    "--cloud",
    metavar="NAME",
    help="an OpenStack cloud of clouds.yaml (or OS_* variables): run it there",
)
