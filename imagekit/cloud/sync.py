"""Keep a site's Glance in step with the marketplace, under the site policy.

For every subscription of the site config (an ``endorser:tag`` or a Marketplace ID), the
same path as a local launch: the resolver fetches the candidates, verifies each one here
(signature, trust, rollback memory, policy) and picks the newest acceptable one; then the
image is fetched and its bytes verified through the image cache (``launch.images``, the
one download path), and uploaded to Glance once (``images.upload_verified``). A later run
finds it by its properties and proves it by Glance's own hash: nothing is uploaded twice.

Images imagekit's sync uploaded whose entry is no longer accepted (expired, deprecated,
refused by the policy, its endorser's certificate revoked or distrusted, replaced under
the tag, unsubscribed) are hidden (``os_hidden``) or deleted, per the config, but never
while a server uses them. If a subscription could not be resolved for a reason other than a
refusal (the marketplace is down), nothing is retired in that run.

Round trips when nothing changed: one Glance image list (plus the marketplace's answers).
The hidden images are listed only when an accepted entry has no visible image, or with
``retire = "delete"``; servers only when something is to be retired.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..errors import ImagekitError, InputError, InvalidState, NotFound, VerificationError
from ..launch.images import fetch_verified, make_resolver
from ..market.resolve import Reference, pick
from ..settings import Settings
from ..signing.verify import VerifiedEntry
from . import images as gi
from .connection import Cloud

# A hidden image still uploading is left alone this long (another sync may be at work on
# another machine); after that an image that never became active is an interrupted upload.
PARTIAL_GRACE = timedelta(minutes=30)
_FETCHERS = 8  # marketplace requests in flight at once
_RETIRE = ("hide", "delete")
_VISIBILITY = ("private", "shared", "community", "public")


class Action(StrEnum):
    ADD = "add"  # uploaded (dry run: would upload)
    KEEP = "keep"  # already in Glance, proven
    UPDATE = "update"  # proven, properties or visibility brought up to date
    HIDE = "hide"
    DELETE = "delete"
    IN_USE = "in-use"  # would be retired, but a server uses it
    CLEAN = "clean"  # an interrupted or unprovable upload of ours removed
    TAMPERED = "tampered"  # claims an entry, bytes differ: never used (hidden if ours)
    REFUSED = "refused"  # the subscription resolved to nothing acceptable
    ERROR = "error"


@dataclasses.dataclass(frozen=True)
class SiteConfig:
    """``[sync]`` of the site config: what to keep in Glance and how."""

    subscriptions: tuple[Reference, ...]
    retire: str = "hide"
    visibility: str = "private"
    source: str = ""

    @classmethod
    def parse(cls, text: str, *, source: str = "site config") -> SiteConfig:
        """Raises InputError for bad TOML, an unknown key or a bad reference."""
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise InputError(f"{source}: {e}") from e
        unknown = set(doc) - {"sync"}
        if unknown:
            raise InputError(f"{source}: unknown table(s) {', '.join(sorted(unknown))}")
        table = doc.get("sync", {})
        if not isinstance(table, dict):
            raise InputError(f"{source}: [sync] must be a table")
        bad = set(table) - {"subscribe", "retire", "visibility"}
        if bad:
            raise InputError(f"{source}: [sync]: unknown key(s) {', '.join(sorted(bad))}")
        subscribe = table.get("subscribe", [])
        if not isinstance(subscribe, list) or not all(isinstance(s, str) for s in subscribe):
            raise InputError(f"{source}: [sync] subscribe must be a list of strings")
        refs = tuple(dict.fromkeys(Reference.parse(s) for s in subscribe))
        if not refs:
            raise InputError(
                f"{source}: [sync] subscribe lists nothing",
                hint='subscribe = ["images@site.example.org:debian-base"]',
            )
        retire = str(table.get("retire", "hide"))
        if retire not in _RETIRE:
            raise InputError(f"{source}: [sync] retire must be hide or delete, not {retire!r}")
        visibility = str(table.get("visibility", "private"))
        if visibility not in _VISIBILITY:
            raise InputError(
                f"{source}: [sync] visibility must be one of "
                f"{', '.join(_VISIBILITY)}, not {visibility!r}"
            )
        return cls(refs, retire=retire, visibility=visibility, source=source)

    @classmethod
    def load(cls, path: Path) -> SiteConfig:
        try:
            text = path.read_text()
        except OSError as e:
            raise InputError(f"site config {path}: {e.strerror}") from e
        return cls.parse(text, source=str(path))


@dataclasses.dataclass(frozen=True)
class SyncItem:
    action: Action
    identifier: str
    subscription: str = ""
    glance_id: str = ""
    endorser: str = ""
    reason: str = ""
    bytes: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"action": str(self.action)}

    def line(self, *, dry_run: bool = False) -> str:
        verb = f"{self.action}{'?' if dry_run and self.action in _CHANGES else ''}"
        what = self.identifier or "-"
        parts = [f"{verb:<9}", f"{what:<27}"]
        if self.subscription and self.subscription != self.identifier:
            parts.append(self.subscription)
        if self.glance_id:
            parts.append(f"glance {self.glance_id}")
        if self.reason:
            parts.append(f"({self.reason})")
        return " ".join(parts)


_CHANGES = {Action.ADD, Action.UPDATE, Action.HIDE, Action.DELETE, Action.CLEAN}


@dataclasses.dataclass(frozen=True)
class SyncReport:
    cloud: str
    dry_run: bool
    items: tuple[SyncItem, ...]
    seconds: float
    glance_calls: int

    @property
    def ok(self) -> bool:
        return not any(i.action is Action.ERROR for i in self.items)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for item in self.items:
            out[str(item.action)] = out.get(str(item.action), 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "cloud": self.cloud,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "glance_calls": self.glance_calls,
            "counts": self.counts(),
            "items": [i.to_dict() for i in self.items],
        }


@contextlib.contextmanager
def _sync_lock(state_dir: Path, cloud: str) -> Iterator[None]:
    path = state_dir / "cloud" / gi._safe_name(cloud) / "sync.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fp:
        try:
            fcntl.flock(fp, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InvalidState(f"another sync of cloud {cloud} is running") from None
        try:
            yield
        finally:
            fcntl.flock(fp, fcntl.LOCK_UN)


class _Glance:
    """The image lists of one run, each fetched at most once, and the call count."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.calls = 0
        self._visible: list[gi.GlanceImage] | None = None
        self._hidden: list[gi.GlanceImage] | None = None
        self._in_use: dict[str, int] | None = None

    def visible(self) -> list[gi.GlanceImage]:
        if self._visible is None:
            self.calls += 1
            self._visible = gi.list_images(self.cloud)
        return self._visible

    def hidden(self) -> list[gi.GlanceImage]:
        if self._hidden is None:
            self.calls += 1
            self._hidden = gi.list_images(self.cloud, hidden=True)
        return self._hidden

    def in_use(self) -> dict[str, int]:
        if self._in_use is None:
            self._in_use = gi.images_in_use(self.cloud)
        return self._in_use


