"""``snapshot --cloud``: a server's disk into a new appliance and its unsigned entry.

Exactly like the local snapshot (``imagekit.snapshot``): Nova snapshots the server into
Glance, imagekit streams that image to a temporary file beside the output, converts it to
a flattened, compressed qcow2 (``qemu-img convert -c``), and writes a fresh draft entry
over those bytes (new checksums and ID, ``dcterms:replaces`` the base ID, the base's terms
carried over, its version bumped). The Glance snapshot is deleted afterwards: the
appliance is published through the marketplace, and ``sync`` brings it back verified.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any

from .._files import atomic_write
from .._run import find_tool
from ..entry import Entry, entry_to_bytes
from ..entry.describe import describe_image
from ..errors import ImagekitError, InputError
from ..launch import snapshot as local
from ..launch.qemu import QEMU_IMG
from ..settings import Settings
from . import servers
from .connection import Cloud

_QEMU_FORMATS = {
    "raw": "raw",
    "qcow2": "qcow2",
    "vmdk": "vmdk",
    "vdi": "vdi",
    "vhd": "vpc",
    "vhdx": "vhdx",
    "iso": "raw",
}


def snapshot_server(
    settings: Settings,
    cloud: Cloud,
    name: str,
    output: Path,
    *,
    entry_output: Path | None = None,
    fields: dict[str, Any] | None = None,
    carry_base: bool = True,
    overwrite: bool = False,
    client: Any = None,
) -> local.Snapshot:
    """Raises NotFound (server), InputError (output exists or is not .qcow2, bad field),
    ImageInError / CloudError (the snapshot failed in the cloud), EnvironmentProblem."""
    t0 = time.monotonic()
    output = local._check_output(output, overwrite=overwrite)
    if output.suffix.lower() in local._NOT_QCOW2:
        raise InputError(f"{output}: a snapshot is written as qcow2, not {output.suffix}")
    entry_output = local._check_output(
        entry_output or output.with_name(output.name + ".xml"), overwrite=overwrite
    )
    find_tool(QEMU_IMG)
    values = dict(fields or {})
    if "tag" in values:
        values["alternative"] = values.pop("tag")
    unknown = set(values) - {f.name for f in dataclasses.fields(Entry)}
    if unknown:
        raise InputError(f"unknown entry field(s): {', '.join(sorted(unknown))}")
    server = servers.find_server(cloud, name)
    base: Entry | None = None
    if carry_base and server.image_id:
        from ..launch.images import make_resolver

        try:
            resolver, _policy = make_resolver(settings, client=client)
            base = resolver.resolve(server.image_id).entry
        except ImagekitError:
            base = None
    draft: dict[str, Any] = {}
    if base is not None:
        draft = {k: getattr(base, k) for k in local.CARRIED if getattr(base, k) not in (None, ())}
    draft["version"] = local.bump_version(base.version if base else None)
    draft.update({k: v for k, v in values.items() if v is not None})
    draft["replaces"] = server.image_id or None

    raw = output.with_name(f".{output.name}.download")
    try:
        _server, fmt = servers.download_server_image(cloud, server.id, raw)
        local._convert(raw, _QEMU_FORMATS.get(fmt, "qcow2"), output, shared=False)
    finally:
        with contextlib.suppress(FileNotFoundError):
            raw.unlink()
    try:
        entry = describe_image(output, format="qcow2", kind="machine", **draft)
        atomic_write(entry_output, entry_to_bytes(entry))
    except BaseException:
        output.unlink(missing_ok=True)
        raise
    return local.Snapshot(output, entry_output, entry, "cloud snapshot", time.monotonic() - t0)
