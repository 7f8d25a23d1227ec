"""Shared media fixtures: the tiny bootable test appliance (built once, cached)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_appliance(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Path to the tiny appliance (raw disk). Treat it as read-only: boot it with
    ``snapshot=on`` or copy it. Cached across sessions in pytest's cache directory."""
    from imagekit.devtools.tinyappliance import make_tiny_appliance

    cache = getattr(request.config, "cache", None)
    cache_dir = (
        Path(cache.mkdir("imagekit-tiny"))
        if cache is not None
        else tmp_path_factory.mktemp("tiny-cache")
    )
    out = tmp_path_factory.mktemp("tiny") / "tiny.raw"
    return make_tiny_appliance(out, cache_dir=cache_dir)
