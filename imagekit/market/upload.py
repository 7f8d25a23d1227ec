"""Put image bytes where users will download them, and check they arrived whole.

``upload_image(path, "s3://bucket/prefix")`` uses boto3 (multipart above 8 MiB, progress by
callback; the endpoint from ``IMAGEKIT_S3_ENDPOINT`` or ``AWS_ENDPOINT_URL``, credentials the
usual boto3 way) and then compares the stored object's size and ETag with the ones computed
locally (S3's multipart ETag is the MD5 of the parts' MD5s). ``upload_image(path, DIR)``
copies into a directory (for example the one a server serves with ``--files-dir``) through
a temporary file, hashing while it writes.

Both return the location URL to write into the entry: ``s3://bucket/key`` or ``file://...``,
or ``url_base + name`` when the caller knows the public URL of the destination.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .._files import atomic_open
from ..errors import ChecksumMismatch, InputError, NetworkError, SizeMismatch
from ..progress import Progress
from ..settings import s3_endpoint

MULTIPART_THRESHOLD = 8 * 1024 * 1024
MULTIPART_CHUNKSIZE = 8 * 1024 * 1024
_BLOCK = 1024 * 1024


def upload_image(
    path: Path,
    destination: str,
    *,
    name: str | None = None,
    url_base: str | None = None,
    progress: Progress | None = None,
) -> str:
    """Upload ``path`` to ``destination`` (``s3://bucket[/prefix]`` or a directory) as
    ``name`` (default: the file's name); return its location URL.

    Raises InputError (no such file or bucket), NetworkError, SizeMismatch/ChecksumMismatch
    (the stored object differs from the file).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such image file: {path}")
    name = name or path.name
    if "/" in name or name in ("", ".", ".."):
        raise InputError(f"not a file name: {name!r}")
    if destination.startswith("s3://"):
        parts = urlsplit(destination)
        if not parts.netloc:
            raise InputError(f"no bucket in {destination!r} (s3://bucket/prefix)")
        prefix = parts.path.strip("/")
        key = f"{prefix}/{name}" if prefix else name
        _upload_s3(path, parts.netloc, key, progress=progress)
        return url_base.rstrip("/") + "/" + key if url_base else f"s3://{parts.netloc}/{key}"
    target = Path(destination).expanduser()
    if destination.startswith(("http://", "https://")):
        raise InputError("upload to http URLs is not supported: use s3://... or a directory")
    _copy_to_dir(path, target / name, progress=progress)
    if url_base:
        return url_base.rstrip("/") + "/" + name
    return (target / name).resolve().as_uri()


# --- directory ---------------------------------------------------------------------------


def _copy_to_dir(path: Path, target: Path, *, progress: Progress | None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    source_hash = hashlib.sha256()
    with path.open("rb") as src, atomic_open(target) as dst:
        while chunk := src.read(_BLOCK):
            source_hash.update(chunk)
            dst.write(chunk)
            if progress:
                progress(len(chunk))
    # Read back what landed, so a short write or a full disk cannot pass unnoticed.
    written = hashlib.sha256()
    with target.open("rb") as f:
        while chunk := f.read(_BLOCK):
            written.update(chunk)
    if target.stat().st_size != path.stat().st_size:
        raise SizeMismatch(f"{target}: size differs from {path} after copying")
    if written.digest() != source_hash.digest():
        raise ChecksumMismatch(f"{target}: content differs from {path} after copying")


# --- S3 ------------------------------------------------------------------------------------


def expected_etag(path: Path, *, threshold: int, chunksize: int) -> tuple[str, str]:
    """(S3 ETag, sha256 hex) of ``path`` uploaded with these multipart settings."""
    from s3transfer.utils import ChunksizeAdjuster

    size = path.stat().st_size
    sha256 = hashlib.sha256()
    if size < threshold:
        md5 = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as f:
            while chunk := f.read(_BLOCK):
                md5.update(chunk)
                sha256.update(chunk)
        return f'"{md5.hexdigest()}"', sha256.hexdigest()
    part_size = ChunksizeAdjuster().adjust_chunksize(chunksize, size)
    digests, parts = [], 0
    with path.open("rb") as f:
        while True:
            md5 = hashlib.md5(usedforsecurity=False)
            left = part_size
            while left and (chunk := f.read(min(_BLOCK, left))):
                md5.update(chunk)
                sha256.update(chunk)
                left -= len(chunk)
            if left == part_size:
                break
            digests.append(md5.digest())
            parts += 1
    combined = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
    return f'"{combined}-{parts}"', sha256.hexdigest()


def _s3_client() -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=s3_endpoint())


def _upload_s3(path: Path, bucket: str, key: str, *, progress: Progress | None) -> None:
    from boto3.s3.transfer import TransferConfig
    from botocore.exceptions import BotoCoreError, ClientError

    etag, sha256 = expected_etag(path, threshold=MULTIPART_THRESHOLD, chunksize=MULTIPART_CHUNKSIZE)
    config = TransferConfig(
        multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_CHUNKSIZE
    )
    client = _s3_client()
    try:
        client.upload_file(
            str(path),
            bucket,
            key,
            Config=config,
            Callback=progress,
            ExtraArgs={"Metadata": {"sha256": sha256}},
        )
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "404"):
            raise InputError(f"no such bucket: {bucket}") from e
        raise NetworkError(f"S3 upload to s3://{bucket}/{key} failed: {e}") from e
    except (BotoCoreError, shutil.Error) as e:
        raise NetworkError(f"S3 upload to s3://{bucket}/{key} failed: {e}") from e
    except Exception as e:
        # s3transfer wraps a missing bucket in its own S3UploadFailedError
        if "NoSuchBucket" in str(e):
            raise InputError(f"no such bucket: {bucket}") from e
        raise
    if head["ContentLength"] != path.stat().st_size:
        raise SizeMismatch(
            f"s3://{bucket}/{key} holds {head['ContentLength']} bytes, "
            f"{path} has {path.stat().st_size}"
        )
    if head.get("ETag") != etag:
        raise ChecksumMismatch(
            f"s3://{bucket}/{key}: ETag {head.get('ETag')} differs from the local {etag}"
        )
