"""The layer cache: raw disk images keyed by the content that made them.

A key is the SHA-256 of a canonical JSON document naming everything that shapes a layer
(base release or base image digest, the package list, size, partition table, the versions
of imagekit's and diskimage-builder's elements). Same inputs, same key, same layer; any
change, a new key. Entries are put in place with ``os.replace`` so a half-written layer is
never found; ``prune`` keeps the most recently used ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .._files import atomic_write


def layer_key(parts: Mapping[str, Any]) -> str:
    """The cache key of a layer: SHA-256 (hex) of ``parts`` as canonical JSON."""
    doc = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(doc.encode()).hexdigest()


def tree_digest(paths: Iterable[Path]) -> str:
    """SHA-256 over the names, modes and contents of every file below ``paths`` (sorted)."""
    h = hashlib.sha256()
    for root in paths:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for p in files:
            rel = p.relative_to(root) if root.is_dir() else Path(p.name)
            h.update(f"{rel}\0{p.stat().st_mode & 0o111}\0".encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fp:
        while chunk := fp.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class LayerCache:
    """Raw layer images under ``root`` (``<key>.raw`` with ``<key>.json`` describing it)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / f"{key}.raw"

    def find(self, key: str) -> Path | None:
        """The layer for ``key`` if cached (and mark it used), else None."""
        path = self.path(key)
        if not path.is_file():
            return None
        with contextlib.suppress(OSError):
            os.utime(path.with_suffix(".json"))
        return path

    def store(self, key: str, image: Path, parts: Mapping[str, Any]) -> Path:
        """Move ``image`` (on the same file system) into the cache as the layer for ``key``."""
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(
            self.root / f"{key}.json",
            json.dumps({"parts": parts, "stored": int(time.time())}, sort_keys=True, default=str),
        )
        target = self.path(key)
        os.replace(image, target)
        return target

    def prune(self, keep: int = 4) -> list[Path]:
        """Delete all but the ``keep`` most recently used layers; return what went."""
        if not self.root.is_dir():
            return []
        layers = sorted(
            self.root.glob("*.raw"),
            key=lambda p: (
                p.with_suffix(".json").stat().st_mtime if p.with_suffix(".json").exists() else 0
            ),
            reverse=True,
        )
        gone = layers[keep:]
        for layer in gone:
            for path in (layer, layer.with_suffix(".json")):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return gone
