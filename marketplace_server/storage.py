"""Entries on disk: the queries the routes need (tables in ``models``).

Rows are keyed by (identifier, endorser e-mail, endorsement created) and never change except
for the ``latest`` flag, which marks the newest endorsement of each (identifier, endorser).
The signed XML is stored byte-for-byte; every other column is an index derived from the
verified entry at ingest time.

Text search: the words of title, description, tag, OS, e-mail and ID, lower-cased and split
on anything not alphanumeric; a query matches when each of its words is a prefix of some
word. SQLite answers with an FTS5 table, PostgreSQL with a GIN index on a ``simple``
tsvector: both index the same normalized text, so both backends agree.

Endorser identity: each e-mail is bound to one certificate (SHA-256 fingerprint) in
``endorser_bindings``. The first upload under an e-mail binds it (trust on first use); an
upload signed by another certificate is refused with ``CertificateNotBound`` unless the
server's trust store vouched for that certificate (then the binding moves to it); an admin
rebinds with ``Storage.rebind`` (``imagekit serve-admin rebind``). The check and the append
are one transaction, so a refused upload binds nothing.
"""

from __future__ import annotations

import builtins
import dataclasses
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from sqlalchemy import create_engine, event, func, select, text, tuple_, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import Select

from imagekit.entry import format_date
from imagekit.errors import Ambiguous, InvalidState, NotFound, Untrusted
from imagekit.market.summary import EntryColumns

from .models import BINDINGS as _BINDINGS
from .models import ENTRIES as _ENTRIES
from .models import LOCATIONS as _LOCATIONS
from .models import XML as _XML
from .models import Base

STATUSES = ("valid", "expired", "deprecated")


class CertificateNotBound(Untrusted):
    """The endorser e-mail is bound to another certificate (open mode, trust on first use)."""


@dataclasses.dataclass(frozen=True)
class SignerCert:
    """The certificate that signed an upload: what binds an e-mail to it.

    ``vouched``: the server's trust store (``--trust``) accepted the certificate, so it may
    take over an e-mail bound to another one (a renewed certificate from a trusted CA).
    """

    fingerprint: str  # SHA-256 of the DER, lower-case hex
    subject: str
    vouched: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class NewEntry(EntryColumns):
    """What ingest hands to storage: the signed bytes and the columns derived from them."""

    xml: builtins.bytes
    etag: str
    signer: SignerCert | None = None  # None: bulk loads and tests that bypass binding


def _row_values(entry: NewEntry) -> dict[str, Any]:
    """The ``entries`` columns of ``entry`` (without ``xml`` and ``signer``)."""
    values = {
        f.name: getattr(entry, f.name)
        for f in dataclasses.fields(entry)
        if f.name not in ("xml", "signer")
    }
    values["locations"] = "\n".join(entry.locations)
    return values


@dataclasses.dataclass(frozen=True, kw_only=True)
class StoredEntry(EntryColumns):
    """One stored endorsement, as lists and pages show it (``xml`` only when asked for)."""

    latest: bool
    etag: str
    uploaded: str
    xml: builtins.bytes | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.identifier, self.email, self.created)

    @property
    def path(self) -> str:
        """``/metadata/{id}/{email}/{created}``, each part percent-encoded where needed
        (e-mail local parts may hold ``?``, ``#`` or ``%``)."""
        return f"/metadata/{self.identifier}/{url_segment(self.email)}/{self.created}"

    def status(self, now: datetime) -> str:
        if self.deprecated is not None:
            return "deprecated"
        if self.valid is not None and self.valid < format_date(now):
            return "expired"
        return "valid"

    def to_dict(self, now: datetime) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "xml"}
        out["locations"] = list(self.locations)
        out["status"] = self.status(now)
        out["path"] = self.path
        return out


@dataclasses.dataclass(frozen=True)
class Query:
    """Filters of a listing. ``identifier`` may be a unique prefix; ``history`` includes
    superseded endorsements (otherwise only each (ID, endorser)'s latest)."""

    identifier: str | None = None
    email: str | None = None
    created: str | None = None
    status: str | None = None
    location: str | None = None
    os: str | None = None
    os_version: str | None = None
    arch: str | None = None
    kind: str | None = None
    tag: str | None = None
    q: str | None = None
    history: bool = False
    limit: int = 100
    offset: int = 0
    count: bool = False  # count every match, even past this page (costs a scan)


