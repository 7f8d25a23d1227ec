"""A verified image from what the user typed: resolve, verify, policy, fetch, check.

The one path every consumer of marketplace images takes (launch, boot volumes, builds on a
Marketplace base, snapshots that inherit their base's terms), so none can skip a step.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..fetch.cache import ImageCache
from ..market.resolve import Resolver
from ..policy.rules import Policy, load_policy
from ..progress import Progress
from ..settings import Settings
from ..signing.trust import TrustStore
from ..signing.trust import load_trust as load_trust_locations
from ..signing.verify import VerifiedEntry
from .disks import check_image_safe, qemu_format


def load_trust(settings: Settings) -> TrustStore:
    """The ``trust`` setting's store (``os.pathsep``-separated locations, as everywhere);
    launching without one is refused: nothing could be verified."""
    store = load_trust_locations(
        (), settings.trust, unsafe_allow_stale_crls=settings.unsafe_allow_stale_crls
    )
    if store.is_empty:
        raise InputError(
            "no trusted certificates configured: nothing could be verified",
            hint="set trust = <PEM file or directory> (config, IMAGEKIT_TRUST or --trust)",
        )
    return store


def make_resolver(
    settings: Settings, *, client: Any = None, now: datetime | None = None
) -> tuple[Resolver, Policy]:
    store = load_trust(settings)
    policy = load_policy(settings.policy)
    if client is None:
        from ..market.client import MarketplaceClient

        transport = None
        if settings.marketplace.startswith("http://"):
            import httpx

            # plain HTTP: skip building a TLS context with the system CA bundle (a third of
            # a second per launch on a loaded machine, for a connection that uses no TLS)
            transport = httpx.HTTPTransport(verify=False)
        client = MarketplaceClient(settings.marketplace, transport=transport)
    return Resolver(client, store, policy, state_dir=settings.state_dir, now=now), policy


def fetch_verified(
    settings: Settings,
    verified: VerifiedEntry,
    policy: Policy,
    *,
    progress: Progress | None = None,
    image_file: Path | None = None,
) -> Path:
    """The verified entry's bytes in the cache (downloaded and checked against the digests
    the policy asks for on a miss), refused if qemu would open other host files through
    them. ``image_file``: the user holds the bytes (``launch --entry FILE --image FILE``);
    they take the place of the entry's locations and pass the same checks on the way into
    the cache (size, the ID's SHA-1, the policy's digests), kept only if they match.
    Raises the VerificationError family, NetworkError, InputError."""
    entry = verified.entry
    if image_file is not None:
        entry = dataclasses.replace(entry, locations=(image_file.resolve().as_uri(),))
    cached = ImageCache(settings.cache_dir).get(
        entry,
        policy.digest_algorithms(verified.entry),
        allow_private=settings.allow_private_locations,
        progress=progress,
    )
    check_image_safe(cached.path, qemu_format(verified.entry))
    return cached.path


def fetch_machine_image(
    settings: Settings,
    reference: str,
    *,
    purpose: str,
    client: Any = None,
    progress: Progress | None = None,
) -> tuple[VerifiedEntry, Path]:
    """Resolve ``reference`` to a verified, acceptable machine image and fetch it.
    ``purpose`` finishes the refusal of a data disk ("… is a data disk, not <purpose>")."""
    resolver, policy = make_resolver(settings, client=client)
    verified = resolver.resolve(reference)
    if verified.entry.kind is not None and str(verified.entry.kind) == "disk":
        raise InputError(f"{reference} is a data disk, not {purpose}")
    return verified, fetch_verified(settings, verified, policy, progress=progress)
