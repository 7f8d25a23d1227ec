"""The ``imagekit`` command line: a thin layer that parses, calls the library, renders.

Each command group lives in its own module and registers itself on ``cli`` when imported.
"""

import importlib

from ._app import cli, main

# One module per command group; importing it registers its commands on ``cli``.
_COMMAND_MODULES = (
    "config_cmd",
    "keys_cmd",
    "sign_cmd",
    "id_cmd",
    "media_cmd",
    "metadata_cmd",
    "build_cmd",
    "server_cmd",
    "market_cmd",
    "launch_cmd",
    "lifecycle_cmd",
)
for _name in _COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}")

__all__ = ["cli", "main"]
