"""cloud-init NoCloud (label ``cidata``): ``meta-data``, ``user-data``, ``network-config``,
``vendor-data``.

meta-data carries ``instance-id``, ``local-hostname``, ``public-keys`` and, under
``variables``, the ``--var`` pairs (cloud-init keeps them in its instance data). Files go
through cloud-config ``write_files`` (base64); when the user gave user-data too, both travel
as MIME multipart, the files part asking cloud-init to append lists, not replace them.
A swap disk (``swap_label``) is enabled by ``vendor-data``: the site's cloud-config, which
the user's own user-data can still override (cloud-init's ``mounts`` module adds it to
fstab and runs ``swapon -a``).
"""

from __future__ import annotations

import base64
import email.message
import email.parser
import email.policy
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

import yaml

from ._spec import ContextError, ContextMedium, ContextScheme, ContextSpec, UserDataType, register

LABEL = "cidata"
_MERGE = "list(append)+dict(no_replace,recurse_list)+str()"


def _yaml(value: Any) -> bytes:
    # width: never fold long ssh keys; sort_keys off: instance-id first, as people expect
    return yaml.safe_dump(
        value, default_flow_style=False, sort_keys=False, width=1 << 30, allow_unicode=True
    ).encode()


def write_files_config(spec: ContextSpec) -> bytes:
    files = [
        {
            "path": f.path,
            "encoding": "b64",
            "content": base64.b64encode(f.data).decode(),
            "permissions": f"{f.mode:04o}",
            "owner": "root:root",
        }
        for f in spec.files
    ]
    return b"#cloud-config\n" + _yaml({"write_files": files})


def _part(data: bytes, kind: UserDataType, filename: str) -> email.message.Message:
    if kind is UserDataType.MIME:
        return email.parser.BytesParser(policy=email.policy.compat32).parsebytes(data)
    subtype = kind.mime_type.split("/", 1)[1]
    part = MIMEText(data.decode("utf-8", "surrogateescape"), subtype, "utf-8")
    part.add_header("Content-Disposition", "attachment", filename=filename)
    return part


def user_data(spec: ContextSpec) -> bytes:
    """The user-data file: the user's as is, the files' cloud-config, or both as MIME."""
    if not spec.files:
        return spec.user_data if spec.user_data is not None else b"#cloud-config\n{}\n"
    files_part = write_files_config(spec)
    if spec.user_data is None:
        return files_part
    kind = spec.user_data_type
    assert kind is not None
    if kind is UserDataType.GZIP:
        raise ContextError("nocloud: cannot add --file to gzip-compressed user-data")
    outer = MIMEMultipart()
    user = _part(spec.user_data, kind, "user-data")
    if kind is UserDataType.MIME:
        for sub in user.get_payload():  # type: ignore[union-attr]
            outer.attach(sub)
    else:
        outer.attach(user)
    files = _part(files_part, UserDataType.CLOUD_CONFIG, "imagekit-files.cfg")
    files.add_header("Merge-Type", _MERGE)
    outer.attach(files)
    # a fixed boundary: the same spec gives the same bytes
    outer.set_boundary("===============imagekit-context==")
    return outer.as_bytes()


def vendor_config(spec: ContextSpec) -> bytes | None:
    """The cloud-config imagekit adds as vendor data (swap), or None."""
    if spec.swap_label is None:
        return None
    return b"#cloud-config\n" + _yaml(
        {"mounts": [[f"LABEL={spec.swap_label}", "none", "swap", "sw", "0", "0"]]}
    )


@register(ContextScheme.NOCLOUD)
def render(spec: ContextSpec) -> ContextMedium:
    meta: dict[str, Any] = {"instance-id": spec.instance_id}
    if spec.hostname:
        meta["local-hostname"] = spec.hostname
    if spec.ssh_keys:
        meta["public-keys"] = list(spec.ssh_keys)
    if spec.variables:
        meta["variables"] = dict(spec.variables)
    files = {"meta-data": _yaml(meta), "user-data": user_data(spec)}
    vendor = vendor_config(spec)
    if vendor is not None:
        files["vendor-data"] = vendor
    if spec.network_config is not None:
        try:
            net = yaml.safe_load(spec.network_config)
        except yaml.YAMLError as e:
            raise ContextError(f"nocloud: network-config is not YAML: {e}") from e
        if not isinstance(net, dict):
            raise ContextError("nocloud: network-config must be a YAML mapping (v1 or v2)")
        files["network-config"] = spec.network_config
    return ContextMedium(LABEL, files)
