"""``imagekit id``: file -> ID, ID -> SHA-1, SHA-1 -> ID."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import pytest

from imagekit.image.identifier import sha1_to_id

SHA1 = "c319bbd5afc0a22ba3eaed0507c39383ec28eeff"
ID = "MMZu9WvwKIro-rtBQfDk4PsKO7_"


def test_id_of_a_file(cli, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    path = tmp_path / "disk.raw"
    path.write_bytes(data)
    result = cli("id", path)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == sha1_to_id(hashlib.sha1(data).hexdigest()) + "\n"


def test_id_of_a_compressed_file_is_of_the_uncompressed_bytes(cli, tmp_path: Path) -> None:
    data = b"appliance" * 10_000
    path = tmp_path / "disk.raw.gz"
    path.write_bytes(gzip.compress(data))
    result = cli("id", path, "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["sha1"] == hashlib.sha1(data).hexdigest()
    assert out["identifier"] == sha1_to_id(out["sha1"])
    assert out["bytes"] == len(data)


def test_compression_option_overrides_the_suffix(cli, tmp_path: Path) -> None:
    data = b"x" * 1000
    path = tmp_path / "disk.bin"
    path.write_bytes(gzip.compress(data))
    result = cli("id", path, "--compression", "gz")
    assert result.stdout.strip() == sha1_to_id(hashlib.sha1(data).hexdigest())


def test_id_of_an_empty_file(cli, tmp_path: Path) -> None:
    path = tmp_path / "empty.img"
    path.write_bytes(b"")
    assert cli("id", path).stdout == "No5o-5ea0sNMlW_75VgGJCv2AcJ\n"


def test_decode(cli) -> None:
    result = cli("id", "--decode", ID)
    assert result.exit_code == 0
    assert result.stdout == SHA1 + "\n"


def test_encode(cli) -> None:
    result = cli("id", "--sha1", SHA1.upper())
    assert result.exit_code == 0
    assert result.stdout == ID + "\n"


def test_encode_json(cli) -> None:
    result = cli("id", "--sha1", SHA1, "--json")
    assert json.loads(result.stdout) == {"identifier": ID, "sha1": SHA1}


def test_decode_json(cli) -> None:
    result = cli("id", "--decode", ID, "--json")
    assert json.loads(result.stdout) == {"identifier": ID, "sha1": SHA1}


def test_bad_id_is_one_line_error(cli) -> None:
    result = cli("id", "--decode", "tooshort")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        "imagekit: error: identifier 'tooshort' has 8 characters; expected 27\n"
    )


def test_bad_sha1_is_one_line_error(cli) -> None:
    result = cli("id", "--sha1", "xyz")
    assert result.exit_code == 2
    assert result.stderr == (
        "imagekit: error: not a SHA-1 value: 'xyz' (expected up to 40 hex digits)\n"
    )


def test_missing_file_is_one_line_error(cli, tmp_path: Path) -> None:
    result = cli("id", tmp_path / "nope.qcow2")
    assert result.exit_code == 2
    assert result.stderr == f"imagekit: error: {tmp_path / 'nope.qcow2'}: no such file\n"


def test_corrupt_compressed_file_is_one_line_error(cli, tmp_path: Path) -> None:
    path = tmp_path / "disk.raw.xz"
    path.write_bytes(b"not xz at all")
    result = cli("id", path)
    assert result.exit_code == 2
    assert result.stderr.startswith("imagekit: error: corrupt xz data")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give exactly one of FILE, --decode ID or --sha1 HEX\n"),
        (
            ("--decode", ID, "--sha1", SHA1),
            "give exactly one of FILE, --decode ID or --sha1 HEX (got --decode, --sha1)\n",
        ),
        (("--sha1", SHA1, "--compression", "gz"), "--compression applies to FILE only\n"),
    ],
    ids=["nothing", "two", "compression-without-file"],
)
def test_usage_mistakes_are_one_line_errors(cli, args: tuple[str, ...], message: str) -> None:
    result = cli("id", *args)
    assert result.exit_code == 2
    assert result.stderr == "imagekit: error: " + message


def test_help_has_an_example(cli) -> None:
    result = cli("id", "--help")
    assert result.exit_code == 0
    assert "Example:" in result.stdout
    assert "imagekit id --decode" in result.stdout
