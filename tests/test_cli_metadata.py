"""``imagekit metadata``: options to terms, outputs, and one-line errors that leave no file."""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree

from imagekit.entry import SCHEMA_FILE, parse_entry_bytes
from imagekit.image.identifier import sha1_to_id

SCHEMA = SCHEMA_FILE
DATA = b"QFI\xfb\x00\x00\x00\x03" + b"\x00" * 4096


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "debian.qcow2"
    path.write_bytes(DATA)
    return path


def test_writes_the_entry_to_the_output_file(cli, image: Path, tmp_path: Path) -> None:
    out = tmp_path / "entry.xml"
    result = cli("metadata", image, "-o", out)
    assert result.exit_code == 0, result.stderr
    entry = parse_entry_bytes(out.read_bytes())
    identifier = sha1_to_id(hashlib.sha1(DATA).hexdigest())
    assert entry.identifier == identifier
    assert result.stderr == f"imagekit: wrote {out} (ID {identifier})\n"
    assert result.stdout == ""
    assert str(entry.format) == "qcow2" and entry.is_draft
    assert etree.XMLSchema(etree.parse(str(SCHEMA))).validate(etree.parse(str(out)))


def test_writes_to_stdout_without_output(cli, image: Path) -> None:
    result = cli("metadata", image)
    assert result.exit_code == 0, result.stderr
    assert parse_entry_bytes(result.stdout.encode()).bytes == len(DATA)


def test_json_prints_the_entry(cli, image: Path, tmp_path: Path) -> None:
    out = tmp_path / "entry.xml"
    result = cli("metadata", image, "--json", "--os", "debian", "-o", out)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["identifier"] == parse_entry_bytes(out.read_bytes()).identifier
    assert data["os"] == "debian" and data["bytes"] == len(DATA)


def test_every_term_is_settable(cli, tmp_path: Path) -> None:
    image = tmp_path / "disk.img.gz"
    image.write_bytes(gzip.compress(b"raw bytes"))
    out = tmp_path / "entry.xml"
    result = cli(
        "metadata",
        image,
        "-o",
        out,
        "--os",
        "debian",
        "--os-version",
        "12",
        "--os-arch",
        "x86_64",
        "--title",
        "Debian",
        "--description",
        "A base image",
        "--tag",
        "debian-base",
        "--location",
        "http://a.example/x.gz",
        "--location",
        "http://b.example/x.gz",
        "--valid-until",
        "2999-01-02",
        "--kind",
        "disk",
        "--format",
        "qcow2",
        "--compression",
        "gz",
        "--version",
        "2.0",
        "--serial-number",
        "9",
        "--hypervisor",
        "kvm",
        "--disks-bus",
        "virtio",
        "--inbound-port",
        "22",
        "--inbound-port",
        "443",
        "--outbound-port",
        "25",
        "--icmp",
        "0",
        "--icmp",
        "8",
        "--creator",
        "Jane",
        "--publisher",
        "Lab",
        "--replaces",
        "MMZu9WvwKIro-rtBQfDk4PsKO7_",
        "--is-replaced-by",
        "JcqGhHxmTRAEpHMmRF-xhSTM3TO",
        "--deprecated",
        "old kernel",
        "--type",
        "base",
        "--algorithm",
        "SHA-256",
        "--algorithm",
        "sha512",
    )
    assert result.exit_code == 0, result.stderr
    e = parse_entry_bytes(out.read_bytes())
    assert (e.os, e.os_version, e.os_arch) == ("debian", "12", "x86_64")
    assert (e.title, e.description, e.tag) == ("Debian", "A base image", "debian-base")
    assert e.locations == ("http://a.example/x.gz", "http://b.example/x.gz")
    assert e.valid == datetime(2999, 1, 2, tzinfo=UTC)
    assert (str(e.kind), str(e.format), str(e.compression)) == ("disk", "qcow2", "gz")
    assert (e.version, e.serial_number, e.hypervisor, e.disks_bus) == ("2.0", 9, "kvm", "virtio")
    assert (e.inbound_ports, e.outbound_ports, e.icmp) == ((22, 443), (25,), (0, 8))
    assert (e.creator, e.publisher, e.type, e.deprecated) == ("Jane", "Lab", "base", "old kernel")
    assert e.replaces == "MMZu9WvwKIro-rtBQfDk4PsKO7_"
    assert e.is_replaced_by == "JcqGhHxmTRAEpHMmRF-xhSTM3TO"
    assert [str(c.algorithm) for c in e.checksums] == ["SHA-1", "SHA-256", "SHA-512"]
    assert e.bytes == len(b"raw bytes")


