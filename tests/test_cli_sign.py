"""``imagekit keygen``, ``sign`` and ``verify`` in-process, with exact error lines."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import stat
from pathlib import Path

import pytest

from imagekit.entry import parse_entry_bytes

PASS = {"IMAGEKIT_P12_PASSPHRASE": "correct horse"}


@pytest.fixture
def keypair(cli, tmp_path):
    result = cli(
        "keygen",
        "--email",
        "me@example.org",
        "--name",
        "Me Myself",
        "-o",
        tmp_path / "me",
        "--key-type",
        "ec",
        env=PASS,
    )
    assert result.exit_code == 0, result.stderr
    return tmp_path / "me"


@pytest.fixture
def entry(asset, tmp_path):
    path = tmp_path / "entry.xml"
    path.write_bytes(asset("stratuslab/valid-minimal-empty-endorsement.xml").read_bytes())
    return path


def test_keygen_writes_key_cert_p12(cli, tmp_path):
    result = cli(
        "keygen",
        "--email",
        "me@example.org",
        "--name",
        "Me",
        "-o",
        tmp_path / "me",
        "--days",
        "10",
        "--json",
        env=PASS,
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["subject"] == "CN=Me" and summary["emails"] == "me@example.org"
    assert stat.S_IMODE((tmp_path / "me.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "me.p12").stat().st_mode) == 0o600
    assert (tmp_path / "me.crt").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert b"PRIVATE KEY" in (tmp_path / "me.key").read_bytes()


def test_keygen_refuses_to_overwrite(cli, keypair):
    before = keypair.with_suffix(".key").read_bytes()
    result = cli("keygen", "--email", "me@example.org", "--name", "Me", "-o", keypair, env=PASS)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        f"imagekit: error: refusing to overwrite {keypair}.key, {keypair}.crt, {keypair}.p12"
    )
    assert keypair.with_suffix(".key").read_bytes() == before
    again = cli(
        "keygen",
        "--email",
        "me@example.org",
        "--name",
        "Me",
        "-o",
        keypair,
        "--force",
        "--key-type",
        "ec",
        env=PASS,
    )
    assert again.exit_code == 0
    assert keypair.with_suffix(".key").read_bytes() != before


def test_keygen_passphrase_prompt_with_confirmation(cli, tmp_path):
    result = cli(
        "keygen",
        "--email",
        "me@example.org",
        "--name",
        "Me",
        "-o",
        tmp_path / "p",
        "--key-type",
        "ec",
        input="one\ntwo\nsecret\nsecret\n",
    )
    assert result.exit_code == 0, result.stderr
    assert "do not match" in result.stderr
    sign = cli("sign", tmp_path / "nothing.xml", "--p12", tmp_path / "p.p12")
    assert sign.exit_code == 2  # the entry is missing: NotFound before any prompt


def test_sign_in_place_then_verify(cli, keypair, entry):
    result = cli("sign", entry, "--key", f"{keypair}.key", "--cert", f"{keypair}.crt")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == f"signed MMZu9WvwKIro-rtBQfDk4PsKO7_ as me@example.org -> {entry}\n"
    assert parse_entry_bytes(entry.read_bytes()).endorser_email == "me@example.org"
    verified = cli("verify", entry, "--trust", f"{keypair}.crt")
    assert verified.exit_code == 0, verified.stderr
    assert verified.stdout.startswith("OK MMZu9WvwKIro-rtBQfDk4PsKO7_ endorsed by me@example.org")


def test_sign_with_p12_to_output(cli, keypair, entry, tmp_path):
    original = entry.read_bytes()
    out = tmp_path / "signed.xml"
    result = cli("sign", entry, "--p12", f"{keypair}.p12", "-o", out, "--json", env=PASS)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["email"] == "me@example.org"
    assert entry.read_bytes() == original
    assert cli("verify", out, "--trust", f"{keypair}.crt").exit_code == 0


def test_sign_p12_wrong_passphrase(cli, keypair, entry):
    result = cli("sign", entry, "--p12", f"{keypair}.p12", env={"IMAGEKIT_P12_PASSPHRASE": "wrong"})
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        f"imagekit: error: cannot open {keypair}.p12: wrong passphrase or not a PKCS#12 file"
    )


def test_sign_from_settings(cli, keypair, entry):
    env = {
        "IMAGEKIT_KEY": f"{keypair}.key",
        "IMAGEKIT_CERT": f"{keypair}.crt",
        "IMAGEKIT_TRUST": f"{keypair}.crt",
    }
    assert cli("sign", entry, env=env).exit_code == 0
    assert cli("verify", entry, env=env).exit_code == 0


def test_sign_without_key(cli, entry):
    result = cli("sign", entry)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        "imagekit: error: signing needs a private key and a certificate"
    )


def test_verify_tampered_reports_reason(cli, keypair, entry):
    cli("sign", entry, "--key", f"{keypair}.key", "--cert", f"{keypair}.crt")
    entry.write_bytes(entry.read_bytes().replace(b">100<", b">101<"))
    result = cli("verify", entry, "--trust", f"{keypair}.crt")
    assert result.exit_code == 3
    assert result.stderr.splitlines() == [
        "imagekit: error: SignatureInvalid: the signature does not verify "
        "(content or signature changed)"
    ]


def test_verify_namespace_flood_refused_in_one_line(cli, keypair, entry):
    cli("sign", entry, "--key", f"{keypair}.key", "--cert", f"{keypair}.crt")
    decl = " ".join(f'xmlns:n{i}="urn:x:{i}"' for i in range(8000)).encode()
    entry.write_bytes(entry.read_bytes().replace(b"<rdf:RDF ", b"<rdf:RDF " + decl + b" ", 1))
    result = cli("verify", entry, "--trust", f"{keypair}.crt")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "imagekit: error: unsafe-xml: more than 64 namespace declarations"
    ]


def test_verify_future_dated_endorsement_refused_in_one_line(cli, keypair, entry):
    from imagekit.signing.keys import load_signer
    from imagekit.signing.sign import sign_entry

    signer = load_signer(key=Path(f"{keypair}.key"), cert=Path(f"{keypair}.crt"))
    ahead = dt.datetime(2099, 1, 1, tzinfo=dt.UTC)
    entry.write_bytes(sign_entry(entry.read_bytes(), signer, now=ahead))
    result = cli("verify", entry, "--trust", f"{keypair}.crt")
    assert result.exit_code == 3
    lines = result.stderr.splitlines()
    assert lines[0].startswith(
        "imagekit: error: FutureDated: the endorsement is dated 2099-01-01T00:00:00Z, in the "
        "future (now "
    )
    assert lines[1].startswith("imagekit: hint: ")


def test_verify_json_failure(cli, keypair, entry):
    cli("sign", entry, "--key", f"{keypair}.key", "--cert", f"{keypair}.crt")
    entry.write_bytes(entry.read_bytes().replace(b">100<", b">101<"))
    result = cli("verify", entry, "--trust", f"{keypair}.crt", "--json")
    assert result.exit_code == 3
    report = json.loads(result.stdout)
    assert report["valid"] is False and report["reason"] == "SignatureInvalid"


def test_verify_without_trust_refuses(cli, keypair, entry):
    cli("sign", entry, "--key", f"{keypair}.key", "--cert", f"{keypair}.crt")
    result = cli("verify", entry)
    assert result.exit_code == 3
    assert result.stderr.splitlines()[0] == (
        "imagekit: error: Untrusted: no trusted certificates configured"
    )
    assert "--unsafe-no-trust-check" in result.stderr


def test_verify_unsafe_no_trust_check_warns(cli, keypair, entry):
    cli("sign", entry, "--key", f"{keypair}.key", "--cert", f"{keypair}.crt")
    result = cli("verify", entry, "--unsafe-no-trust-check", "--json")
    assert result.exit_code == 0
    assert "warning: --unsafe-no-trust-check" in result.stderr
    assert json.loads(result.stdout)["trust"] == "unsafe-none"


def test_verify_stratuslab_fixture_as_of(cli, asset, tmp_path):
    path = asset("stratuslab/valid-ca-signed.xml")
    ca = asset("stratuslab/test-ca.pem")
    # Jim's certificate names no e-mail: his CA alone does not vouch for the one he claims
    alone = cli("verify", path, "--trust", ca, "--allow-sha1", "--at", "2012-02-15")
    assert alone.exit_code == 3
    assert alone.stderr.splitlines()[0] == (
        "imagekit: error: Untrusted: certificate CN=Jim Tester,OU=Testing Department,"
        "O=StratusLab Project,C=EU carries no e-mail address, so its CA does not vouch for "
        "jim.tester@example.org"
    )
    b64 = re.search(r"<X509Certificate>(.*?)</X509Certificate>", path.read_text(), re.S)
    assert b64 is not None
    jim = tmp_path / "jim.der"
    jim.write_bytes(base64.b64decode("".join(b64.group(1).split())))
    pinned = ("--trust", ca, "--trust", jim)
    ok = cli("verify", path, *pinned, "--allow-sha1", "--at", "2012-02-15", "--json")
    assert ok.exit_code == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["trust"] == "pinned" and report["signature_method"] == "rsa-sha1"
    weak = cli("verify", path, "--trust", ca, "--at", "2012-02-15")
    assert weak.exit_code == 3
    assert weak.stderr.splitlines()[0] == "imagekit: error: WeakAlgorithm: the signature uses SHA-1"
    today = cli("verify", path, "--trust", ca, "--allow-sha1", "--allow-expired")
    assert today.exit_code == 3
    assert today.stderr.startswith("imagekit: error: CertificateExpired: ")
    revoked = cli(
        "verify",
        path,
        "--trust",
        ca,
        "--trust",
        asset("stratuslab/test-crl-revoked.pem"),
        "--allow-sha1",
        "--at",
        "2012-02-15T12:00:00Z",
    )
    assert revoked.exit_code == 3
    assert revoked.stderr.startswith("imagekit: error: CertificateRevoked: ")


def test_verify_bad_at(cli, asset):
    result = cli(
        "verify",
        asset("stratuslab/valid-ca-signed.xml"),
        "--at",
        "yesterday",
        "--unsafe-no-trust-check",
    )
    assert result.exit_code == 2
    assert "is not a date" in result.stderr


def test_verify_image(cli, keypair, tmp_path):
    image = tmp_path / "disk.raw"
    image.write_bytes(b"imagekit test image\n" * 50)
    described = cli(
        "metadata",
        image,
        "--os",
        "none",
        "--os-version",
        "0",
        "--os-arch",
        "x86_64",
        "-o",
        tmp_path / "e.xml",
    )
    if described.exit_code != 0:
        pytest.skip(f"imagekit metadata unavailable here: {described.stderr.strip()}")
    entry = tmp_path / "e.xml"
    assert cli("sign", entry, "--key", f"{keypair}.key", "--cert", f"{keypair}.crt").exit_code == 0
    ok = cli("verify", entry, "--trust", f"{keypair}.crt", "--image", image)
    assert ok.exit_code == 0, ok.stderr
    assert "OK image" in ok.stdout
    image.write_bytes(b"imagekit test image\n" * 49 + b"imagekit test imagE\n")
    bad = cli("verify", entry, "--trust", f"{keypair}.crt", "--image", image)
    assert bad.exit_code == 3
    assert bad.stderr.startswith("imagekit: error: ChecksumMismatch: ")
    image.write_bytes(b"short")
    short = cli("verify", entry, "--trust", f"{keypair}.crt", "--image", image)
    assert short.exit_code == 3
    assert short.stderr.startswith("imagekit: error: SizeMismatch: ")


def test_keygen_without_passphrase_or_terminal_says_so(tmp_path):
    """No IMAGEKIT_P12_PASSPHRASE and no terminal (cron, CI): one line, not "interrupted"."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEKIT_")}
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "imagekit"),
            "keygen",
            "--email",
            "me@example.org",
            "--name",
            "Me",
            "-o",
            str(tmp_path / "me"),
            "--key-type",
            "ec",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        start_new_session=True,  # no controlling terminal: getpass cannot open /dev/tty
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "imagekit: error: no PKCS#12 passphrase: IMAGEKIT_P12_PASSPHRASE is unset and there "
        "is no terminal to ask on",
        "imagekit: hint: set IMAGEKIT_P12_PASSPHRASE, or use --no-p12 to skip the bundle",
    ]
    assert list(tmp_path.iterdir()) == []


def test_keygen_no_p12_skips_the_bundle(cli, tmp_path):
    result = cli(
        "keygen",
        "--email",
        "me@example.org",
        "--name",
        "Me",
        "-o",
        tmp_path / "me",
        "--key-type",
        "ec",
        "--no-p12",
        "--json",
        env={"IMAGEKIT_P12_PASSPHRASE": None},
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["p12"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["me.crt", "me.key"]