def _is_ours(image: gi.GlanceImage, cloud: Cloud) -> bool:
    return image.origin == "sync" and image.owner == cloud.project_id


def _age(image: gi.GlanceImage, now: datetime) -> timedelta:
    try:
        created = datetime.fromisoformat(image.created_at.replace("Z", "+00:00"))
    except ValueError:
        return timedelta.max
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return now - created


def sync(
    settings: Settings,
    site: SiteConfig,
    cloud: Cloud,
    *,
    dry_run: bool = False,
    client: Any = None,
    now: datetime | None = None,
    progress: Callable[[str, int], Callable[[int], None] | None] | None = None,
    on_item: Callable[[SyncItem], None] | None = None,
    partial_grace: timedelta = PARTIAL_GRACE,
) -> SyncReport:
    """Bring ``cloud``'s Glance in step with ``site``'s subscriptions; see the module doc.

    Per-image failures become ``error`` items (the run goes on); raises InputError (no
    trust, bad policy), InvalidState (another sync of this cloud runs), and cloud errors
    of the first image list (CloudAuthFailed, NetworkError).
    """
    t0 = time.monotonic()
    resolver, policy = make_resolver(settings, client=client, now=now)
    records = gi.VerifiedDigests(settings.state_dir)
    glance = _Glance(cloud)
    items: list[SyncItem] = []
    wall = now or datetime.now(UTC)

    def emit(item: SyncItem) -> None:
        items.append(item)
        if on_item:
            on_item(item)

    lock = contextlib.nullcontext() if dry_run else _sync_lock(settings.state_dir, cloud.name)
    with lock, ThreadPoolExecutor(max_workers=_FETCHERS) as pool:
        # The marketplace's answers (unverified XML) are fetched while Glance lists its
        # images: every one of these calls waits on the network. Verification, the policy
        # and the rollback memory then run here, one subscription after the other.
        answers = [(ref, pool.submit(resolver.fetch_candidates, ref)) for ref in site.subscriptions]
        glance.visible()
        accepted: dict[str, tuple[VerifiedEntry, str]] = {}
        unresolved = False
        why: dict[str, str] = {}  # identifier -> why its newest candidate was refused
        for ref, answer in answers:
            cands = []
            try:
                xmls = answer.result()
                if not xmls:
                    raise NotFound(f"the marketplace has no entry for {ref}")
                cands = resolver.assess(ref, xmls)
                verified = pick(ref, cands)
            except (VerificationError, InputError) as e:
                # the marketplace answered: nothing acceptable (refused, deprecated away
                # from the tag, no such entry). Its images may be retired.
                for c in cands if isinstance(e, VerificationError) else ():
                    if c.verified is not None and c.error is not None:
                        why.setdefault(c.verified.entry.identifier, str(c.error))
                emit(SyncItem(Action.REFUSED, ref.identifier or "", str(ref), reason=str(e)))
                continue
            except ImagekitError as e:
                unresolved = True
                emit(SyncItem(Action.ERROR, ref.identifier or "", str(ref), reason=str(e)))
                continue
            accepted.setdefault(verified.entry.identifier, (verified, str(ref)))

        recs = records.load()
        for identifier, (verified, ref_text) in accepted.items():
            try:
                _sync_entry(
                    cloud,
                    glance,
                    policy,
                    records,
                    recs,
                    site,
                    settings,
                    verified,
                    ref_text,
                    dry_run=dry_run,
                    now=wall,
                    grace=partial_grace,
                    emit=emit,
                    progress=progress,
                )
            except ImagekitError as e:
                emit(SyncItem(Action.ERROR, identifier, ref_text, reason=str(e)))

        if unresolved:
            emit(
                SyncItem(
                    Action.ERROR,
                    "",
                    reason="a subscription could not be resolved: nothing retired in this run",
                )
            )
        else:
            _retire(cloud, glance, site, set(accepted), why, dry_run=dry_run, emit=emit)
    return SyncReport(cloud.name, dry_run, tuple(items), time.monotonic() - t0, glance.calls)


