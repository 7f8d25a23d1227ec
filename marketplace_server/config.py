"""The server's configuration: one frozen value built by ``__main__`` or by tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

#: Largest entry accepted by ``POST /metadata`` (413 above it). Real entries are ~5 KB.
MAX_UPLOAD_BYTES = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """How one marketplace server runs.

    ``db``: an SQLAlchemy URL (``postgresql://...``) or None for SQLite in ``data_dir``.
    ``trust``: PEM files or directories (pinned endorser certificates, CA certificates, CRLs);
    empty means the open-registry mode ``any valid signature`` (the StratusLab default): any
    correctly signed entry whose endorser matches its certificate is accepted, and trust is
    left to the clients, which verify every entry locally anyway.
    ``vouch``: in open mode, PEM files or directories (CAs, pinned certificates, CRLs) whose
    word lets a certificate publish under an e-mail bound to another one (the binding moves
    to it); without it only ``imagekit serve-admin rebind`` moves a binding.
    ``files_dir``: a directory served read-only at ``/files/`` (image bytes from
    ``imagekit publish --to DIR``).
    ``header_timeout``, ``body_timeout``: seconds a client has to send its request headers
    (from connecting) and then its body, before the connection is closed (``_http``);
    ``max_connections``: connections per worker process before new requests get 503.
    ``allow_file_locations``: accept ``file:`` locations (a registry for one machine);
    otherwise only ``http``, ``https`` and ``s3`` (``imagekit.entry.model.check_location``).
    """

    data_dir: Path
    db: str | None = None
    trust: tuple[str, ...] = ()
    vouch: tuple[str, ...] = ()
    files_dir: Path | None = None
    allow_sha1: bool = False
    allow_file_locations: bool = False
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    keep_alive_timeout: float = 5.0
    max_connections: int = 1000
    cache_entries: int = 4096

    @property
    def any_valid_signature(self) -> bool:
        return not self.trust

    @property
    def database_url(self) -> str:
        if self.db:
            url = self.db
            # psycopg 3 is the installed driver; plain postgresql:// would ask for psycopg2.
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            return url
        return f"sqlite:///{self.data_dir / 'marketplace.sqlite3'}"
