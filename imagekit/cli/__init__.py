"""The ``imagekit`` command line: a thin layer that parses, calls the library, renders.

Each command group lives in its own module and registers itself on ``cli`` when imported;
``_app.COMMAND_MODULES`` says which module holds which command, so only the one that runs
is loaded.
"""

from ._app import cli, main

__all__ = ["cli", "main"]