def test_valid_days_sets_the_expiry(cli, image: Path, tmp_path: Path) -> None:
    out = tmp_path / "entry.xml"
    before = datetime.now(UTC).replace(microsecond=0)
    assert cli("metadata", image, "--valid-days", "30", "-o", out).exit_code == 0
    valid = parse_entry_bytes(out.read_bytes()).valid
    assert valid is not None
    assert before + timedelta(days=30) <= valid <= before + timedelta(days=30, minutes=5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--inbound-port", "70000"],
            "port-out-of-range: inbound-port 70000 is not in 0-65535",
            id="port-range",
        ),
        pytest.param(
            ["--outbound-port", "http"],
            "--outbound-port: 'http' is not a whole number",
            id="port-not-a-number",
        ),
        pytest.param(["--icmp", "256"], "icmp-out-of-range: icmp 256 is not in 0-255", id="icmp"),
        pytest.param(["--kind", "vm"], "bad-kind: kind 'vm' is not machine or disk", id="kind"),
        pytest.param(
            ["--serial-number", "X"], "--serial-number: 'X' is not a whole number", id="serial"
        ),
        pytest.param(["--valid-days", "0"], "--valid-days: must be at least 1", id="zero-days"),
        pytest.param(
            ["--valid-until", "2001-01-01"],
            "--valid-until: 2001-01-01 is not in the future",
            id="past",
        ),
        pytest.param(
            ["--valid-until", "soon"],
            "bad-date: --valid-until 'soon' is not yyyy-MM-ddTHH:mm:ssZ",
            id="bad-date",
        ),
        pytest.param(
            ["--valid-days", "3", "--valid-until", "2999-01-01"],
            "give --valid-days or --valid-until, not both",
            id="both-expiries",
        ),
        pytest.param(
            ["--algorithm", "sha3"],
            "unknown checksum algorithm 'sha3'; known: MD5, SHA-1, SHA-256, SHA-512",
            id="algorithm",
        ),
        pytest.param(["--format", "floppy"], None, id="format"),
        pytest.param(["--compression", "zstd"], None, id="compression"),
        pytest.param(
            ["--title", "bell\x07"],
            "bad-text: title contains a character XML cannot carry",
            id="control-character",
        ),
        pytest.param(
            ["--title", "t" * 201],
            "too-long: dcterms:title is longer than 200 characters",
            id="title-too-long",
        ),
        pytest.param(
            ["--location", "javascript:alert(1)"],
            "bad-location: location 'javascript:alert(1)' is not a URL of scheme http, "
            "https, s3, file",
            id="javascript-location",
        ),
    ],
)
def test_bad_value_is_one_line_exit_2_and_no_file(
    cli, image: Path, tmp_path: Path, args: list[str], message: str | None
) -> None:
    out = tmp_path / "entry.xml"
    result = cli("metadata", image, "-o", out, *args)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("imagekit: error: ")
    if message is not None:
        assert result.stderr == f"imagekit: error: {message}\n"
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [image]  # no temporary file left either


def test_missing_image_is_one_line_exit_2(cli, tmp_path: Path) -> None:
    result = cli("metadata", tmp_path / "nope.img", "-o", tmp_path / "entry.xml")
    assert result.exit_code == 2
    assert result.stderr == f"imagekit: error: {tmp_path / 'nope.img'}: no such file\n"


def test_failed_run_keeps_an_existing_output(cli, image: Path, tmp_path: Path) -> None:
    out = tmp_path / "entry.xml"
    out.write_bytes(b"previous")
    assert cli("metadata", image, "-o", out, "--icmp", "999").exit_code == 2
    assert out.read_bytes() == b"previous"


def test_help_has_an_example(cli) -> None:
    result = cli("metadata", "--help")
    assert result.exit_code == 0
    assert "Example:" in result.stdout and "--inbound-port" in result.stdout
