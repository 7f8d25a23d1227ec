"""``imagekit build``: a recipe (options or a YAML file) to a bootable image and its entry."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from ..build import build_image
from ..build.recipe import Recipe
from ._app import cli, emit_json, info, settings


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C during a build, so the same cleanup runs."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _show_phase(name: str, elapsed: float | None) -> None:
    if elapsed is None:
        info(f"imagekit: build: {name} ...")
    else:
        info(f"imagekit: build: {name}: {elapsed:.1f}s")


def _marketplace_resolver(current: Any) -> Callable[[str, Path], Path]:
    """Resolve, verify and fetch a Marketplace base exactly as ``launch`` does."""

    def resolve(reference: str, workdir: Path) -> Path:
        from ..launch.images import fetch_machine_image

        _verified, path = fetch_machine_image(
            current, reference, purpose="a machine image to build on"
        )
        return path

    return resolve


@cli.command("build")
@click.option(
    "-f",
    "--recipe",
    "recipe_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="recipe file (YAML); options given here override it",
)
@click.option("--base", help="debian:bookworm, an image file (raw/qcow2), or a Marketplace ID")
@click.option(
    "--package", "packages", multiple=True, metavar="NAME", help="Debian package (repeat)"
)
@click.option(
    "--script",
    "scripts",
    multiple=True,
    type=click.Path(path_type=Path),
    help="script run as root in the image, in order (repeat)",
)
@click.option(
    "--file",
    "files",
    multiple=True,
    metavar="DEST=SRC[:MODE]",
    help="file to place in the image (repeat)",
)
@click.option("--size", help="disk size, e.g. 4G (default 2G)")
@click.option("--format", "fmt", type=click.Choice(["qcow2", "raw"]), help="image format")
@click.option("--partition-table", type=click.Choice(["mbr", "gpt"]), help="default mbr")
@click.option("--title", help="dcterms:title of the entry")
@click.option("--description", help="dcterms:description (the recipe is appended)")
@click.option("--image-version", "image_version", help="slterms:version of the entry")
@click.option("--tag", help="dcterms:alternative (the tag people follow)")
@click.option("--creator", help="dcterms:creator")
@click.option("--os", "os_", help="slterms:os (default from the base)")
@click.option("--os-version", help="slterms:os-version")
@click.option("--os-arch", help="slterms:os-arch (x86_64)")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="image to write; the entry goes to OUTPUT.xml, the log to OUTPUT.build.log",
)
@click.option("--no-cache", is_flag=True, help="rebuild every layer")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="layer cache (default: the cache_dir setting)",
)
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def build(
    recipe_file: Path | None,
    base: str | None,
    packages: tuple[str, ...],
    scripts: tuple[Path, ...],
    files: tuple[str, ...],
    size: str | None,
    fmt: str | None,
    partition_table: str | None,
    title: str | None,
    description: str | None,
    image_version: str | None,
    tag: str | None,
    creator: str | None,
    os_: str | None,
    os_version: str | None,
    os_arch: str | None,
    output: Path,
    no_cache: bool,
    cache_dir: Path | None,
    as_json: bool,
) -> None:
    """Build a bootable image: a base, packages, files and scripts; print the image's ID.

    Writes the image, an unsigned metadata entry (OUTPUT.xml: checksums, ID, os fields,
    the recipe in the description) ready for `imagekit sign`, and a build log.

    \b
    Example:
      imagekit build --base debian:bookworm --package nginx --package curl \\
          --script setup.sh --file /etc/motd=./motd --size 4G --format qcow2 -o web.qcow2
      imagekit build --base web.qcow2 --script tune.sh -o web-tuned.qcow2
      imagekit build -f appliance.yaml -o appliance.qcow2
    """
    fields = {
        "title": title,
        "description": description,
        "version": image_version,
        "tag": tag,
        "creator": creator,
        "os": os_,
        "os_version": os_version,
        "os_arch": os_arch,
    }
    loose: dict[str, Any] = {
        "base": base,
        "packages": packages,
        "scripts": [str(s) for s in scripts],
        "files": list(files),
        "size": size,
        "format": fmt,
        "partition_table": partition_table,
        **fields,
    }
    if recipe_file is not None:
        recipe = Recipe.from_yaml(recipe_file, **loose)
    else:
        if not base:
            raise click.UsageError("give --base (or a recipe file with -f)")
        recipe = Recipe.make(**{k: v for k, v in loose.items() if v is not None})
    current = settings(cache_dir=cache_dir)
    resolver = _marketplace_resolver(current)
    log_path = output.absolute().with_name(output.name + ".build.log")
    info(f"imagekit: build log: {log_path}")
    with _sigterm_interrupts():
        result = build_image(
            recipe,
            output,
            cache_dir=current.cache_dir,
            log_path=log_path,
            phase=_show_phase,
            use_cache=not no_cache,
            resolve_base=resolver,
        )
    total = sum(seconds for _, seconds in result.phases)
    info(
        f"imagekit: build: {result.image} in {total:.1f}s"
        + (f", entry {result.entry_path}" if result.entry_path else "")
    )
    if as_json:
        emit_json(
            {
                "image": str(result.image),
                "identifier": result.identifier,
                "entry": str(result.entry_path) if result.entry_path else None,
                "log": str(result.log_path),
                "phases": [{"name": n, "seconds": round(s, 1)} for n, s in result.phases],
                "layer_cached": result.layer_cached,
            }
        )
    else:
        click.echo(result.identifier or "")
