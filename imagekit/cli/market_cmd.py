"""``imagekit publish | search | show | deprecate``: the marketplace from the command line."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import click

from .._files import atomic_write
from ..errors import InputError, InvalidState, NotFound
from ._app import cli, emit_json, info, settings
from ._options import cli_signer, publisher_trust, setting_option, with_signer

_STATUS = click.Choice(["valid", "expired", "deprecated"])


def _client(marketplace: str | None) -> Any:
    from ..market.client import MarketplaceClient

    return MarketplaceClient(settings(marketplace=marketplace).marketplace)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@cli.command("publish")
@click.argument("entry", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option(
    "--image",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="the image file the entry describes (may be compressed)",
)
@click.option(
    "--to", "destination", metavar="s3://BUCKET/PREFIX|DIR", help="where to upload the image bytes"
)
@click.option(
    "--url-base",
    metavar="URL",
    help="public URL of --to (e.g. http://host:8080/files for a server's "
    "--files-dir); default s3://... or file://...",
)
@click.option(
    "--prepare",
    is_flag=True,
    help="only upload the image and add its location to the unsigned ENTRY",
)
@with_signer
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="write the updated entry here instead of over ENTRY",
)
@setting_option("marketplace")
def publish_cmd(
    entry: Path,
    image: Path | None,
    destination: str | None,
    url_base: str | None,
    prepare: bool,
    key: Path | None,
    cert: Path | None,
    p12: Path | None,
    output: Path | None,
    marketplace: str | None,
) -> None:
    """Publish a signed ENTRY to the marketplace, optionally uploading its image first.

    The location URL is part of what is signed, so the image goes up before signing:

    \b
      1. imagekit publish ENTRY --image FILE --to DEST --prepare
         uploads FILE (after checking it matches ENTRY's size and checksums), checks the
         stored copy, adds slterms:location to the unsigned ENTRY;
      2. imagekit sign ENTRY --key K --cert C
      3. imagekit publish ENTRY            (checks the signature, uploads the entry)
    or in one go, when a key is given: --image FILE --to DEST --key K --cert C uploads,
    adds the location, signs, writes ENTRY (or -o) and publishes.

    DEST is s3://bucket/prefix (boto3; endpoint from IMAGEKIT_S3_ENDPOINT or
    AWS_ENDPOINT_URL, credentials the boto3 way) or a directory.

    \b
    Example:
      imagekit publish entry.xml --image app.qcow2.gz --to s3://images/debian --prepare
      imagekit sign entry.xml --key me.key --cert me.crt && imagekit publish entry.xml
      imagekit publish entry.xml --image app.qcow2 --to /srv/files \\
          --url-base http://127.0.0.1:8080/files --key me.key --cert me.crt
    """
    from ..entry import Endorsement, entry_to_bytes, parse_entry_bytes
    from ..signing.sign import sign_entry
    from ..signing.verify import verify_entry

    data = entry.read_bytes()
    if (image is None) != (destination is None):
        raise InputError("--image and --to go together")
    if image is None:
        if prepare:
            raise InputError("--prepare needs --image and --to")
        verify_entry(data, publisher_trust(), now=_now(), allow_expired=True)
        _upload_entry(data, marketplace)
        return
    one_shot = not prepare
    # Preconditions before any upload: the draft parses, the image matches it, a signer loads.
    draft = parse_entry_bytes(data)
    signer = cli_signer(key, cert, p12) if one_shot else None
    _check_image(draft, image)
    from ..market.upload import upload_image
    from ..progress import ProgressBar

    assert destination is not None
    with ProgressBar(f"uploading {image.name}", image.stat().st_size) as bar:
        location = upload_image(image, destination, url_base=url_base, progress=bar)
    info(f"uploaded {image} to {location}")
    locations = tuple(dict.fromkeys((*draft.locations, location)))
    updated = entry_to_bytes(draft.replace(locations=locations, endorsement=Endorsement()))
    out = output or entry
    if prepare:
        atomic_write(out, updated)
        info(f"added the location to {out}; next: imagekit sign {out}, imagekit publish {out}")
        click.echo(location)
        return
    assert signer is not None
    signed = sign_entry(updated, signer, now=_now())
    atomic_write(out, signed)
    info(f"signed {out}")
    _upload_entry(signed, marketplace)


def _check_image(draft: Any, image: Path) -> None:
    from ..image.digests import digest_file
    from ..progress import ProgressBar
    from ..signing.verify import check_image_digests

    with ProgressBar(f"hashing {image.name}", None) as bar:
        digests = digest_file(image, [c.algorithm for c in draft.checksums], progress=bar)
    check_image_digests(draft, digests)


def _upload_entry(data: bytes, marketplace: str | None) -> None:
    with _client(marketplace) as client:
        path = client.upload(data)
        info(f"published {client.entry_url(path)}")
        click.echo(client.entry_url(path))


@cli.command("search")
@click.argument("text", required=False)
@click.option("--os", "os_", help="slterms:os, e.g. debian")
@click.option("--os-version", help="slterms:os-version")
@click.option("--arch", help="slterms:os-arch, e.g. x86_64")
@click.option("--kind", type=click.Choice(["machine", "disk"]))
@click.option("--endorser", "email", metavar="EMAIL", help="endorser e-mail")
@click.option("--tag", help="dcterms:alternative")
@click.option("--status", type=_STATUS, help="valid, expired or deprecated")
@click.option("--history", is_flag=True, help="include superseded endorsements")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@setting_option("marketplace")
def search_cmd(
    text: str | None,
    os_: str | None,
    os_version: str | None,
    arch: str | None,
    kind: str | None,
    email: str | None,
    tag: str | None,
    status: str | None,
    history: bool,
    limit: int,
    as_json: bool,
    marketplace: str | None,
) -> None:
    """Search the marketplace (server-side summaries; `imagekit launch` verifies).

    TEXT matches words of the title, description, tag, OS, endorser and ID by prefix.

    \b
    Example:
      imagekit search --os debian --endorser me@example.org --status valid
      imagekit search "web server" --json
    """
    with _client(marketplace) as client:
        result = client.search(
            q=text,
            os=os_,
            os_version=os_version,
            arch=arch,
            kind=kind,
            email=email,
            tag=tag,
            status=status,
            history=history,
            limit=limit,
            count=True,
        )
    if as_json:
        emit_json({"total": result.total, "entries": [e.to_dict() for e in result.entries]})
        return
    for e in result.entries:
        os_text = " ".join(p for p in (e.os, e.os_version, e.arch) if p)
        click.echo(
            f"{e.identifier}  {e.status:<10}  {e.created}  {e.email}  {os_text}  {e.title or ''}"
        )
    total = result.total if result.total is not None else len(result.entries)
    info(
        f"{total} entr{'y' if total == 1 else 'ies'}"
        + (f" ({len(result.entries)} shown)" if total > len(result.entries) else "")
    )


@cli.command("show")
@click.argument("identifier")
@click.option("--endorser", "email", metavar="EMAIL", help="only this endorser's entries")
@click.option("--history", is_flag=True, help="every endorsement, not only the latest")
@click.option("--xml", "as_xml", is_flag=True, help="print the signed XML (one entry)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@setting_option("marketplace")
def show_cmd(
    identifier: str,
    email: str | None,
    history: bool,
    as_xml: bool,
    as_json: bool,
    marketplace: str | None,
) -> None:
    """Show the entries of an ID (or a unique prefix of one).

    \b
    Example:
      imagekit show MMZu9WvwKIro-rtBQfDk4PsKO7_ --history
      imagekit show MMZu9 --xml > entry.xml
    """
    with _client(marketplace) as client:
        if history:
            entries = client.history(identifier, email)
        else:
            entries = [e for e in client.current(identifier) if email in (None, e.email)]
        if not entries:
            raise NotFound(f"no entry of {identifier}" + (f" by {email}" if email else ""))
        if as_xml:
            if len(entries) > 1:
                raise InputError("several entries match: choose one with --endorser")
            click.echo(client.get_path(entries[0].path).decode(), nl=False)
            return
    if as_json:
        emit_json([e.to_dict() for e in entries])
        return
    for i, e in enumerate(entries):
        if i:
            click.echo()
        click.echo(f"{e.title or e.identifier}  [{e.status}]")
        rows = [
            ("identifier", e.identifier),
            ("endorser", e.email),
            ("endorsed", e.created),
            ("latest", "yes" if e.latest else "no (superseded)"),
            ("valid until", e.valid),
            ("deprecated", e.deprecated),
            ("tag", e.tag),
            ("os", " ".join(p for p in (e.os, e.os_version, e.arch) if p)),
            ("kind", e.kind),
            ("bytes", str(e.bytes)),
            ("sha1", e.sha1),
            ("description", e.description),
        ]
        rows += [("location", url) for url in e.locations]
        for name, value in rows:
            if value:
                click.echo(f"  {name:<12} {value}")


@cli.command("deprecate")
@click.argument("identifier")
@click.option("--reason", required=True, help="why (slterms:deprecated)")
@with_signer
@setting_option("marketplace")
def deprecate_cmd(
    identifier: str,
    reason: str,
    key: Path | None,
    cert: Path | None,
    p12: Path | None,
    marketplace: str | None,
) -> None:
    """Deprecate your entry: publish a newer signed endorsement carrying slterms:deprecated.

    The current entry is fetched and verified (trust setting, else your own certificate),
    copied with the reason, re-signed by you and uploaded; the old one stays in the history.

    \b
    Example:
      imagekit deprecate MMZu9WvwKIro-rtBQfDk4PsKO7_ --reason "CVE-2024-1234" \\
          --key me.key --cert me.crt
    """
    from ..entry import Endorsement, entry_to_bytes
    from ..signing.sign import endorser_email, sign_entry
    from ..signing.verify import verify_entry

    if not reason.strip():
        raise InputError("--reason must not be empty")
    signer = cli_signer(key, cert, p12)
    email = endorser_email(signer, settings().email)
    with _client(marketplace) as client:
        mine = [e for e in client.current(identifier) if e.email == email]
        if not mine:
            raise NotFound(f"no entry of {identifier} endorsed by {email}")
        current = mine[0]
        if current.deprecated is not None:
            raise InvalidState(f"{current.identifier} is already deprecated: {current.deprecated}")
        data = client.get_path(current.path)
        verified = verify_entry(
            data, publisher_trust(signer.certificate), now=_now(), allow_expired=True
        )
        if verified.entry.endorser_email != email:
            raise InvalidState("the server returned an entry by another endorser")
        draft = entry_to_bytes(
            verified.entry.replace(deprecated=reason.strip(), endorsement=Endorsement())
        )
        now = _now()
        created = verified.entry.endorsement_created
        if created is not None and now <= created:
            # Endorsements have one-second resolution: the new one must be strictly newer.
            time.sleep(min((created - now).total_seconds() + 1, 2))
            now = _now()
        signed = sign_entry(draft, signer, now=now, email=email)
        path = client.upload(signed)
    info(f"deprecated {current.identifier}: {client.entry_url(path)}")
    click.echo(client.entry_url(path))
