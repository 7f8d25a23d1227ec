"""What several commands share: the signer options and how a signer and trust are loaded.

One copy each, so ``sign``, ``publish`` and ``deprecate`` find a key the same way (options,
then settings; the passphrase from ``IMAGEKIT_P12_PASSPHRASE`` or a prompt), and every
command reads the ``trust`` setting the same way (``os.pathsep``-separated locations).
"""

from __future__ import annotations

import getpass
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import InputError, NotFound
from ..settings import SETTINGS
from ._app import info, settings

if TYPE_CHECKING:  # the signing stack (cryptography) loads only for commands that sign
    from ..signing.keys import Signer
    from ..signing.trust import TrustStore

PASSPHRASE_ENV = "IMAGEKIT_P12_PASSPHRASE"


def p12_passphrase(*, confirm: bool, hint: str | None = None) -> str:
    """The PKCS#12 passphrase: ``$IMAGEKIT_P12_PASSPHRASE``, else a hidden prompt.

    Never an argument: argv is visible to every user of the machine (``ps``).

    Raises InputError (with ``hint``) when the variable is unset and there is no terminal
    to ask on (getpass would warn, read stdin and end in an EOF that looks like Ctrl-C).
    """
    value = os.environ.get(PASSPHRASE_ENV)
    if value is None:
        try:
            with warnings.catch_warnings():
                # getpass falls back to stdin with this warning when /dev/tty cannot be opened
                warnings.simplefilter("error", getpass.GetPassWarning)
                value = click.prompt(
                    "PKCS#12 passphrase",
                    hide_input=True,
                    confirmation_prompt=confirm,
                    err=True,
                )
        except getpass.GetPassWarning:
            raise InputError(
                f"no PKCS#12 passphrase: {PASSPHRASE_ENV} is unset and there is no terminal "
                "to ask on",
                hint=hint or f"set {PASSPHRASE_ENV}",
            ) from None
    if not value:
        raise InputError("the PKCS#12 passphrase must not be empty")
    return value


_FILE = click.Path(path_type=Path, dir_okay=False)
_SETTINGS = {s.name: s for s in SETTINGS}


def setting_option(name: str, dest: str | None = None) -> Any:
    """The command-line option that overrides setting ``name`` for one command, built from
    the settings table (its help, type and choices), so each is declared once. A flag's
    default is None: not given means "the setting decides"."""
    s = _SETTINGS[name]
    flag = "--" + name.replace("_", "-")
    decls = [flag] if dest is None else [flag, dest]
    if s.type is bool:
        return click.option(*decls, is_flag=True, default=None, help=f"{s.help} (setting)")
    kind: Any = None
    if s.choices is not None:
        kind = click.Choice([c.value for c in s.choices])
    elif s.type is Path:
        kind = click.Path(path_type=Path)
    return click.option(*decls, type=kind, help=f"{s.help} (setting)")


signer_options = [
    click.option("--key", type=_FILE, help="PEM private key"),
    click.option("--cert", type=_FILE, help="PEM certificate (chain may follow)"),
    click.option(
        "--p12", type=_FILE, help="PKCS#12 bundle (passphrase: IMAGEKIT_P12_PASSPHRASE or prompt)"
    ),
]


def with_signer(f: Any) -> Any:
    for option in reversed(signer_options):
        f = option(f)
    return f


def cli_signer(key: Path | None, cert: Path | None, p12: Path | None) -> Signer:
    """Options first; otherwise the key/cert or p12 settings (a pair beats a bundle).
    An encrypted key or a bundle asks for its passphrase."""
    from ..signing.keys import load_signer

    if p12 is None and key is None and cert is None:
        s = settings()
        if s.key is not None or s.cert is not None:
            key, cert = s.key, s.cert
        else:
            p12 = s.p12
    if p12 is not None:
        if key is not None or cert is not None:
            raise InputError("give either --p12 or --key and --cert, not both")
        if not p12.exists():
            raise NotFound(f"{p12}: no such file")
        return load_signer(p12=p12, passphrase=p12_passphrase(confirm=False))
    try:
        return load_signer(key=key, cert=cert)
    except InputError as e:
        if "encrypted" not in str(e):
            raise
        return load_signer(key=key, cert=cert, passphrase=p12_passphrase(confirm=False))


def cli_trust(
    options: tuple[Path, ...] = (), *, unsafe_allow_stale_crls: bool = False
) -> TrustStore:
    """``--trust`` locations, else the ``trust`` setting; empty if neither is configured.
    Stale CRLs count with ``unsafe_allow_stale_crls`` or the setting of that name."""
    from ..signing.trust import load_trust

    s = settings()
    return load_trust(
        options,
        s.trust,
        unsafe_allow_stale_crls=unsafe_allow_stale_crls or s.unsafe_allow_stale_crls,
    )


def publisher_trust(own: Any = None) -> TrustStore:
    """Trust for checking what one publishes: the configured store, else the signer's own
    certificate, else (said on stderr) any certificate — the signature is still checked."""
    from ..signing.trust import TrustStore, UnsafeAcceptAnyCertificate

    store = cli_trust()
    if not store.is_empty:
        return store
    if own is not None:
        return TrustStore(pinned=(own,))
    info(
        "imagekit: warning: no trust configured: the entry's certificate is not checked "
        "against any trust store (set trust, or give --key/--cert)"
    )
    return UnsafeAcceptAnyCertificate()
