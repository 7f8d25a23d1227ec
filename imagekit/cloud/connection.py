"""One authenticated connection to a cloud named in clouds.yaml (or by OS_* variables).

``connect`` reads the standard OpenStack client configuration through openstacksdk
(``clouds.yaml`` in the current directory, ``~/.config/openstack/`` or ``/etc/openstack/``,
``OS_CLOUD`` and the other ``OS_*`` variables) and authenticates once: a bad name, a bad
password or an unreachable keystone fail here, before anything is created.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any

from .errors import cloud_errors

log = logging.getLogger(__name__)

# Servers without a network interface (``networks="none"``) need compute microversion
# 2.37 or later; the SDK negotiates the highest both sides speak, so this is a floor that
# is checked, not a version that is forced.
MIN_COMPUTE_MICROVERSION = (2, 37)


@dataclasses.dataclass
class Cloud:
    """A connected cloud: its name, the SDK connection and what it offers."""

    name: str
    conn: Any  # openstack.connection.Connection (the SDK is untyped)

    @functools.cached_property
    def project_id(self) -> str:
        with cloud_errors(f"cloud {self.name}"):
            return str(self.conn.current_project_id)

    @functools.cached_property
    def has_block_storage(self) -> bool:
        """Whether the catalogue lists a block-storage (cinder) endpoint."""
        with cloud_errors(f"cloud {self.name}"):
            return any(
                bool(self.conn.has_service(kind))
                for kind in ("block-storage", "volumev3", "volume")
            )

    def check_compute_version(self) -> None:
        """Raise CloudError if Nova is older than MIN_COMPUTE_MICROVERSION."""
        from .errors import CloudError

        with cloud_errors(f"cloud {self.name}: compute API version"):
            data = self.conn.compute.get_endpoint_data()
        have = tuple(data.max_microversion or (2, 1)) if data is not None else (2, 1)
        if have < MIN_COMPUTE_MICROVERSION:
            need = ".".join(map(str, MIN_COMPUTE_MICROVERSION))
            raise CloudError(
                f"cloud {self.name}: the compute API speaks up to {'.'.join(map(str, have))}; "
                f"servers without a network interface need {need}"
            )

    def close(self) -> None:
        with cloud_errors(f"cloud {self.name}"):
            self.conn.close()

    def __enter__(self) -> Cloud:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(name: str | None, *, authenticate: bool = True) -> Cloud:
    """Connect to cloud ``name`` (None: ``OS_CLOUD`` or the ``OS_*`` variables).

    Raises InputError (no such cloud, incomplete configuration), CloudAuthFailed,
    NetworkError (keystone unreachable).
    """
    import openstack

    label = name or "(from OS_* variables)"
    with cloud_errors(f"cloud {label}"):
        conn = openstack.connect(cloud=name) if name else openstack.connect()
        if authenticate:
            conn.authorize()
    return Cloud(name=name or str(conn.config.name), conn=conn)
