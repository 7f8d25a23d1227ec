"""Errors from a cloud, each turned into one line that names the cause.

openstacksdk raises ``HttpException`` (with the service's own message), ``ResourceFailure``
(a server or image went to ERROR), ``ResourceTimeout``, ``ConfigException`` (no such cloud
in clouds.yaml) and connection errors. ``cloud_errors`` wraps each SDK call site once and
maps them onto imagekit's families: the cloud's configuration is the caller's input, a
refusal by the cloud (quota, no valid host, image in error) is the environment's.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from ..errors import EnvironmentProblem, InputError, NetworkError, NotFound


class CloudError(EnvironmentProblem):
    """The cloud refused or failed an operation; the message names the cause."""


class QuotaExceeded(CloudError):
    pass


class NoValidHost(CloudError):
    """The scheduler found no compute host for the server (flavor too large, host full)."""


class ImageInError(CloudError):
    """A Glance image is not usable (status error or killed, or its upload failed)."""


class NoBlockStorage(CloudError):
    """The cloud has no block-storage service, and the operation needs volumes."""


class CloudAuthFailed(CloudError):
    pass


def _message(e: BaseException) -> str:
    """The service's own words, without the SDK's request dump."""
    details = getattr(e, "details", None)
    text = str(details or getattr(e, "message", None) or e)
    text = re.sub(r"\s+", " ", text).strip()
    return text[:400]


def classify(e: BaseException, what: str) -> Exception:
    """An imagekit error for SDK exception ``e`` raised while doing ``what``."""
    from openstack import exceptions as ox

    msg = _message(e)
    low = msg.lower()
    if isinstance(e, ox.ConfigException):
        return InputError(
            f"cloud configuration: {msg}",
            hint="name a cloud of clouds.yaml with --cloud, or set OS_* variables",
        )
    if "quota" in low or ("exceeded" in low and "limit" in low):
        return QuotaExceeded(f"{what}: quota exceeded: {msg}")
    if "no valid host" in low:
        return NoValidHost(f"{what}: no valid host: {msg}")
    if isinstance(e, ox.ResourceTimeout):
        return CloudError(f"{what}: timed out: {msg}")
    if isinstance(e, ox.ResourceFailure):
        return CloudError(f"{what}: {msg}")
    if isinstance(e, ox.HttpException):
        status = e.status_code
        if status == 401:
            return CloudAuthFailed(f"{what}: authentication failed: {msg}")
        if status == 404 or isinstance(e, ox.NotFoundException):
            return NotFound(f"{what}: not found: {msg}")
        if status == 413:
            return QuotaExceeded(f"{what}: over a limit: {msg}")
        if status is None:
            return NetworkError(f"{what}: cannot reach the cloud: {msg}")
        return CloudError(f"{what}: the cloud answered {status}: {msg}")
    if isinstance(e, ox.SDKException):
        if "connect" in low or "unable to establish" in low:
            return NetworkError(f"{what}: cannot reach the cloud: {msg}")
        return CloudError(f"{what}: {msg}")
    return CloudError(f"{what}: {type(e).__name__}: {msg}")


@contextlib.contextmanager
def cloud_errors(what: str) -> Iterator[None]:
    """Turn SDK (and keystoneauth) exceptions raised inside into imagekit errors."""
    from keystoneauth1 import exceptions as kx
    from openstack import exceptions as ox

    try:
        yield
    except (ox.SDKException, kx.ClientException) as e:
        if isinstance(e, kx.ConnectFailure | kx.ConnectionError):
            raise NetworkError(f"{what}: cannot reach the cloud: {_message(e)}") from e
        if isinstance(e, kx.Unauthorized):
            raise CloudAuthFailed(f"{what}: authentication failed: {_message(e)}") from e
        if isinstance(e, kx.ClientException) and not isinstance(e, ox.SDKException):
            raise CloudError(f"{what}: {_message(e)}") from e
        raise classify(e, what) from e
