"""Image uploads (S3 via moto in server mode, a directory) and the publish command flows."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import boto3
import httpx
import pytest

from imagekit.errors import ChecksumMismatch, InputError
from imagekit.market.upload import expected_etag, upload_image
from tests.plugins.market import draft_entry

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def bucket(s3_endpoint):
    name = f"b{os.urandom(4).hex()}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


def s3_bytes(endpoint: str, bucket: str, key: str) -> bytes:
    s3 = boto3.client("s3", endpoint_url=endpoint)
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_upload_to_s3_single_part(tmp_path, s3_endpoint, bucket):
    image = tmp_path / "small.img"
    image.write_bytes(os.urandom(4096))
    seen: list[int] = []
    url = upload_image(image, f"s3://{bucket}/appliances/", progress=seen.append)
    assert url == f"s3://{bucket}/appliances/small.img"
    assert sum(seen) == 4096
    assert s3_bytes(s3_endpoint, bucket, "appliances/small.img") == image.read_bytes()


def test_upload_to_s3_multipart_checks_the_etag(tmp_path, s3_endpoint, bucket):
    image = tmp_path / "big.img"
    image.write_bytes(os.urandom(9 * 1024 * 1024 + 17))
    url = upload_image(image, f"s3://{bucket}", url_base="https://cdn.example.org/img")
    assert url == "https://cdn.example.org/img/big.img"
    head = boto3.client("s3", endpoint_url=s3_endpoint).head_object(Bucket=bucket, Key="big.img")
    etag, sha256 = expected_etag(image, threshold=8 << 20, chunksize=8 << 20)
    assert head["ETag"] == etag and etag.endswith('-2"')
    assert head["Metadata"]["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest() == sha256


def test_upload_detects_a_different_stored_object(tmp_path, s3_endpoint, bucket, monkeypatch):
    image = tmp_path / "x.img"
    image.write_bytes(b"abc" * 1000)
    import imagekit.market.upload as publish

    monkeypatch.setattr(publish, "expected_etag", lambda *a, **k: ('"0000"', "00"))
    with pytest.raises(ChecksumMismatch):
        upload_image(image, f"s3://{bucket}/p")


def test_upload_to_a_missing_bucket(tmp_path, s3_endpoint):
    image = tmp_path / "x.img"
    image.write_bytes(b"abc")
    with pytest.raises(InputError, match="no such bucket"):
        upload_image(image, "s3://no-such-bucket-here/p")


def test_upload_to_a_directory(tmp_path):
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(3000))
    url = upload_image(image, str(tmp_path / "out"))
    assert url == (tmp_path / "out" / "disk.img").as_uri()
    assert (tmp_path / "out" / "disk.img").read_bytes() == image.read_bytes()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def _image_and_draft(tmp_path: Path) -> tuple[Path, Path, bytes]:
    data = os.urandom(5000)
    image = tmp_path / "appliance.img"
    image.write_bytes(data)
    entry = tmp_path / "entry.xml"
    entry.write_bytes(draft_entry(data, title="published box"))
    return image, entry, data


def test_prepare_sign_publish_with_s3(
    cli, tmp_path, s3_endpoint, bucket, marketplace, make_endorser
):
    from imagekit.entry import parse_entry_bytes
    from tests.plugins.market import sign

    image, entry, _ = _image_and_draft(tmp_path)
    r = cli("publish", entry, "--image", image, "--to", f"s3://{bucket}/debian", "--prepare")
    assert r.exit_code == 0, r.stderr
    location = f"s3://{bucket}/debian/appliance.img"
    assert r.stdout.strip() == location
    assert parse_entry_bytes(entry.read_bytes()).locations == (location,)
    assert s3_bytes(s3_endpoint, bucket, "debian/appliance.img") == image.read_bytes()
    me = make_endorser()
    entry.write_bytes(sign(entry.read_bytes(), me, ago=30))
    r = cli("publish", entry, "--marketplace", marketplace.url)
    assert r.exit_code == 0, r.stderr
    url = r.stdout.strip()
    assert url.startswith(marketplace.url + "/metadata/")
    assert httpx.get(url).content == entry.read_bytes()


def test_one_shot_publish_to_the_servers_files_dir(cli, tmp_path, marketplace, make_endorser):
    image, entry, data = _image_and_draft(tmp_path)
    me = make_endorser()
    r = cli(
        "publish",
        entry,
        "--image",
        image,
        "--to",
        marketplace.files_dir,
        "--url-base",
        marketplace.url + "/files",
        "--key",
        me.key_path,
        "--cert",
        me.cert_path,
        "--marketplace",
        marketplace.url,
    )
    assert r.exit_code == 0, r.stderr
    stored = httpx.get(r.stdout.strip())
    assert stored.content == entry.read_bytes()
    summary = httpx.get(r.stdout.strip(), params={"media": "json"}).json()
    assert summary["locations"] == [marketplace.url + "/files/appliance.img"]
    assert summary["email"] == me.email
    assert httpx.get(summary["locations"][0]).content == data


def test_publish_refuses_an_image_that_does_not_match(cli, tmp_path, make_endorser):
    image, entry, _ = _image_and_draft(tmp_path)
    image.write_bytes(b"other bytes")
    out = tmp_path / "out"
    r = cli("publish", entry, "--image", image, "--to", out, "--prepare")
    assert r.exit_code == 3
    assert "imagekit: error:" in r.stderr
    assert not out.exists()  # checked before any upload


def test_publish_refuses_an_unsigned_entry(cli, tmp_path, marketplace):
    _, entry, _ = _image_and_draft(tmp_path)
    r = cli("publish", entry, "--marketplace", marketplace.url)
    assert r.exit_code == 3, r.stderr
    warning, error = r.stderr.splitlines()[:2]
    assert warning.startswith("imagekit: warning: no trust configured")  # said, not silent
    assert error.startswith("imagekit: error:")


def test_publish_asks_for_the_bundle_passphrase_like_sign(
    cli, tmp_path, marketplace, make_endorser, monkeypatch
):
    """``publish`` loads its signer as ``sign`` does: a PKCS#12 bundle's passphrase comes
    from IMAGEKIT_P12_PASSPHRASE or the prompt."""
    from imagekit.signing.keys import load_signer, make_p12

    image, entry, _ = _image_and_draft(tmp_path)
    me = make_endorser()
    bundle = tmp_path / "me.p12"
    bundle.write_bytes(make_p12(load_signer(key=me.key_path, cert=me.cert_path), "s3cret"))
    monkeypatch.delenv("IMAGEKIT_P12_PASSPHRASE", raising=False)
    r = cli(
        "publish",
        entry,
        "--image",
        image,
        "--to",
        marketplace.files_dir,
        "--url-base",
        marketplace.url + "/files",
        "--p12",
        bundle,
        "--marketplace",
        marketplace.url,
        input="s3cret\n",
    )
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip().startswith(marketplace.url + "/metadata/")