@dataclasses.dataclass(frozen=True)
class Page:
    """One page of a listing. ``total`` is None when more pages follow and counting was not
    asked for (``Query.count``): an exact count would scan every match."""

    entries: list[StoredEntry]
    total: int | None
    more: bool


@dataclasses.dataclass(frozen=True)
class Endorser:
    email: str
    entries: int
    latest_created: str
    fingerprint: str | None = None  # SHA-256 of the bound certificate
    bound_via: str | None = None  # first-use | trusted | admin
    bound: str | None = None


@dataclasses.dataclass(frozen=True)
class Binding:
    email: str
    fingerprint: str
    subject: str
    via: str
    bound: str


def url_segment(value: str) -> str:
    return quote(value, safe="@:+!$&'*=^`{|}~-._")


_WORD = re.compile(r"[^\W_]+")


def search_words(text_: str) -> list[str]:
    """The normalized words of ``text_``, as indexed and as queried."""
    return _WORD.findall(text_.lower())


def search_text(entry: NewEntry) -> str:
    parts = (
        entry.title,
        entry.description,
        entry.tag,
        entry.os,
        entry.os_version,
        entry.arch,
        entry.kind,
        entry.identifier,
        entry.email,
    )
    return " ".join(search_words(" ".join(p for p in parts if p)))


_COLUMNS = [c for c in _ENTRIES.c if c.name not in ("pk", "search", "is_deprecated")]


def _to_stored(row: Any, *, with_xml: bool = False) -> StoredEntry:
    m = row._mapping
    return StoredEntry(
        identifier=m["identifier"],
        email=m["email"],
        created=m["created"],
        latest=bool(m["latest"]),
        valid=m["valid"],
        deprecated=m["deprecated"],
        os=m["os"],
        os_version=m["os_version"],
        arch=m["arch"],
        kind=m["kind"],
        tag=m["tag"],
        title=m["title"],
        description=m["description"],
        locations=tuple(m["locations"].split("\n")) if m["locations"] else (),
        sha1=m["sha1"],
        bytes=m["bytes"],
        etag=m["etag"],
        uploaded=m["uploaded"],
        xml=bytes(m["xml"]) if with_xml else None,
    )


