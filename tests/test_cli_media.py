"""``imagekit cdrom`` and ``imagekit context`` driven in-process, as users run them."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("xorriso") is None, reason="needs xorriso")

ED25519 = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIClId0OLdjcH/9k62qG1qgHApM0qy3FFWUGhG8AJTJi/ "
    "me@example.org"
)


@pytest.fixture
def flora(tmp_path: Path) -> Path:
    src = tmp_path / "flora-and-fauna"
    (src / "animals").mkdir(parents=True)
    (src / "animals" / "dog.txt").write_text("woof\n")
    (src / "plants").mkdir()
    return src


def test_cdrom_prints_the_marketplace_id_of_the_bytes(cli, flora: Path, tmp_path: Path) -> None:
    out = tmp_path / "flora.iso"
    result = cli("cdrom", flora, "--label", "CDROM", "-o", out)
    assert result.exit_code == 0, result.stderr
    from imagekit.image.identifier import sha1_to_id

    assert result.stdout.strip() == sha1_to_id(hashlib.sha1(out.read_bytes()).hexdigest())
    listing = subprocess.run(
        ["xorriso", "-indev", str(out), "-find", "/", "-exec", "lsdl"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert "/animals/dog.txt" in listing


def test_cdrom_json(cli, flora: Path, tmp_path: Path) -> None:
    out = tmp_path / "flora.iso"
    result = cli("cdrom", flora, "--label", "cdrom", "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    data = out.read_bytes()
    assert doc["label"] == "CDROM"
    assert doc["bytes"] == len(data)
    assert doc["sha1"] == hashlib.sha1(data).hexdigest()
    assert doc["sha256"] == hashlib.sha256(data).hexdigest()


def test_cdrom_twice_same_id(cli, flora: Path, tmp_path: Path) -> None:
    a = cli("cdrom", flora, "--label", "X", "-o", tmp_path / "a.iso").stdout
    b = cli("cdrom", flora, "--label", "X", "-o", tmp_path / "b.iso").stdout
    assert a == b


def test_cdrom_bad_label_one_line_no_output(cli, flora: Path, tmp_path: Path) -> None:
    out = tmp_path / "flora.iso"
    result = cli("cdrom", flora, "--label", "flora-fauna", "-o", out)
    assert result.exit_code == 2
    assert result.stderr == (
        "imagekit: error: volume label 'flora-fauna': only A-Z, 0-9 and _ "
        "are allowed in an ISO 9660 label (not '-')\n"
    )
    assert not out.exists()
    assert list(tmp_path.glob("*.part")) == []


def test_cdrom_missing_directory(cli, tmp_path: Path) -> None:
    result = cli("cdrom", tmp_path / "nope", "--label", "X", "-o", tmp_path / "o.iso")
    assert result.exit_code == 2
    assert result.stderr == f"imagekit: error: {tmp_path / 'nope'} is not a directory\n"


def test_cdrom_list_and_extract(cli, flora: Path, tmp_path: Path) -> None:
    iso = tmp_path / "flora.iso"
    cli("cdrom", flora, "--label", "F", "-o", iso)
    result = cli("cdrom", "--list", iso)
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "d0755            0 animals",
        "d0755            0 plants",
        "-0644            5 animals/dog.txt",
    ]
    as_json = json.loads(cli("cdrom", "--list", iso, "--json").stdout)
    assert {"path": "animals/dog.txt", "type": "file", "size": 5, "mode": "0644"} in as_json
    out = tmp_path / "out"
    result = cli("cdrom", "--extract", iso, out)
    assert result.exit_code == 0, result.stderr
    assert (out / "animals" / "dog.txt").read_text() == "woof\n"


def test_cdrom_reads_genisoimage(cli, flora: Path, tmp_path: Path) -> None:
    iso = tmp_path / "g.iso"
    subprocess.run(["genisoimage", "-quiet", "-R", "-J", "-o", str(iso), str(flora)], check=True)
    result = cli("cdrom", "--list", iso)
    assert "-0644            5 animals/dog.txt" in result.stdout.splitlines()


def test_cdrom_needs_one_mode(cli, flora: Path, tmp_path: Path) -> None:
    result = cli("cdrom", flora, "--list", tmp_path / "x.iso")
    assert result.exit_code == 2
    assert "exactly one of" in result.stderr


def test_context_nocloud(cli, tmp_path: Path) -> None:
    key = tmp_path / "id.pub"
    key.write_text(ED25519 + "\n")
    script = tmp_path / "setup.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    out = tmp_path / "seed.iso"
    result = cli(
        "context",
        "--scheme",
        "nocloud",
        "--ssh-key",
        key,
        "--hostname",
        "web1",
        "--user-data",
        script,
        "--instance-id",
        "i-1",
        "--var",
        "A=b",
        "--file",
        f"/etc/motd={script}",
        "-o",
        out,
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {
        "path": str(out),
        "scheme": "nocloud",
        "instance_id": "i-1",
    }
    info = subprocess.run(
        ["isoinfo", "-d", "-i", str(out)], capture_output=True, check=True
    ).stdout.decode()
    assert "Volume id: cidata" in info


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--hostname", "bad_host"],
            "imagekit: error: hostname 'bad_host': use letters, "
            "digits and inner hyphens, dot-separated labels of at most 63 characters\n",
        ),
        (
            ["--var", "NOPE"],
            "imagekit: error: variable 'NOPE': expected NAME=value with NAME a shell name\n",
        ),
        (["--var", "A=1", "--var", "A=2"], "imagekit: error: variable A given twice\n"),
        (
            ["--file", "etc/motd=/etc/hostname"],
            "imagekit: error: file destination 'etc/motd': must be an absolute, normalized path\n",
        ),
        (
            ["--scheme", "opennebula", "--network-config", "/etc/hostname"],
            "imagekit: error: opennebula has no network-config file; pass ETH0_IP, "
            "ETH0_GATEWAY... with --var\n",
        ),
    ],
    ids=["hostname", "var-syntax", "var-twice", "file-relative", "network-opennebula"],
)
def test_context_bad_input(cli, tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "ctx.iso"
    result = cli("context", *args, "-o", out)
    assert result.exit_code == 2
    assert result.stderr == message
    assert not out.exists()


def test_context_bad_key_file(cli, tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n")
    out = tmp_path / "ctx.iso"
    result = cli("context", "--ssh-key", key, "-o", out)
    assert result.exit_code == 2
    assert result.stderr.startswith("imagekit: error: ssh key:")
    assert len(result.stderr.splitlines()) == 1
    assert not out.exists()


def test_cdrom_library_refusal_is_an_internal_error_not_bad_input(
    cli, flora: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pycdlib refusing a tree imagekit checked is imagekit's bug: exit 70, said so, and no
    half-written ISO left behind."""
    import pycdlib
    from pycdlib.pycdlibexception import PyCdlibException

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise PyCdlibException("simulated library refusal")

    monkeypatch.setattr(pycdlib.PyCdlib, "write_fp", refuse)
    out = tmp_path / "flora.iso"
    result = cli("cdrom", flora, "--label", "FLORA", "-o", out)
    assert result.exit_code == 70
    assert result.stderr == (
        "imagekit: internal error (a bug, please report it): "
        "pycdlib refused the prepared ISO: simulated library refusal\n"
    )
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [flora]
