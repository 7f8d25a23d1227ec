"""Which ssh public key a launch injects when the user names none.

Like ``stratus-run-instance`` (the configured key) and OpenStack (the project's key pair):
the ``ssh_key`` setting (config file or ``IMAGEKIT_SSH_KEY``), else the user's default
public key under ``~/.ssh``, the first of ``DEFAULT_KEY_FILES`` that exists.
"""

from __future__ import annotations

from pathlib import Path

from ..context import parse_ssh_keys
from ..errors import InputError
from ..settings import Settings

DEFAULT_KEY_FILES = ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub")


def find_default_ssh_key(settings: Settings, *, home: Path | None = None) -> Path | None:
    """The ``ssh_key`` setting, else the first default key under ``home/.ssh``, else None.

    Raises InputError if the setting names a file that does not exist.
    """
    if settings.ssh_key is not None:
        if not settings.ssh_key.is_file():
            raise InputError(
                f"ssh_key {settings.ssh_key}: no such file",
                hint="set ssh_key to a public key file, or unset it",
            )
        return settings.ssh_key
    ssh = (home or Path.home()) / ".ssh"
    return next((ssh / n for n in DEFAULT_KEY_FILES if (ssh / n).is_file()), None)


def read_ssh_keys(path: Path, *, what: str = "--ssh-key") -> list[str]:
    """Every public key in ``path``. Raises InputError (unreadable) or ContextError."""
    try:
        text = path.expanduser().read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise InputError(f"{what} {path}: {e.strerror}") from e
    return parse_ssh_keys(text)


def identity_for(public_key: Path) -> Path | None:
    """The private key beside a ``.pub`` file, if it is there (for ``imagekit ssh``)."""
    private = public_key.with_suffix("") if public_key.suffix == ".pub" else None
    return private if private is not None and private.is_file() else None
