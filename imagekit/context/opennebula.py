"""OpenNebula (label ``CONTEXT``): ``context.sh``, ``KEY='value'`` lines for POSIX sh.

Variables: ``SET_HOSTNAME`` and ``HOSTNAME`` (--hostname), ``SSH_PUBLIC_KEY`` (keys, one a
line), ``VMID`` (the instance id), ``USER_DATA`` (cloud-init's OpenNebula datasource reads
it) and, for a ``#!`` script, ``START_SCRIPT_BASE64`` (one-context runs it), then the
``--var`` pairs. Files: OpenNebula's FILES_DS only puts files on the medium, so imagekit puts
each at ``files/NNNN`` and lists ``NNNN MODE DEST`` lines in ``IMAGEKIT_FILES``; the
imagekit-context guest agent installs them. A swap disk: ``IMAGEKIT_SWAP`` is its label,
the guest agent enables it. No network config: pass ``ETH0_*`` with --var.
"""

from __future__ import annotations

import base64

from ._shell import merge_variables, sh_assignments
from ._spec import ContextError, ContextMedium, ContextScheme, ContextSpec, register

LABEL = "CONTEXT"


def files_listing(spec: ContextSpec) -> tuple[dict[str, bytes], dict[str, int], str]:
    """``files/NNNN`` entries, their modes, and the IMAGEKIT_FILES value listing them."""
    files, modes, lines = {}, {}, []
    for i, f in enumerate(spec.files):
        name = f"files/{i:04d}"
        files[name] = f.data
        modes[name] = f.mode
        lines.append(f"{i:04d} {f.mode:04o} {f.path}")
    return files, modes, "\n".join(lines)


@register(ContextScheme.OPENNEBULA)
def render(spec: ContextSpec) -> ContextMedium:
    if spec.network_config is not None:
        raise ContextError(
            "opennebula has no network-config file; pass ETH0_IP, ETH0_GATEWAY... with --var"
        )
    own: list[tuple[str, str]] = [("VMID", spec.instance_id)]
    if spec.hostname:
        own += [("SET_HOSTNAME", spec.hostname), ("HOSTNAME", spec.hostname)]
    if spec.ssh_keys:
        own.append(("SSH_PUBLIC_KEY", "\n".join(spec.ssh_keys)))
    if spec.user_data is not None:
        try:
            text = spec.user_data.decode("utf-8")
            if "\x00" in text:
                raise ValueError("NUL")
            own.append(("USER_DATA", text))
        except ValueError:  # binary (gzip): cloud-init's datasource decodes base64
            own.append(("USER_DATA", base64.b64encode(spec.user_data).decode()))
            own.append(("USERDATA_ENCODING", "base64"))
        script = spec.user_script
        if script is not None:
            own.append(("START_SCRIPT_BASE64", base64.b64encode(script).decode()))
    files, modes, listing = files_listing(spec)
    if listing:
        own.append(("IMAGEKIT_FILES", listing))
    if spec.swap_label:
        own.append(("IMAGEKIT_SWAP", spec.swap_label))
    pairs = merge_variables(own, spec.variables, "opennebula")
    context = sh_assignments(pairs, header="OpenNebula context, written by imagekit")
    return ContextMedium(LABEL, {"context.sh": context, **files}, modes)
