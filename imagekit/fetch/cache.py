"""The verified-image cache: keyed by digest, shared by every instance.

``cache_dir/images/<ALGORITHM>-<hex>`` holds the uncompressed image bytes; beside it
``<ALGORITHM>-<hex>.json`` records which digests were verified on those bytes, the size and
the entries that used them. A file gets there only through ``fetch_image`` (bounded temp
file, verified, atomic rename), so a hit trusts the bytes: it re-checks the policy (done by
the resolver for the entry in hand) and that the recorded digests cover what the policy
asks for and the SHA-1 the entry's ID encodes, never re-reads the image.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .._files import atomic_write, locked
from ..errors import EnvironmentProblem
from ..image.digests import DigestAlgorithm
from ..image.identifier import id_to_sha1
from ..progress import Progress
from .download import Fetched, fetch_image

_MIN_KEY_STRENGTH = DigestAlgorithm.SHA256.strength


@dataclasses.dataclass(frozen=True)
class CachedImage:
    path: Path
    key: str
    size: int
    verified: dict[str, str]
    identifiers: tuple[str, ...]
    fetched: str
    last_used: str

    @property
    def meta_path(self) -> Path:
        return self.path.with_name(self.path.name + ".json")


def _keys(entry: Any) -> list[str]:
    """Cache keys the entry's bytes may be stored under, SHA-256 first."""
    sums = sorted(
        (c for c in entry.checksums if c.algorithm.strength >= _MIN_KEY_STRENGTH),
        key=lambda c: (c.algorithm != DigestAlgorithm.SHA256, -c.algorithm.strength),
    )
    return [f"{c.algorithm}-{c.hex}" for c in sums]


class ImageCache:
    def __init__(self, cache_dir: Path) -> None:
        self.root = cache_dir / "images"

    def ensure_writable(self) -> None:
        """Precondition check: the cache directory exists (or can be made) and is writable."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EnvironmentProblem(f"cache directory {self.root}: {e.strerror}") from e
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise EnvironmentProblem(f"cache directory {self.root} is not writable")

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def _load(self, key: str) -> CachedImage | None:
        path = self.root / key
        meta = self.root / (key + ".json")
        try:
            data = json.loads(meta.read_text())
            size = path.stat().st_size
        except (OSError, ValueError):
            return None
        return CachedImage(
            path=path,
            key=key,
            size=size,
            verified=dict(data.get("verified", {})),
            identifiers=tuple(data.get("identifiers", ())),
            fetched=data.get("fetched", ""),
            last_used=data.get("last_used", ""),
        )

    def lookup(self, entry: Any, algorithms: Sequence[DigestAlgorithm]) -> CachedImage | None:
        """The cached bytes of ``entry`` if they were verified with every algorithm of
        ``algorithms`` against the values this entry lists, their SHA-1 is the one the ID
        encodes, and they have its size."""
        id_sha1 = int(id_to_sha1(entry.identifier), 16)
        for key in _keys(entry):
            hit = self._load(key)
            if hit is None or hit.size != entry.bytes:
                continue
            sha1 = hit.verified.get(str(DigestAlgorithm.SHA1))
            if sha1 is None or int(sha1, 16) != id_sha1:
                continue  # recorded before IDs were checked, or other bytes: fetch again
            ok = True
            for algorithm in algorithms:
                expected = entry.checksum(algorithm)
                got = hit.verified.get(str(algorithm))
                if expected is None or got is None or int(got, 16) != int(expected.value, 16):
                    ok = False
                    break
            if ok:
                return hit
        return None

    def has(self, entry: Any, algorithms: Sequence[DigestAlgorithm]) -> bool:
        return self.lookup(entry, algorithms) is not None

    @contextlib.contextmanager
    def _key_lock(self, key: str) -> Iterator[None]:
        with locked(self.root / f".{key}.lock"):
            yield

    def get(
        self,
        entry: Any,
        algorithms: Sequence[DigestAlgorithm],
        *,
        allow_private: bool = False,
        progress: Progress | None = None,
    ) -> CachedImage:
        """The cached image of ``entry``, downloading and verifying it on a miss.

        Raises what ``fetch_image`` raises; nothing is cached unless verified.
        """
        keys = _keys(entry)
        if not keys:
            raise EnvironmentProblem(f"entry {entry.identifier} has no SHA-256 or stronger digest")
        with self._key_lock(keys[0]):
            hit = self.lookup(entry, algorithms)
            if hit is None:
                fetched = fetch_image(
                    entry,
                    self.root / keys[0],
                    algorithms=algorithms,
                    allow_private=allow_private,
                    progress=progress,
                )
                return self._record(entry, keys[0], fetched)
            return self._touch(hit, entry)

    def _record(self, entry: Any, key: str, fetched: Fetched) -> CachedImage:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        verified = {str(a): v for a, v in fetched.digests.values.items()}
        old = self._load(key)
        if old is not None:
            verified = {**old.verified, **verified}
        data = {
            "identifiers": sorted({*(old.identifiers if old else ()), entry.identifier}),
            "size": fetched.digests.size,
            "verified": verified,
            "fetched": now,
            "last_used": now,
            "location": fetched.location,
            "format": str(entry.format) if entry.format else "raw",
        }
        atomic_write(self.root / (key + ".json"), json.dumps(data, indent=1, sort_keys=True))
        loaded = self._load(key)
        assert loaded is not None
        return loaded

    def _touch(self, hit: CachedImage, entry: Any) -> CachedImage:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(hit.meta_path.read_text())
            data["last_used"] = datetime.now(UTC).isoformat(timespec="seconds")
            data["identifiers"] = sorted({*data.get("identifiers", ()), entry.identifier})
            atomic_write(hit.meta_path, json.dumps(data, indent=1, sort_keys=True))
        return hit

    def list(self) -> list[CachedImage]:
        if not self.root.is_dir():
            return []
        out = []
        for meta in sorted(self.root.glob("*.json")):
            item = self._load(meta.name.removesuffix(".json"))
            if item is not None:
                out.append(item)
        return out

    def prune(
        self, *, in_use: set[Path], older_than: timedelta | None = None
    ) -> builtins.list[CachedImage]:
        """Remove cached images no instance uses (and, if given, unused for ``older_than``).

        Leftover partial downloads are removed too. Returns what was removed.
        """
        removed = []
        now = datetime.now(UTC)
        in_use = {p.resolve() for p in in_use}
        for item in self.list():
            if item.path.resolve() in in_use:
                continue
            if older_than is not None and item.last_used:
                with contextlib.suppress(ValueError):
                    if now - datetime.fromisoformat(item.last_used) < older_than:
                        continue
            with self._key_lock(item.key):
                for p in (item.meta_path, item.path):
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
            removed.append(item)
        if self.root.is_dir():
            # partial downloads a crash left behind (not one in progress: those are fresh)
            for part in self.root.glob(".*.part"):
                with contextlib.suppress(OSError):
                    if now.timestamp() - part.stat().st_mtime > 24 * 3600:
                        part.unlink()
        return removed
