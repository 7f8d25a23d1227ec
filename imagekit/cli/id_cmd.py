"""``imagekit id``: the Marketplace ID of an image, or between an ID and its SHA-1."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import InputError
from ..image.compression import Compression
from ..image.digests import DigestAlgorithm, digest_file
from ..image.identifier import id_to_sha1, sha1_to_id
from ..progress import ProgressBar
from ._app import cli, emit_json

# Below this a bar would only flicker.
_BAR_FROM = 64 << 20


@cli.command("id")
@click.argument("file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--decode", "decode", metavar="ID", help="print the SHA-1 an ID stands for")
@click.option("--sha1", "sha1", metavar="HEX", help="print the ID of a SHA-1 value")
@click.option(
    "--compression",
    metavar="gz|bz2|xz|none",
    help="how FILE is compressed (default: from its suffix); the ID is of the uncompressed bytes",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def id_command(
    file: Path | None,
    decode: str | None,
    sha1: str | None,
    compression: str | None,
    as_json: bool,
) -> None:
    """Print the Marketplace ID of FILE (of its uncompressed bytes), or convert ID <-> SHA-1.

    \b
    Example:
      imagekit id debian-12.qcow2.gz
      imagekit id --decode MMZu9WvwKIro-rtBQfDk4PsKO7_
      imagekit id --sha1 c319bbd5afc0a22ba3eaed0507c39383ec28eeff --json
    """
    given = [
        name
        for name, value in (("FILE", file), ("--decode", decode), ("--sha1", sha1))
        if value is not None
    ]
    if len(given) != 1:
        raise InputError(
            "give exactly one of FILE, --decode ID or --sha1 HEX"
            + (f" (got {', '.join(given)})" if given else "")
        )
    if compression is not None and file is None:
        raise InputError("--compression applies to FILE only")

    result: dict[str, object]
    if decode is not None:
        result = {"identifier": decode, "sha1": id_to_sha1(decode)}
        text = result["sha1"]
    elif sha1 is not None:
        identifier = sha1_to_id(sha1)
        result = {"identifier": identifier, "sha1": id_to_sha1(identifier)}
        text = identifier
    else:
        assert file is not None
        resolved = None if compression is None else Compression.parse(compression)
        size = file.stat().st_size if file.is_file() else 0
        with ProgressBar(f"hashing {file.name}", total=size) as bar:
            digests = digest_file(
                file,
                [DigestAlgorithm.SHA1],
                compression=resolved,
                progress=bar if size >= _BAR_FROM else None,
            )
        result = {
            "identifier": digests.identifier,
            "sha1": digests.sha1,
            "bytes": digests.size,
            "file": str(file),
        }
        text = digests.identifier
    if as_json:
        emit_json(result)
    else:
        click.echo(text)
