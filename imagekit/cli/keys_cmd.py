"""``imagekit keygen``: a new endorser key, self-signed certificate and PKCS#12 bundle."""

from __future__ import annotations

from pathlib import Path

import click

from .._files import atomic_write
from ..errors import InputError, InvalidState
from ..signing.certs import describe_certificate
from ..signing.keys import KEY_TYPES, Signer, make_certificate, make_p12, make_private_key
from ._app import cli, emit_json, info
from ._options import PASSPHRASE_ENV, p12_passphrase

NO_PASSPHRASE_HINT = f"set {PASSPHRASE_ENV}, or use --no-p12 to skip the bundle"


@cli.command("keygen")
@click.option("--email", required=True, help="endorser e-mail (RFC 822 subjectAltName)")
@click.option("--name", required=True, help="endorser name (the certificate's CN)")
@click.option(
    "-o",
    "--output",
    "prefix",
    required=True,
    type=click.Path(path_type=Path),
    help="output prefix: writes PREFIX.key, PREFIX.crt and PREFIX.p12",
)
@click.option("--days", type=int, default=365, show_default=True, help="certificate validity")
@click.option(
    "--key-type",
    type=click.Choice(KEY_TYPES),
    default="rsa",
    show_default=True,
    help="RSA 3072 or EC P-256",
)
@click.option(
    "--no-p12",
    "no_p12",
    is_flag=True,
    help="write only PREFIX.key and PREFIX.crt (no bundle, no passphrase)",
)
@click.option("--force", is_flag=True, help="overwrite existing files")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def keygen(
    email: str,
    name: str,
    prefix: Path,
    days: int,
    key_type: str,
    no_p12: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Make an endorser key, a self-signed certificate and a PKCS#12 bundle.

    The key (PREFIX.key, mode 0600) is unencrypted PEM; the bundle (PREFIX.p12) is
    protected by a passphrase read from IMAGEKIT_P12_PASSPHRASE or asked twice on the
    terminal (--no-p12 skips it).
    Give PREFIX.crt to whoever verifies your entries (``imagekit verify --trust``).

    \b
    Example:
      imagekit keygen --email me@example.org --name "Me" -o me
      imagekit sign entry.xml --key me.key --cert me.crt
    """
    suffixes = (".key", ".crt") if no_p12 else (".key", ".crt", ".p12")
    paths = {s: prefix.with_name(prefix.name + s) for s in suffixes}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not force:
        raise InvalidState(
            f"refusing to overwrite {', '.join(existing)}", hint="use --force to replace them"
        )
    if not prefix.parent.is_dir():
        raise InputError(f"directory {prefix.parent} does not exist")
    # everything that can fail on bad input happens before the first file is written
    private_key = make_private_key(key_type)
    cert = make_certificate(private_key, email, name, days)
    signer = Signer(private_key, cert)
    p12 = (
        None
        if no_p12
        else make_p12(
            signer, p12_passphrase(confirm=True, hint=NO_PASSPHRASE_HINT), friendly_name=name
        )
    )
    atomic_write(paths[".key"], signer.key_pem(), mode=0o600)
    atomic_write(paths[".crt"], signer.cert_pem(), mode=0o644)
    if p12 is not None:
        atomic_write(paths[".p12"], p12, mode=0o600)
    summary = {
        "key": str(paths[".key"]),
        "certificate": str(paths[".crt"]),
        "p12": str(paths[".p12"]) if p12 is not None else None,
        **describe_certificate(cert),
    }
    if as_json:
        emit_json(summary)
        return
    for label in ("key", "certificate", "p12"):
        if summary[label] is not None:
            info(f"wrote {summary[label]}")
    click.echo(f"subject      {summary['subject']}")
    click.echo(f"e-mail       {summary['emails']}")
    click.echo(f"valid until  {summary['not_after']}")
    click.echo(f"fingerprint  {summary['sha256_fingerprint']}")
