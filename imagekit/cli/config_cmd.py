"""``imagekit config``: show the effective settings and where they come from."""

from __future__ import annotations

import dataclasses

import click

from ..settings import SETTINGS, config_path
from ._app import cli, emit_json, settings, state


@cli.command("config")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def config_show(as_json: bool) -> None:
    """Show the effective settings (config file < IMAGEKIT_* variables < options).

    \b
    Example:
      IMAGEKIT_MARKETPLACE=http://127.0.0.1:9000 imagekit config
    """
    current = dataclasses.asdict(settings())
    if as_json:
        emit_json(current)
        return
    click.echo(f"# config file: {state().config or config_path()}")
    for s in SETTINGS:
        value = current[s.name]
        click.echo(f"{s.name:<12} = {'' if value is None else value}    # {s.env_var}: {s.help}")