def _sync_entry(
    cloud: Cloud,
    glance: _Glance,
    policy: Any,
    records: gi.VerifiedDigests,
    recs: dict[str, dict[str, Any]],
    site: SiteConfig,
    settings: Settings,
    verified: VerifiedEntry,
    ref_text: str,
    *,
    dry_run: bool,
    now: datetime,
    grace: timedelta,
    emit: Callable[[SyncItem], None],
    progress: Callable[[str, int], Callable[[int], None] | None] | None,
) -> None:
    entry = verified.entry
    ident = entry.identifier
    email = (entry.endorser_email or "").lower()

    def item(action: Action, glance_id: str = "", reason: str = "", **kw: Any) -> None:
        emit(SyncItem(action, ident, ref_text, glance_id, email, reason, **kw))

    found = gi.match(glance.visible(), entry, recs)
    if found.best is None:
        hidden = gi.match(glance.hidden(), entry, recs)
        found = gi.Match(
            proven=found.proven + hidden.proven,
            tampered=found.tampered + hidden.tampered,
            unproven=found.unproven + hidden.unproven,
            partial=found.partial + hidden.partial,
            failed=found.failed + hidden.failed,
        )
    for bad in found.tampered:
        action = "hidden" if _is_ours(bad, cloud) and not bad.hidden else "never used"
        if action == "hidden" and not dry_run:
            gi.set_hidden(cloud, bad, True)
        item(Action.TAMPERED, bad.id, f"size or {bad.hash_algo} differs from the entry: {action}")
    for stale in (*found.partial, *found.failed, *found.unproven):
        if not _is_ours(stale, cloud) or not stale.hidden:
            continue
        if stale in found.partial and _age(stale, now) < grace:
            continue
        if not dry_run:
            gi.delete_image(cloud, stale.id)
        item(Action.CLEAN, stale.id, f"interrupted or unprovable upload ({stale.status})")

    best = found.best
    if best is not None:
        want = gi.image_properties(verified, origin=best.origin or "sync")
        changes = {
            k: v
            for k, v in want.items()
            if k in (gi.P_CREATED, gi.P_ENTRY_SHA256, gi.P_ENDORSER)
            and best.properties.get(k) != str(v)
        }
        reasons = []
        if changes:
            reasons.append("newer endorsement recorded")
        if best.hidden:
            reasons.append("accepted again: unhidden")
        if not reasons:
            item(Action.KEEP, best.id)
            return
        if not dry_run:
            if changes:
                gi.update_properties(cloud, best, changes)
            if best.hidden:
                gi.set_hidden(cloud, best, False)
        item(Action.UPDATE, best.id, "; ".join(reasons))
        return

    if dry_run:
        item(Action.ADD, reason=f"would upload {entry.bytes} bytes", bytes=entry.bytes)
        return
    t0 = time.monotonic()
    cb = progress(ident, entry.bytes) if progress else None
    path = fetch_verified(settings, verified, policy, progress=cb)
    up_cb = progress(f"upload {ident}", entry.bytes) if progress else None
    image = gi.upload_verified(
        cloud,
        verified,
        path,
        origin="sync",
        records=records,
        visibility=site.visibility,
        progress=up_cb,
    )
    recs.update(records.load())
    item(
        Action.ADD,
        image.id,
        f"uploaded {entry.bytes} bytes",
        bytes=entry.bytes,
        seconds=round(time.monotonic() - t0, 3),
    )


