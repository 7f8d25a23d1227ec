"""StratusLab / HEPiX (label ``_STRATUSLAB``): ``context.sh``, ``init.sh``, ``prolog.sh``,
``epilog.sh``.

``context.sh`` holds ``KEY='value'`` lines: ``INSTANCE_ID``, ``HOSTNAME``, ``PUBLIC_KEY``
(keys, one a line), ``SCRIPT_EXEC`` (the user data when it is a ``#!`` script: its text),
``USER_DATA_BASE64`` (any user data), ``IMAGEKIT_FILES`` (``NNNN MODE DEST`` lines for the
files at ``files/NNNN``), ``IMAGEKIT_SWAP`` (the label of the swap disk) and the ``--var``
pairs. The guest runs ``sh init.sh`` from the mounted medium: it runs ``prolog.sh``,
installs the keys for ``CONTEXT_USER`` (default root), sets the host name, installs the
files, enables the swap disk, runs ``SCRIPT_EXEC`` once per instance id (marker in
/var/lib/imagekit-context), then runs ``epilog.sh``. No network config.
"""

from __future__ import annotations

import base64

from ._shell import merge_variables, sh_assignments
from ._spec import ContextError, ContextMedium, ContextScheme, ContextSpec, register
from .opennebula import files_listing

LABEL = "_STRATUSLAB"

INIT_SH = r"""#!/bin/sh
# StratusLab/HEPiX contextualization, written by imagekit.
# Run as root from the mounted medium: sh /path/to/medium/init.sh
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/context.sh"
state=/var/lib/imagekit-context
mkdir -p "$state"

[ -f "$here/prolog.sh" ] && sh "$here/prolog.sh"

user=${CONTEXT_USER:-root}
home=$(awk -F: -v u="$user" '$1 == u { print $6 }' /etc/passwd)
[ -n "$home" ] || home=/root
if [ -n "${PUBLIC_KEY:-}" ]; then
    mkdir -p "$home/.ssh"
    chmod 700 "$home/.ssh"
    touch "$home/.ssh/authorized_keys"
    printf '%s\n' "$PUBLIC_KEY" | while IFS= read -r key; do
        [ -n "$key" ] || continue
        grep -qxF "$key" "$home/.ssh/authorized_keys" ||
            printf '%s\n' "$key" >> "$home/.ssh/authorized_keys"
    done
    chmod 600 "$home/.ssh/authorized_keys"
    chown -R "$user" "$home/.ssh" 2>/dev/null || true
fi

if [ -n "${HOSTNAME:-}" ]; then
    printf '%s\n' "$HOSTNAME" > /etc/hostname
    hostname "$HOSTNAME" 2>/dev/null || true
fi

if [ -n "${IMAGEKIT_FILES:-}" ]; then
    printf '%s\n' "$IMAGEKIT_FILES" | while read -r n mode dest; do
        mkdir -p "$(dirname "$dest")"
        cp "$here/files/$n" "$dest" && chmod "$mode" "$dest"
    done
fi

if [ -n "${IMAGEKIT_SWAP:-}" ]; then
    swapon -L "$IMAGEKIT_SWAP" 2>/dev/null || swapon "$(blkid -L "$IMAGEKIT_SWAP")" || true
fi

marker="$state/script-done-${INSTANCE_ID:-none}"
if [ -n "${SCRIPT_EXEC:-}" ] && [ ! -e "$marker" ]; then
    printf '%s\n' "$SCRIPT_EXEC" > "$state/script"
    chmod 700 "$state/script"
    "$state/script"
    echo "$?" > "$marker"
fi

[ -f "$here/epilog.sh" ] && sh "$here/epilog.sh"
exit 0
"""

PROLOG_SH = "#!/bin/sh\n# Runs before init.sh applies the context. Empty by default.\n:\n"
EPILOG_SH = "#!/bin/sh\n# Runs after init.sh applied the context. Empty by default.\n:\n"


@register(ContextScheme.STRATUSLAB)
def render(spec: ContextSpec) -> ContextMedium:
    if spec.network_config is not None:
        raise ContextError("stratuslab has no network-config; pass variables with --var")
    own: list[tuple[str, str]] = [("INSTANCE_ID", spec.instance_id)]
    if spec.hostname:
        own.append(("HOSTNAME", spec.hostname))
    if spec.ssh_keys:
        own.append(("PUBLIC_KEY", "\n".join(spec.ssh_keys)))
    if spec.user_data is not None:
        script = spec.user_script
        if script is not None:
            try:
                own.append(("SCRIPT_EXEC", script.decode("utf-8").rstrip("\n")))
            except UnicodeDecodeError as e:
                raise ContextError("stratuslab: the user script must be UTF-8 text") from e
        own.append(("USER_DATA_BASE64", base64.b64encode(spec.user_data).decode()))
    files, modes, listing = files_listing(spec)
    if listing:
        own.append(("IMAGEKIT_FILES", listing))
    if spec.swap_label:
        own.append(("IMAGEKIT_SWAP", spec.swap_label))
    pairs = merge_variables(own, spec.variables, "stratuslab")
    context = sh_assignments(pairs, header="StratusLab/HEPiX context, written by imagekit")
    out = {
        "context.sh": context,
        "init.sh": INIT_SH.encode(),
        "prolog.sh": PROLOG_SH.encode(),
        "epilog.sh": EPILOG_SH.encode(),
        **files,
    }
    return ContextMedium(
        LABEL,
        out,
        {"init.sh": 0o755, "prolog.sh": 0o755, "epilog.sh": 0o755, "context.sh": 0o644, **modes},
    )
