"""Shared fixtures: test assets, an isolated imagekit environment, the CLI in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

# Each area's shared fixtures live in tests/plugins/<area>.py, one line here each.
pytest_plugins: list[str] = [
    "tests.plugins.media",
    "tests.plugins.signing",
    "tests.plugins.market",
    "tests.plugins.launch",
    "tests.plugins.lifecycle",
    "tests.plugins.cloud",
]

FIXTURES = Path(__file__).parent / "fixtures"


def asset(name: str) -> Path:
    """Path of a test asset under tests/fixtures (e.g. ``stratuslab/valid-full.xml``)."""
    path = FIXTURES / name
    if not path.exists():
        raise FileNotFoundError(path)
    return path


@pytest.fixture(name="asset")
def asset_fixture():
    return asset


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep every test away from the real ~/.config, caches and state."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        monkeypatch.delenv(var, raising=False)
    for var in list(__import__("os").environ):
        if var.startswith("IMAGEKIT_"):
            monkeypatch.delenv(var)
    return home


class _Entry:
    """Adapter so CliRunner drives ``imagekit.cli.main``, error reporting included."""

    name = "imagekit"

    def main(self, args=None, prog_name=None, **_):
        from imagekit.cli import main

        main(list(args or []))


class Cli:
    """Run ``imagekit`` in-process through the same entry point users get."""

    def __call__(self, *args: object, input: str | bytes | None = None, env=None) -> Result:
        return CliRunner().invoke(
            _Entry(), [str(a) for a in args], input=input, env=env, catch_exceptions=False
        )


@pytest.fixture
def cli() -> Cli:
    return Cli()