def _retire(
    cloud: Cloud,
    glance: _Glance,
    site: SiteConfig,
    accepted: set[str],
    why: dict[str, str],
    *,
    dry_run: bool,
    emit: Callable[[SyncItem], None],
) -> None:
    candidates: Sequence[gi.GlanceImage] = [
        i for i in glance.visible() if _is_ours(i, cloud) and i.identifier not in accepted
    ]
    if site.retire == "delete":
        candidates = [
            *candidates,
            *(i for i in glance.hidden() if _is_ours(i, cloud) and i.identifier not in accepted),
        ]
    if not candidates:
        return
    in_use = glance.in_use()
    for image in candidates:
        endorser = image.properties.get(gi.P_ENDORSER, "")
        n = in_use.get(image.id, 0)
        if n:
            emit(
                SyncItem(
                    Action.IN_USE,
                    image.identifier,
                    glance_id=image.id,
                    endorser=endorser,
                    reason=f"{why.get(image.identifier, 'no subscription accepts it now')}; "
                    f"used by {n} server(s): kept",
                )
            )
            continue
        action = Action.DELETE if site.retire == "delete" else Action.HIDE
        if not dry_run:
            if action is Action.DELETE:
                gi.delete_image(cloud, image.id)
            else:
                gi.set_hidden(cloud, image, True)
        emit(
            SyncItem(
                action,
                image.identifier,
                glance_id=image.id,
                endorser=endorser,
                reason=why.get(image.identifier, "no subscription accepts it now"),
            )
        )
