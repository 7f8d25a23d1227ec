"""Contextualization media: one ISO per consumer (cloud-init NoCloud, OpenStack config drive,
OpenNebula, StratusLab/HEPiX), from one typed :class:`ContextSpec`.

Each scheme is a module that registers its renderer; a new scheme is a new file listed in
``_SCHEME_MODULES``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import IO

from .._files import atomic_open
from ..isofs.writer import write_iso_files
from ._spec import (
    ContextError,
    ContextFile,
    ContextMedium,
    ContextScheme,
    ContextSpec,
    UserDataType,
    check_hostname,
    detect_user_data,
    parse_ssh_key,
    parse_ssh_keys,
    parse_variable,
    register,
    render_context,
)

_SCHEME_MODULES = ("nocloud", "configdrive", "opennebula", "stratuslab")
for _name in _SCHEME_MODULES:
    importlib.import_module(f"{__name__}.{_name}")


def write_context_iso(scheme: ContextScheme | str, spec: ContextSpec, fp: IO[bytes]) -> str:
    """Write the context ISO of ``scheme`` for ``spec`` to ``fp``; return its label.

    Raises:
        ContextError: input the scheme cannot carry.
    """
    medium = render_context(scheme, spec)
    write_iso_files(medium.files, fp, label=medium.label, exact_label=True, modes=medium.modes)
    return medium.label


def make_context_iso(scheme: ContextScheme | str, spec: ContextSpec, out_path: Path) -> Path:
    """Write the context ISO atomically at ``out_path`` (nothing there on failure), mode
    0600: it carries user data, which often holds secrets (tokens, passwords, keys)."""
    medium = render_context(scheme, spec)  # fail before creating anything
    with atomic_open(out_path, mode=0o600) as fp:
        write_iso_files(medium.files, fp, label=medium.label, exact_label=True, modes=medium.modes)
    return Path(out_path)


__all__ = [
    "ContextError",
    "ContextFile",
    "ContextMedium",
    "ContextScheme",
    "ContextSpec",
    "UserDataType",
    "check_hostname",
    "detect_user_data",
    "make_context_iso",
    "parse_ssh_key",
    "parse_ssh_keys",
    "parse_variable",
    "register",
    "render_context",
    "write_context_iso",
]
