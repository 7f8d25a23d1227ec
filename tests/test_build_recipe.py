"""Recipes: from options and from YAML, the same value; bad input refused with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagekit.build.recipe import (
    BaseKind,
    FileSpec,
    OutputFormat,
    PartitionTable,
    Recipe,
    parse_file_option,
    parse_size,
)
from imagekit.errors import InputError


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "setup.sh").write_text("#!/bin/sh\necho setup\n")
    (tmp_path / "tune.sh").write_text("echo tune\n")
    (tmp_path / "motd").write_text("hello\n")
    return tmp_path


def test_options_and_yaml_give_the_same_recipe(project: Path) -> None:
    from_options = Recipe.make(
        base="debian:bookworm",
        packages=["nginx", "curl"],
        scripts=["setup.sh", "tune.sh"],
        files=["/etc/motd=motd"],
        size="4G",
        format="qcow2",
        title="Web",
        tag="web",
        relative_to=project,
    )
    (project / "sub").mkdir()
    recipe_file = project / "sub" / "appliance.yaml"
    recipe_file.write_text(
        "base: debian:bookworm\n"
        "packages: [nginx, curl]\n"
        "scripts: [../setup.sh, ../tune.sh]\n"
        "files:\n  /etc/motd: ../motd\n"
        "size: 4G\nformat: qcow2\ntitle: Web\ntag: web\n"
    )
    from_yaml = Recipe.from_yaml(recipe_file)
    assert from_yaml == from_options
    assert from_yaml.scripts == (project / "setup.sh", project / "tune.sh")
    assert from_yaml.files == (FileSpec("/etc/motd", project / "motd"),)
    assert from_yaml.size == 4 << 30
    assert from_yaml.content_digest() == from_options.content_digest()


def test_yaml_file_list_form_with_mode(project: Path) -> None:
    path = project / "r.yaml"
    path.write_text(
        "base: debian:bookworm\nfiles:\n  - {dest: /usr/local/bin/x, src: setup.sh, mode: '0755'}\n"
        "os-version: '12.5'\n"
    )
    recipe = Recipe.from_yaml(path)
    assert recipe.files[0].mode == 0o755
    assert recipe.entry_os == ("debian", "12.5", "x86_64")


def test_cli_options_override_the_file(project: Path) -> None:
    path = project / "r.yaml"
    path.write_text("base: debian:bookworm\nformat: qcow2\npackages: [curl]\n")
    recipe = Recipe.from_yaml(path, format="raw", packages=("nginx",))
    assert recipe.format is OutputFormat.RAW
    assert recipe.packages == ("nginx",)


def test_defaults_from_a_debian_base(project: Path) -> None:
    recipe = Recipe.make(base="debian:bookworm")
    assert recipe.base_kind is BaseKind.DISTRO
    assert recipe.release == "bookworm"
    assert recipe.entry_os == ("debian", "12", "x86_64")
    assert recipe.format is OutputFormat.QCOW2
    assert recipe.partition_table is PartitionTable.MBR


def test_image_and_marketplace_bases(project: Path) -> None:
    image = project / "web.qcow2"
    image.write_bytes(b"QFI\xfb")
    assert Recipe.make(base="web.qcow2", relative_to=project).base_kind is BaseKind.IMAGE
    assert Recipe.make(base="web.qcow2", relative_to=project).base == str(image)
    marketplace = Recipe.make(base="MMZu9WvwKIro-rtBQfDk4PsKO7_")
    assert marketplace.base_kind is BaseKind.MARKETPLACE


def test_content_digest_follows_script_content_not_name(project: Path) -> None:
    recipe = Recipe.make(base="debian:bookworm", scripts=["setup.sh"], relative_to=project)
    before = recipe.content_digest()
    (project / "setup.sh").write_text("#!/bin/sh\necho changed\n")
    assert recipe.content_digest() != before


def test_summary_names_the_recipe(project: Path) -> None:
    recipe = Recipe.make(
        base="debian:bookworm", packages=["curl"], scripts=["setup.sh"], relative_to=project
    )
    assert '"packages": ["curl"]' in recipe.summary()
    assert '"scripts": ["setup.sh"]' in recipe.summary()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"base": ""}, "a base is required"),
        ({"base": "debian:sid"}, "unknown base"),
        ({"base": "ubuntu:noble"}, "unknown base"),
        ({"base": "missing.qcow2"}, "base image not found"),
        ({"packages": ["Nginx"]}, "not a Debian package name"),
        ({"packages": ["curl; rm -rf /"]}, "not a Debian package name"),
        ({"packages": ["curl", "curl"]}, "listed twice"),
        ({"scripts": ["nope.sh"]}, "script not found"),
        ({"files": ["etc/motd=motd"]}, "absolute path"),
        ({"files": ["/etc/../motd=motd"]}, "absolute path"),
        ({"files": ["/etc/motd"]}, "DEST=SRC"),
        ({"files": ["/etc/motd=absent"]}, "file to copy not found"),
        ({"files": ["/etc/motd=motd", "/etc/motd=setup.sh"]}, "same destination"),
        ({"size": "512M"}, "too small"),
        ({"size": "four"}, "not a size"),
        ({"format": "vmdk"}, "format must be"),
        ({"partition_table": "bsd"}, "partition table"),
        ({"os_arch": "aarch64"}, "only x86_64"),
        ({"colour": "red"}, "unknown recipe field"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_recipes_are_refused(project: Path, values: dict, message: str) -> None:
    values = {"base": "debian:bookworm", **values}
    with pytest.raises(InputError, match=message):
        Recipe.make(relative_to=project, **values)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[unclosed", "not valid YAML"),
        ("- a list", "must be a mapping"),
        ("packages: [curl]", "no 'base'"),
        ("base: debian:bookworm\npackages: curl", "must be a list"),
        ("base: debian:bookworm\nfiles: 3", "'files' must be"),
        ("base: debian:bookworm\nfiles: [{dest: /x}]", "lacks 'src'"),
    ],
)
def test_bad_recipe_files_are_refused(project: Path, text: str, message: str) -> None:
    path = project / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        Recipe.from_yaml(path)


def test_parse_size_and_file_option(project: Path) -> None:
    assert parse_size("4G") == parse_size("4GiB") == 4 << 30
    assert parse_size("1536M") == 1536 << 20
    assert parse_size(12345) == 12345
    spec = parse_file_option("/etc/motd=motd:0600", project)
    assert spec == FileSpec("/etc/motd", project / "motd", 0o600)


def test_cli_refuses_a_bad_recipe_with_one_line(cli, project: Path) -> None:
    result = cli("build", "--base", "debian:sid", "-o", project / "x.qcow2")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == "imagekit: error: unknown base 'debian:sid'"
    assert not (project / "x.qcow2").exists()


def test_a_long_recipe_summary_fits_the_entry_description_limit(project: Path) -> None:
    """The entry model limits descriptions; a build of many packages must still describe
    its image (the machine-written summary is shortened, the author's text kept)."""
    from imagekit.build import _describe
    from imagekit.entry import parse_entry_bytes
    from imagekit.entry.model import TEXT_LIMITS

    packages = [f"package-with-a-long-name-{i}" for i in range(1000)]
    recipe = Recipe.make(
        base="debian:bookworm", packages=packages, description="Mine.", relative_to=project
    )
    assert len(recipe.summary()) > TEXT_LIMITS["description"]
    image = project / "disk.raw"
    image.write_bytes(b"\0" * 4096)
    _, xml = _describe(image, recipe)
    assert xml is not None
    description = parse_entry_bytes(xml).description
    assert description is not None and description.startswith("Mine.\n\nimagekit build {")
    assert len(description) <= TEXT_LIMITS["description"]
