"""The digest-keyed image cache: miss downloads and verifies, hit does not re-read."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest

from imagekit.errors import ChecksumMismatch
from imagekit.fetch.cache import ImageCache
from imagekit.image.digests import DigestAlgorithm

SHA256 = [DigestAlgorithm.SHA256]
DATA = os.urandom(512 << 10)


def test_miss_fetches_then_hits_without_network(http_files, image_entry, tmp_path: Path):
    cache = ImageCache(tmp_path)
    entry = image_entry(DATA, locations=[http_files.add("img", DATA)])
    assert not cache.has(entry, SHA256)
    first = cache.get(entry, SHA256, allow_private=True)
    assert first.path.name == f"SHA-256-{entry.checksum('SHA-256').hex}"
    assert first.path.read_bytes() == DATA
    # the SHA-1 is always checked too: it is what the ID names
    assert first.verified == {"SHA-1": entry.sha1, "SHA-256": entry.checksum("SHA-256").hex}
    second = cache.get(entry, SHA256, allow_private=True)
    assert second.path == first.path
    assert len(http_files.requests) == 1
    # an entry for the same bytes by another endorser (another location) shares the file
    other = image_entry(DATA, locations=["http://192.0.2.1/never-used"], title="mirror")
    assert cache.get(other, SHA256).path == first.path


def test_hit_does_not_reread_the_bytes(http_files, image_entry, tmp_path: Path):
    """Trust comes from the verified download; a hit only checks size and recorded digests
    (the file is the cache's own; re-hashing gigabytes on every launch is what a cache
    avoids)."""
    cache = ImageCache(tmp_path)
    entry = image_entry(DATA, locations=[http_files.add("img", DATA)])
    hit = cache.get(entry, SHA256, allow_private=True)
    hit.path.write_bytes(b"\0" * len(DATA))  # same size: undetected, by design
    assert cache.get(entry, SHA256).path == hit.path
    hit.path.write_bytes(b"\0" * 10)  # a size change is seen: miss, download again
    assert cache.lookup(entry, SHA256) is None
    assert cache.get(entry, SHA256, allow_private=True).path.read_bytes() == DATA


def test_hit_requires_the_digests_the_policy_asks_for(http_files, image_entry, tmp_path: Path):
    cache = ImageCache(tmp_path)
    entry = image_entry(DATA, locations=[http_files.add("img", DATA)])
    cache.get(entry, SHA256, allow_private=True)
    both = [DigestAlgorithm.SHA256, DigestAlgorithm.SHA512]
    assert cache.lookup(entry, both) is None  # SHA-512 never checked on these bytes
    item = cache.get(entry, both, allow_private=True)
    assert set(item.verified) == {"SHA-1", "SHA-256", "SHA-512"}
    assert len(http_files.requests) == 2


def test_failed_verification_caches_nothing(http_files, image_entry, tmp_path: Path):
    cache = ImageCache(tmp_path)
    entry = image_entry(DATA, locations=[http_files.add("img", DATA[::-1])])
    with pytest.raises(ChecksumMismatch):
        cache.get(entry, SHA256, allow_private=True)
    assert cache.list() == []
    assert [p.name for p in cache.root.iterdir() if not p.name.endswith(".lock")] == []


def test_prune_keeps_images_in_use(http_files, image_entry, tmp_path: Path):
    cache = ImageCache(tmp_path)
    a = cache.get(
        image_entry(DATA, locations=[http_files.add("a", DATA)]), SHA256, allow_private=True
    )
    other = DATA[:1000]
    b = cache.get(
        image_entry(other, locations=[http_files.add("b", other)]), SHA256, allow_private=True
    )
    assert cache.prune(in_use={a.path}, older_than=timedelta(days=1)) == []
    removed = cache.prune(in_use={a.path})
    assert [r.key for r in removed] == [b.key]
    assert a.path.exists() and not b.path.exists() and not b.meta_path.exists()
    assert [i.key for i in cache.list()] == [a.key]
    assert json.loads(a.meta_path.read_text())["size"] == len(DATA)


def test_cache_cli_list_and_prune(cli, http_files, image_entry):
    from imagekit.settings import load_settings

    cache = ImageCache(load_settings({}).cache_dir)
    entry = image_entry(DATA, locations=[http_files.add("img", DATA)])
    item = cache.get(entry, SHA256, allow_private=True)
    result = cli("cache", "list", "--json")
    assert result.exit_code == 0
    (listed,) = json.loads(result.stdout)
    assert listed["key"] == item.key and listed["identifiers"] == [entry.identifier]
    assert listed["size"] == len(DATA)
    result = cli("cache", "prune")
    assert result.exit_code == 0
    assert result.stderr == f"removed {item.key} ({len(DATA)} bytes)\n"
    assert json.loads(cli("cache", "list", "--json").stdout) == []
