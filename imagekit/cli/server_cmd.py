"""``imagekit serve``: run the marketplace registry (``marketplace_server``)."""

from __future__ import annotations

from pathlib import Path

import click

from ._app import cli, info, settings


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=8080, show_default=True, type=int, help="port to listen on")
@click.option(
    "--db",
    metavar="URL",
    help="postgresql://user@host/db (default: SQLite in the data dir, WAL mode)",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="where the SQLite database lives (default: the data_dir setting)",
)
@click.option(
    "--trust",
    "trust",
    multiple=True,
    metavar="PATH",
    help="accept only endorsers trusted by these PEM certificates/CA/CRLs "
    "(file or directory; repeat). Without it: any valid signature",
)
@click.option(
    "--vouch",
    "vouch",
    multiple=True,
    metavar="PATH",
    help="without --trust: CAs/certificates (file or directory; repeat) whose "
    "certificates may take over an endorser e-mail bound to another one",
)
@click.option(
    "--files-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="serve this directory at /files/ (images published with --to DIR)",
)
@click.option("--allow-sha1", is_flag=True, help="accept SHA-1 signatures (StratusLab era)")
@click.option(
    "--allow-file-locations",
    is_flag=True,
    help="accept file: image locations (a registry for one machine); otherwise "
    "only http, https and s3",
)
@click.option(
    "--header-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.1, 3600),
    help="seconds a client has to send its headers",
)
@click.option(
    "--body-timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(0.1, 3600),
    help="seconds a client has to send its body",
)
@click.option(
    "--max-connections",
    default=1000,
    show_default=True,
    type=click.IntRange(2, 1_000_000),
    help="connections per worker; beyond it requests get 503",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="uvicorn worker processes",
)
def serve_cmd(
    host: str,
    port: int,
    db: str | None,
    data_dir: Path | None,
    trust: tuple[str, ...],
    vouch: tuple[str, ...],
    files_dir: Path | None,
    allow_sha1: bool,
    allow_file_locations: bool,
    header_timeout: float,
    body_timeout: float,
    max_connections: int,
    workers: int,
) -> None:
    """Run the marketplace: StratusLab routes, JSON API (/api/, /docs) and web catalogue.

    Uploads must be well-formed, valid, correctly signed entries whose endorser is the
    signing certificate, newer than the latest endorsement of the same (ID, endorser).
    Without --trust the registry is open ("any valid signature", like StratusLab's):
    clients verify trust themselves, and an endorser e-mail belongs to the first
    certificate that publishes under it (others get 403; ``imagekit serve-admin rebind``
    moves it, --vouch names CAs whose certificates may take it over). With --trust only
    those endorsers may publish. Uploads are application/xml, text/xml or the form, never
    cross-origin.

    \b
    Example:
      imagekit serve                                  # http://127.0.0.1:8080, SQLite
      imagekit serve --db postgresql://mp@127.0.0.1/mp --files-dir /srv/images
    """
    from marketplace_server.__main__ import serve
    from marketplace_server.config import ServerConfig

    config = ServerConfig(
        data_dir=data_dir or settings().data_dir,
        db=db,
        trust=trust,
        vouch=vouch,
        files_dir=files_dir,
        allow_sha1=allow_sha1,
        allow_file_locations=allow_file_locations,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        max_connections=max_connections,
    )
    mode = "any valid signature" if config.any_valid_signature else "trusted endorsers only"
    where = "PostgreSQL" if db else str(config.data_dir)
    info(f"marketplace on http://{host}:{port} ({where}; {mode})")
    serve(config, host=host, port=port, workers=workers)


@cli.group("serve-admin")
def serve_admin() -> None:
    """Administer a marketplace's database (the server may keep running)."""


@serve_admin.command("rebind")
@click.argument("email")
@click.option(
    "--cert",
    "cert",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="the endorser's certificate (PEM or DER)",
)
@click.option(
    "--db", metavar="URL", help="the server's database URL (default: SQLite in the data dir)"
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="the server's data dir (default: the data_dir setting)",
)
def rebind_cmd(email: str, cert: Path, db: str | None, data_dir: Path | None) -> None:
    """Bind endorser EMAIL to the certificate in --cert.

    Without --trust the registry binds an e-mail to the first certificate that publishes
    under it and refuses uploads signed by any other (HTTP 403). Rebind when an endorser
    renews or replaces their key, or when someone else claimed their address first.

    \b
    Example:
      imagekit serve-admin rebind images@site.example.org --cert images-2027.crt
    """
    from marketplace_server.admin import rebind
    from marketplace_server.config import ServerConfig

    config = ServerConfig(data_dir=data_dir or settings().data_dir, db=db)
    old, new = rebind(config, email, cert)
    was = f" (was {old.fingerprint}, {old.via})" if old is not None else ""
    info(f"{email} bound to SHA-256 {new.fingerprint}{was}")
