"""The root command group and the one place errors become messages.

The library raises ImagekitError subclasses; here each becomes one line on stderr
(``imagekit: error: ...``), an optional hint, and the family's exit code. A traceback only
with ``--debug``.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..errors import ImagekitError, InternalError
from ..settings import Settings, load_settings

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

# Which module of this package defines each command. A module is imported only when one of
# its commands runs (or help lists them all): `imagekit kill` need not load the builder,
# the registry server and the ISO writer first.
COMMAND_MODULES: dict[str, str] = {
    "config": "config_cmd",
    "keygen": "keys_cmd",
    "sign": "sign_cmd",
    "verify": "sign_cmd",
    "id": "id_cmd",
    "cdrom": "media_cmd",
    "context": "media_cmd",
    "metadata": "metadata_cmd",
    "build": "build_cmd",
    "serve": "server_cmd",
    "serve-admin": "server_cmd",
    "publish": "market_cmd",
    "search": "market_cmd",
    "show": "market_cmd",
    "deprecate": "market_cmd",
    "launch": "launch_cmd",
    "instances": "instances_cmd",
    "console": "instances_cmd",
    "ssh": "instances_cmd",
    "kill": "instances_cmd",
    "rm": "instances_cmd",
    "types": "launch_cmd",
    "policy": "launch_cmd",
    "cache": "launch_cmd",
    "volume": "launch_cmd",
    "stop": "lifecycle_cmd",
    "start": "lifecycle_cmd",
    "reboot": "lifecycle_cmd",
    "snapshot": "lifecycle_cmd",
    "sync": "cloud_cmd",
}


class _LazyGroup(click.Group):
    """A group whose commands register themselves when their module is first imported."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            importlib.import_module(f"{__package__}.{module}")
        return super().get_command(ctx, cmd_name)


class _State:
    def __init__(self, config: Path | None, debug: bool) -> None:
        self.config = config
        self.debug = debug

    def settings(self, **overrides: Any) -> Settings:
        return load_settings(overrides, path=self.config)


@click.group(cls=_LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="imagekit")
@click.option("--config", type=click.Path(path_type=Path), help="config file (TOML)")
@click.option("--debug", is_flag=True, help="log external commands; show tracebacks")
@click.pass_context
def cli(ctx: click.Context, config: Path | None, debug: bool) -> None:
    """Build, sign, publish and launch virtual-machine appliances.

    \b
    Example:
      imagekit metadata disk.qcow2 --os debian --os-version 12 --os-arch x86_64 -o entry.xml
      imagekit sign entry.xml --key me.key --cert me.crt
      imagekit verify entry.xml --trust me.crt
    """
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="imagekit: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    ctx.obj = _State(config, debug)


def state(ctx: click.Context | None = None) -> _State:
    ctx = ctx or click.get_current_context()
    obj = ctx.find_root().obj
    assert isinstance(obj, _State)
    return obj


def settings(**overrides: Any) -> Settings:
    """Settings for the running command, with its options as overrides (None = not given)."""
    return state().settings(**overrides)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def info(message: str) -> None:
    """A human message: stderr, so stdout stays data."""
    click.echo(message, err=True)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI, turning ImagekitError into one line and an exit code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="imagekit", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("imagekit: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except ImagekitError as e:
        if debug:
            raise
        if isinstance(e, InternalError):
            click.echo(f"imagekit: internal error (a bug, please report it): {e}", err=True)
            sys.exit(e.exit_code)
        click.echo(f"imagekit: error: {e}", err=True)
        if e.hint:
            click.echo(f"imagekit: hint: {e.hint}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("imagekit: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(141)