class Storage:
    """All database access of the server. Thread-safe; one instance per process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine: Engine = create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 30}
            )
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
            # Writes read first (bindings, the latest entry), then write. A deferred BEGIN
            # would let two worker processes both read and then fail the upgrade at once
            # ("database is locked", busy_timeout does not apply): writers BEGIN IMMEDIATE,
            # so the second waits for the first instead. Reads stay deferred (concurrent).
            self._writer: Engine = create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 30}
            )
            event.listen(self._writer, "connect", _sqlite_connect)
            event.listen(self._writer, "begin", _sqlite_begin_immediate)
        else:
            self.engine = create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
            self._writer = self.engine
        # SQLite has one writer; serialize this process's so they queue here, not in SQLite.
        self._write_lock = threading.Lock()

    def create_schema(self) -> None:
        Base.metadata.create_all(self._writer)
        if self.is_sqlite:
            with self._writer.begin() as conn:
                conn.execute(
                    text(
                        # contentless: only the index is kept, the text lives in entries.search
                        "CREATE VIRTUAL TABLE IF NOT EXISTS entries_fts USING fts5("
                        "search, content='', tokenize='unicode61')"
                    )
                )

    def close(self) -> None:
        self.engine.dispose()
        self._writer.dispose()

    # --- writes ------------------------------------------------------------------------

    def add(self, entry: NewEntry, *, now: datetime) -> StoredEntry:
        """Append ``entry``; raise InvalidState when it is not newer than the latest
        endorsement of its (identifier, endorser).

        Raise CertificateNotBound when the e-mail is bound to another certificate.
        """
        with self._write_lock:
            for attempt in (1, 2):
                try:
                    return self._add(entry, now)
                except IntegrityError as e:
                    # Another process won a race (the same key, a newer one, or the first
                    # binding of this e-mail): look again, so the refusal names the reason.
                    if attempt == 2:
                        raise InvalidState(
                            f"an endorsement of {entry.identifier} by {entry.email} at or "
                            f"after {entry.created} already exists"
                        ) from e
            raise AssertionError("unreachable")

    def _add(self, entry: NewEntry, now: datetime) -> StoredEntry:
        t = _ENTRIES
        with self._writer.begin() as conn:
            if entry.signer is not None:
                self._check_binding(conn, entry.email, entry.signer, now)
            latest = conn.execute(
                select(t.c.pk, t.c.created)
                .where(t.c.identifier == entry.identifier, t.c.email == entry.email, t.c.latest)
                .with_for_update()
            ).first()
            if latest is not None and latest.created >= entry.created:
                raise InvalidState(
                    f"not newer than the latest endorsement of {entry.identifier} by "
                    f"{entry.email} ({latest.created}); entries are append-only"
                )
            if latest is not None:
                conn.execute(update(t).where(t.c.pk == latest.pk).values(latest=False))
            values = _row_values(entry)
            xml = entry.xml
            values.update(
                latest=True,
                search=search_text(entry),
                uploaded=format_date(now),
                is_deprecated=entry.deprecated is not None,
            )
            inserted = conn.execute(t.insert().values(**values)).inserted_primary_key
            assert inserted is not None
            pk = inserted[0]
            conn.execute(_XML.insert().values(pk=pk, xml=xml))
            if entry.locations:
                conn.execute(
                    _LOCATIONS.insert(),
                    [{"entry_pk": pk, "url": url} for url in entry.locations],
                )
            if self.is_sqlite:
                conn.execute(
                    text("INSERT INTO entries_fts(rowid, search) VALUES (:pk, :s)"),
                    {"pk": pk, "s": values["search"]},
                )
        return self._stored(values)

    def _check_binding(self, conn: Any, email: str, signer: SignerCert, now: datetime) -> None:
        b = _BINDINGS
        row = conn.execute(
            select(b.c.fingerprint).where(b.c.email == email).with_for_update()
        ).first()
        values = {
            "fingerprint": signer.fingerprint,
            "subject": signer.subject,
            "bound": format_date(now),
        }
        if row is None:
            via = "trusted" if signer.vouched else "first-use"
            conn.execute(b.insert().values(email=email, via=via, **values))
        elif row.fingerprint != signer.fingerprint:
            if not signer.vouched:
                raise CertificateNotBound(
                    f"endorser {email} is bound to another certificate (SHA-256 "
                    f"{row.fingerprint}), not to this one ({signer.fingerprint}); "
                    "the registry's admin can rebind it"
                )
            conn.execute(update(b).where(b.c.email == email).values(via="trusted", **values))

    def binding(self, email: str) -> Binding | None:
        """The certificate ``email`` is bound to, or None."""
        b = _BINDINGS
        with self.engine.connect() as conn:
            row = conn.execute(select(b).where(b.c.email == email)).first()
        return None if row is None else Binding(**row._mapping)

    def rebind(
        self, email: str, fingerprint: str, subject: str, *, now: datetime
    ) -> Binding | None:
        """Bind ``email`` to the certificate with ``fingerprint`` (an admin's decision);
        return the binding it replaces, if any."""
        b = _BINDINGS
        with self._write_lock, self._writer.begin() as conn:
            old = conn.execute(select(b).where(b.c.email == email).with_for_update()).first()
            values = {
                "fingerprint": fingerprint,
                "subject": subject,
                "via": "admin",
                "bound": format_date(now),
            }
            if old is None:
                conn.execute(b.insert().values(email=email, **values))
            else:
                conn.execute(update(b).where(b.c.email == email).values(**values))
        return None if old is None else Binding(**old._mapping)

    def bind_if_unbound(self, email: str, signer: SignerCert, *, now: datetime) -> bool:
        """Bind ``email`` to ``signer`` unless it is bound already; True if it bound."""
        with self._write_lock:
            try:
                with self._writer.begin() as conn:
                    if conn.execute(
                        select(_BINDINGS.c.email).where(_BINDINGS.c.email == email)
                    ).first():
                        return False
                    self._check_binding(conn, email, signer, now)
            except IntegrityError:
                return False  # another process bound it meanwhile
        return True

    def unbound_emails(self) -> list[str]:
        """Endorsers stored before bindings existed (``create_schema`` binds them)."""
        t, b = _ENTRIES, _BINDINGS
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(t.c.email).distinct().where(~t.c.email.in_(select(b.c.email)))
                ).scalars()
            )

    def first_xml(self, email: str) -> bytes | None:
        """The signed bytes of the endorser's first upload."""
        t = _ENTRIES
        with self.engine.connect() as conn:
            xml = conn.execute(
                select(_XML.c.xml)
                .join(t, t.c.pk == _XML.c.pk)
                .where(t.c.email == email)
                .order_by(t.c.pk)
                .limit(1)
            ).scalar()
        return None if xml is None else bytes(xml)

    def add_many(self, entries: Iterable[NewEntry], *, now: datetime) -> int:
        """Bulk load (benchmarks, imports): each must be the first of its (ID, endorser).
        Entries with a ``signer`` are bound like uploads (CertificateNotBound refuses the
        batch)."""
        n = 0
        batch: list[NewEntry] = []
        for entry in entries:
            batch.append(entry)
            if len(batch) >= 2000:
                n += self._add_batch(batch, now)
                batch = []
        if batch:
            n += self._add_batch(batch, now)
        return n

    def _add_batch(self, batch: Sequence[NewEntry], now: datetime) -> int:
        t = _ENTRIES
        uploaded = format_date(now)
        rows, blobs = [], {}
        for entry in batch:
            values = _row_values(entry)
            blobs[(entry.identifier, entry.email)] = entry.xml
            values.update(
                latest=True,
                search=search_text(entry),
                uploaded=uploaded,
                is_deprecated=entry.deprecated is not None,
            )
            rows.append(values)
        # every distinct (e-mail, certificate), in order: the first binds, another refuses
        signers = {(e.email, e.signer): None for e in batch if e.signer is not None}
        with self._write_lock, self._writer.begin() as conn:
            for email, signer in signers:
                self._check_binding(conn, email, signer, now)
            conn.execute(t.insert(), rows)
            keys = conn.execute(
                select(t.c.pk, t.c.identifier, t.c.email, t.c.search, t.c.locations).where(
                    t.c.identifier.in_([e.identifier for e in batch]), t.c.latest
                )
            ).all()
            conn.execute(
                _XML.insert(),
                [
                    {"pk": k.pk, "xml": blobs[(k.identifier, k.email)]}
                    for k in keys
                    if (k.identifier, k.email) in blobs
                ],
            )
            locs = [
                {"entry_pk": k.pk, "url": url}
                for k in keys
                if k.locations
                for url in k.locations.split("\n")
            ]
            if locs:
                conn.execute(_LOCATIONS.insert(), locs)
            if self.is_sqlite:
                conn.execute(
                    text("INSERT INTO entries_fts(rowid, search) VALUES (:pk, :s)"),
                    [{"pk": k.pk, "s": k.search} for k in keys],
                )
        return len(batch)

    @staticmethod
    def _stored(values: dict[str, Any]) -> StoredEntry:
        fields = {f.name for f in dataclasses.fields(StoredEntry)} - {"xml", "locations", "latest"}
        return StoredEntry(
            **{k: values[k] for k in fields},
            latest=True,
            locations=tuple(values["locations"].split("\n")) if values["locations"] else (),
        )

    # --- reads -------------------------------------------------------------------------

    def get(self, identifier: str, email: str, created: str) -> StoredEntry:
        """The entry with this exact key (ID may be a unique prefix); NotFound otherwise."""
        identifier = self.resolve_identifier(identifier)
        t = _ENTRIES
        with self.engine.connect() as conn:
            row = conn.execute(
                select(*_COLUMNS, _XML.c.xml)
                .join(_XML, _XML.c.pk == t.c.pk)
                .where(t.c.identifier == identifier, t.c.email == email, t.c.created == created)
            ).first()
        if row is None:
            raise NotFound(f"no entry {identifier}/{email}/{created}")
        return _to_stored(row, with_xml=True)

    def get_xml(self, identifier: str, email: str, created: str) -> tuple[bytes, str] | None:
        """(signed bytes, etag) for an exact key, or None: the hot path, one indexed read."""
        t = _ENTRIES
        with self.engine.connect() as conn:
            row = conn.execute(
                select(_XML.c.xml, t.c.etag)
                .join(_XML, _XML.c.pk == t.c.pk)
                .where(t.c.identifier == identifier, t.c.email == email, t.c.created == created)
            ).first()
        return None if row is None else (bytes(row.xml), row.etag)

    def iter_xml(self, entries: Sequence[StoredEntry], *, batch: int = 32) -> Iterator[bytes]:
        """The signed bytes of ``entries``, in order, read ``batch`` at a time: a list of
        a thousand entries never sits in memory whole."""
        t = _ENTRIES
        for start in range(0, len(entries), batch):
            keys = [e.key for e in entries[start : start + batch]]
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(t.c.identifier, t.c.email, t.c.created, _XML.c.xml)
                    .join(_XML, _XML.c.pk == t.c.pk)
                    .where(tuple_(t.c.identifier, t.c.email, t.c.created).in_(keys))
                ).all()
            found = {(r.identifier, r.email, r.created): bytes(r.xml) for r in rows}
            for key in keys:
                if key in found:  # rows are never deleted; guard anyway
                    yield found[key]

    def resolve_identifier(self, prefix: str) -> str:
        """The one identifier starting with ``prefix``; NotFound or Ambiguous otherwise."""
        t = _ENTRIES
        if not prefix or len(prefix) > 27 or not re.fullmatch(r"[A-Za-z0-9_-]+", prefix):
            raise NotFound(f"not an identifier: {prefix!r}")
        with self.engine.connect() as conn:
            if len(prefix) == 27:
                found = (
                    conn.execute(select(t.c.identifier).where(t.c.identifier == prefix).limit(1))
                    .scalars()
                    .all()
                )
            else:
                found = (
                    conn.execute(
                        select(t.c.identifier)
                        .where(t.c.identifier >= prefix, t.c.identifier < prefix + "\x7f")
                        .distinct()
                        .limit(2)
                    )
                    .scalars()
                    .all()
                )
        if not found:
            raise NotFound(
                f"no entry with identifier {prefix}"
                if len(prefix) == 27
                else f"no entry with an identifier starting with {prefix!r}"
            )
        if len(found) > 1:
            raise Ambiguous(f"ambiguous identifier prefix {prefix!r}: {', '.join(found)}, ...")
        return found[0]

    def find(self, query: Query, *, now: datetime, with_xml: bool = False) -> Page:
        """One page of entries matching ``query``, newest endorsement first."""
        t = _ENTRIES
        conds: list[Any] = []
        if query.identifier:
            identifier = self.resolve_identifier(query.identifier)
            conds.append(t.c.identifier == identifier)
        if not query.history:
            conds.append(t.c.latest == True)  # noqa: E712  (= 1: an equality the indexes use)
        for name, column in (
            ("email", t.c.email),
            ("created", t.c.created),
            ("os", t.c.os),
            ("os_version", t.c.os_version),
            ("arch", t.c.arch),
            ("kind", t.c.kind),
            ("tag", t.c.tag),
        ):
            value = getattr(query, name)
            if value is not None:
                conds.append(column == value)
        live = t.c.is_deprecated == False  # noqa: E712
        if query.tag is not None:
            conds.append(live)
        if query.status is not None:
            stamp = format_date(now)
            if query.status == "deprecated":
                conds.append(t.c.is_deprecated == True)  # noqa: E712
            elif query.status == "expired":
                conds += [live, t.c.valid < stamp]
            else:
                conds += [live, (t.c.valid.is_(None)) | (t.c.valid >= stamp)]
        if query.location is not None:
            loc = _LOCATIONS
            conds.append(t.c.pk.in_(select(loc.c.entry_pk).where(loc.c.url == query.location)))
        words = search_words(query.q) if query.q else []
        stmt: Select[Any] = (
            select(*_COLUMNS, t.c.pk)
            .where(*conds)
            # pk breaks ties: the indexes end with it, so no sort is needed
            .order_by(t.c.created.desc(), t.c.pk.desc())
            .limit(query.limit + 1)
            .offset(query.offset)
        )
        with self.engine.connect() as conn:
            if words:
                text_cond = self._text_condition(conn, words)
                conds.append(text_cond)
                stmt = stmt.where(text_cond)
            rows = conn.execute(stmt).all()
            more = len(rows) > query.limit
            rows = rows[: query.limit]
            total: int | None = None
            if not more and (rows or query.offset == 0):
                total = query.offset + len(rows)
            elif query.count:
                total = conn.execute(select(func.count()).select_from(t).where(*conds)).scalar_one()
            entries = [_to_stored(r) for r in rows]
            if with_xml and rows:
                blobs = dict(
                    conn.execute(
                        select(_XML.c.pk, _XML.c.xml).where(_XML.c.pk.in_([r.pk for r in rows]))
                    ).all()
                )
                entries = [
                    dataclasses.replace(e, xml=bytes(blobs[r.pk]))
                    for e, r in zip(entries, rows, strict=True)
                ]
        return Page(entries, total, more)

    def _text_condition(self, conn: Any, words: list[str]) -> Any:
        t = _ENTRIES
        if self.is_sqlite:
            match = " AND ".join(f'"{w}"*' for w in words)
            matches = text("SELECT rowid FROM entries_fts WHERE entries_fts MATCH :m").bindparams(
                m=match
            )
            n = conn.execute(
                text("SELECT count(*) FROM entries_fts WHERE entries_fts MATCH :m"), {"m": match}
            ).scalar_one()
            if n <= 1000:
                return t.c.pk.in_(matches)  # few matches: start from them
            # Many: walk the other filters' index in created order and test membership
            # (``pk + 0`` keeps SQLite from driving the query by the match list).
            return (t.c.pk + 0).in_(matches)
        tsquery = " & ".join(f"{w}:*" for w in words)
        return func.to_tsvector(text("'simple'"), t.c.search).op("@@")(
            func.to_tsquery(text("'simple'"), tsquery)
        )

    def by_tag(self, email: str, tag: str) -> StoredEntry:
        """The endorser's newest current, non-deprecated entry tagged ``tag``."""
        t = _ENTRIES
        with self.engine.connect() as conn:
            row = conn.execute(
                select(*_COLUMNS, _XML.c.xml)
                .join(_XML, _XML.c.pk == t.c.pk)
                .where(
                    t.c.email == email,
                    t.c.tag == tag,
                    t.c.latest == True,  # noqa: E712
                    t.c.is_deprecated == False,  # noqa: E712
                )
                .order_by(t.c.created.desc())
                .limit(1)
            ).first()
        if row is None:
            raise NotFound(f"no current entry tagged {tag!r} by {email}")
        return _to_stored(row, with_xml=True)

    def endorsers(self, *, limit: int = 100, offset: int = 0) -> tuple[list[Endorser], bool]:
        """One page of endorsers by e-mail, and whether another page follows."""
        t, b = _ENTRIES, _BINDINGS
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.c.email, func.count(), func.max(t.c.created))
                .group_by(t.c.email)
                .order_by(t.c.email)
                .limit(limit + 1)
                .offset(offset)
            ).all()
            more = len(rows) > limit
            rows = rows[:limit]
            bound = (
                {
                    r.email: r
                    for r in conn.execute(select(b).where(b.c.email.in_([r[0] for r in rows])))
                }
                if rows
                else {}
            )
        return [_endorser(r[0], r[1], r[2], bound.get(r[0])) for r in rows], more

    def endorser(self, email: str) -> Endorser:
        t, b = _ENTRIES, _BINDINGS
        with self.engine.connect() as conn:
            row = conn.execute(
                select(func.count(), func.max(t.c.created)).where(t.c.email == email)
            ).first()
            binding = conn.execute(select(b).where(b.c.email == email)).first()
        if row is None or not row[0]:
            raise NotFound(f"no endorser {email}")
        return _endorser(email, row[0], row[1], binding)

    def history(self, identifier: str, email: str | None = None) -> list[StoredEntry]:
        """Every endorsement of an ID (optionally by one endorser), newest first."""
        identifier = self.resolve_identifier(identifier)
        return self.find(
            Query(identifier=identifier, email=email, history=True, limit=10_000),
            now=datetime.now(UTC),
        ).entries


def _endorser(email: str, entries: int, latest: str, binding: Any) -> Endorser:
    if binding is None:
        return Endorser(email, entries, latest)
    return Endorser(email, entries, latest, binding.fingerprint, binding.via, binding.bound)


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy, not pysqlite, decide where transactions begin (SQLAlchemy's recipe).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN")


def _sqlite_begin_immediate(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")
