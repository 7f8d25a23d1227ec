"""The root command: lazy command loading and the error-to-exit-code contract."""

from __future__ import annotations

import importlib
import subprocess
import sys

from imagekit.cli._app import COMMAND_MODULES
from imagekit.cli._app import cli as root


def test_every_command_is_registered_by_the_module_the_table_names() -> None:
    for module in sorted(set(COMMAND_MODULES.values())):
        importlib.import_module(f"imagekit.cli.{module}")
    registered = {
        name: command.callback.__module__
        for name, command in root.commands.items()
        if command.callback is not None
    }
    assert set(root.commands) == set(COMMAND_MODULES)
    for name, module in registered.items():
        assert module == f"imagekit.cli.{COMMAND_MODULES[name]}", name


def test_running_one_command_loads_only_its_module() -> None:
    code = (
        "import sys\n"
        "from imagekit.cli import main\n"
        "try:\n    main(['types'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('imagekit.cli.')"
        " and m.endswith('_cmd')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "['imagekit.cli.launch_cmd']"


def test_help_lists_every_command(cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for name in COMMAND_MODULES:
        assert f"  {name} " in result.stdout, name


def test_unknown_command_is_a_usage_error(cli) -> None:
    result = cli("frobnicate")
    assert result.exit_code == 2
    assert "No such command 'frobnicate'" in result.stderr
