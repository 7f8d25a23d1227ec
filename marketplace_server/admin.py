"""What a registry's admin does outside the web service: rebind an endorser's e-mail.

In open mode an e-mail is bound to the first certificate that publishes under it; when an
endorser renews or loses their key (or someone else claimed their address first), the admin
binds the e-mail to the right certificate here. The server reads bindings at every upload,
so a running server needs no restart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from imagekit.entry.model import is_email
from imagekit.errors import InputError, NotFound
from imagekit.signing.keys import load_certificates

from .config import ServerConfig
from .ingest import signer_cert
from .storage import Binding, Storage


def rebind(
    config: ServerConfig, email: str, cert_path: Path, *, now: datetime | None = None
) -> tuple[Binding | None, Binding]:
    """Bind ``email`` to the certificate in ``cert_path`` (PEM or DER; the first one);
    return (the binding replaced or None, the new one).

    Raises InputError (not an e-mail, not a certificate), NotFound (no certificate file, no
    SQLite database in the data directory).
    """
    if not is_email(email):
        raise InputError(f"not an e-mail address: {email!r}")
    try:
        data = Path(cert_path).read_bytes()
    except FileNotFoundError as e:
        raise NotFound(f"certificate {cert_path} not found") from e
    except OSError as e:
        raise InputError(f"cannot read certificate {cert_path}: {e.strerror}") from e
    cert = load_certificates(data)[0]
    if config.db is None and not (config.data_dir / "marketplace.sqlite3").exists():
        raise NotFound(
            f"no marketplace database in {config.data_dir}",
            hint="give the server's --data-dir or --db",
        )
    storage = Storage(config.database_url)
    try:
        storage.create_schema()  # adds the bindings table to an older database
        signer = signer_cert(cert, vouched=False)
        old = storage.rebind(
            email, signer.fingerprint, signer.subject, now=now or datetime.now(UTC)
        )
        new = storage.binding(email)
    finally:
        storage.close()
    assert new is not None
    return old, new
