"""OpenStack config drive (label ``config-2``), the ``openstack/latest`` layout.

``meta_data.json`` holds ``uuid``, ``hostname``/``name``, ``public_keys`` (key0, key1...),
``files`` (each ``{"path", "content_path"}`` pointing at ``openstack/content/NNNN``) and the
``--var`` pairs under ``meta``; ``user_data`` is the user data as is; ``network_data.json``
is the ``--network-config`` file, which must be JSON (OpenStack's network_data format);
``vendor_data.json`` carries, under ``cloud-init``, the cloud-config that enables a swap disk
(the same as NoCloud's vendor-data).
"""

from __future__ import annotations

import json
from typing import Any

from ._spec import ContextError, ContextMedium, ContextScheme, ContextSpec, register
from .nocloud import vendor_config

LABEL = "config-2"
_BASE = "openstack/latest"


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


@register(ContextScheme.CONFIGDRIVE)
def render(spec: ContextSpec) -> ContextMedium:
    files: dict[str, bytes] = {}
    modes: dict[str, int] = {}
    meta: dict[str, Any] = {
        "uuid": spec.instance_id,
        "availability_zone": "nova",
        "launch_index": 0,
        "files": [],
    }
    if spec.hostname:
        meta["hostname"] = spec.hostname
        meta["name"] = spec.hostname.split(".", 1)[0]
    if spec.ssh_keys:
        meta["public_keys"] = {f"key{i}": k for i, k in enumerate(spec.ssh_keys)}
    if spec.variables:
        meta["meta"] = dict(spec.variables)
    for i, f in enumerate(spec.files):
        content = f"openstack/content/{i:04d}"
        files[content] = f.data
        modes[content] = f.mode
        meta["files"].append({"path": f.path, "content_path": f"/content/{i:04d}"})
    files[f"{_BASE}/meta_data.json"] = _json(meta)
    if spec.user_data is not None:
        files[f"{_BASE}/user_data"] = spec.user_data
    vendor = vendor_config(spec)
    if vendor is not None:
        files[f"{_BASE}/vendor_data.json"] = _json({"cloud-init": vendor.decode()})
    if spec.network_config is not None:
        try:
            net = json.loads(spec.network_config)
        except ValueError as e:
            raise ContextError(
                f"configdrive: network config must be network_data.json (JSON): {e}"
            ) from e
        if not isinstance(net, dict):
            raise ContextError("configdrive: network_data.json must be a JSON object")
        files[f"{_BASE}/network_data.json"] = spec.network_config
    return ContextMedium(LABEL, files, modes)
