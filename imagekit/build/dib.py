"""Run diskimage-builder's ``disk-image-create`` for the package layer.

On hosts without device-mapper (containers: no ``kpartx``, no ``dmsetup``), diskimage-builder's
partitioned images fail. imagekit puts three stand-ins of its own FIRST on the PATH of the
diskimage-builder process only (nothing on the host changes):

* ``kpartx``: ``partx -a`` on the loop device (the kernel's own ``/dev/loopNpM``), plus block
  nodes ``/dev/mapper/loopNpM`` with the same numbers, where diskimage-builder looks;
  ``kpartx -d`` removes them.
* ``dmsetup``: a no-op for ``mknodes`` (the nodes exist already); ``remove`` drops a node.
* ``sudo``: as root, runs the command directly with the environment kept, because the real
  sudo's ``secure_path`` would drop the two stand-ins above from PATH.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .._run import find_tool, run
from ..errors import CommandError
from .recipe import PartitionTable

DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
CLOUD_INIT_DATASOURCES = "NoCloud, ConfigDrive, OpenNebula"
DIB_TIMEOUT = 3600.0

_KPARTX = r"""#!/bin/sh
# imagekit stand-in for kpartx (no device-mapper here): partx on the loop device itself,
# plus /dev/mapper/loopNpM block nodes for the kernel's partitions, where DIB looks for them.
set -eu
mode=""; dev=""
for a in "$@"; do
  case "$a" in
    -*d*) mode=del;;
    -*) case "$a" in *a*|*u*) mode=add;; esac;;
    *) dev="$a";;
  esac
done
[ -n "$dev" ] || { echo "kpartx (imagekit stand-in): no device given" >&2; exit 2; }
name=$(basename "$dev")
case "$mode" in
  add)
    partx -d "$dev" >/dev/null 2>&1 || true
    partx -a "$dev"
    mkdir -p /dev/mapper
    for sys in /sys/class/block/"$name"/"$name"p*; do
      [ -e "$sys/dev" ] || continue
      part=$(basename "$sys"); mm=$(cat "$sys/dev")
      rm -f "/dev/mapper/$part"
      mknod "/dev/mapper/$part" b "${mm%%:*}" "${mm##*:}"
      echo "add map $part"
    done;;
  del)
    rm -f /dev/mapper/"$name"p*
    partx -d "$dev" || true;;
  *) echo "kpartx (imagekit stand-in): unsupported: $*" >&2; exit 2;;
esac
"""

_DMSETUP = r"""#!/bin/sh
# imagekit stand-in for dmsetup: the kpartx stand-in made the nodes; "remove" drops one.
case " $* " in
  *" remove "*) for last; do :; done; rm -f "/dev/mapper/$(basename "$last")";;
esac
exit 0
"""

_SUDO = r"""#!/bin/sh
# imagekit stand-in for sudo: as root, run directly and keep PATH (sudo's secure_path would
# drop the kpartx/dmsetup stand-ins). Anything but -E/-H/-n goes to the real sudo.
[ "$(id -u)" = 0 ] || exec /usr/bin/sudo "$@"
for a in "$@"; do
  case "$a" in -E|-H|-n|--preserve-env) ;; --) break;; -*) exec /usr/bin/sudo "$@";; *) break;; esac
done
while [ $# -gt 0 ]; do
  case "$1" in -E|-H|-n|--preserve-env) shift;; --) shift; break;; *) break;; esac
done
exec "$@"
"""

STAND_INS = {"kpartx": _KPARTX, "dmsetup": _DMSETUP, "sudo": _SUDO}


def write_stand_ins(directory: Path) -> Path:
    """Write the kpartx/dmsetup/sudo stand-ins into ``directory``; return it (for PATH)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in STAND_INS.items():
        path = directory / name
        path.write_text(text)
        path.chmod(0o755)
    return directory


def dib_bin() -> Path:
    """The directory holding ``disk-image-create`` (the venv's bin, next to this Python)."""
    here = Path(sys.executable).parent / "disk-image-create"
    if here.exists():
        return here.parent
    return Path(find_tool("disk-image-create")).parent


def base_elements(partition_table: PartitionTable) -> list[str]:
    """The stock elements of every imagekit distro image (the same list the bench times)."""
    return [
        "debian-minimal",
        f"block-device-{partition_table}",
        "bootloader",  # grub
        "cloud-init",
        "cloud-init-datasources",
        "openssh-server",
    ]


def dib_environment(
    *,
    release: str,
    image_cache: Path,
    tmp_dir: Path,
    element_paths: Sequence[Path] = (),
    stand_ins: Path | None = None,
    mirror: str = DEBIAN_MIRROR,
    cache_debootstrap: bool = True,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of one diskimage-builder run (on top of _run's allow-list)."""
    path = [str(dib_bin()), os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")]
    if stand_ins is not None:
        path.insert(0, str(stand_ins))  # first: ahead of any real kpartx/dmsetup/sudo
    env = {
        "PATH": ":".join(path),
        "DIB_RELEASE": release,
        "DIB_DISTRIBUTION_MIRROR": mirror,
        # The default security mirror (security.debian.org) is unreachable from build hosts
        # that only reach deb.debian.org; bookworm's security suite lives there too.
        "DIB_DEBIAN_SECURITY_MIRROR": DEBIAN_SECURITY_MIRROR,
        "DIB_CLOUD_INIT_DATASOURCES": CLOUD_INIT_DATASOURCES,
        "DIB_IMAGE_CACHE": str(image_cache),
        # DIB's own temp dir. TMPDIR leaks into the chroot's commands, so it must name a
        # directory that exists in the guest too: /tmp, whatever the caller's TMPDIR is.
        "TMP_DIR": str(tmp_dir),
        "TMPDIR": "/tmp",
        "ELEMENTS_PATH": ":".join(str(p) for p in element_paths),
    }
    if cache_debootstrap:
        # Keep the debootstrap result as a tarball in DIB_IMAGE_CACHE and reuse it.
        env["DIB_DEBOOTSTRAP_CACHE"] = "1"
        env["DIB_DEBIAN_USE_DEBOOTSTRAP_CACHE"] = "1"
    if extra:
        env.update(extra)
    return env


def run_dib(
    elements: Sequence[str],
    *,
    output: Path,
    image_type: str,
    size: int | None,
    env: Mapping[str, str],
    log_path: Path,
) -> Path:
    """Run ``disk-image-create``; its whole log goes to ``log_path``. Return the image path.

    Raises CommandError (with the log's last lines) when it fails.
    """
    argv = [str(dib_bin() / "disk-image-create")]
    argv += ["--no-tmpfs", "--logfile", str(log_path), "-t", image_type, "-o", str(output)]
    if size is not None:
        # --image-size is in GB (decimal point allowed); round up to whole MiB first.
        argv += ["--image-size", f"{-(-size // (1 << 20)) / 1024:.3f}"]
    argv += list(elements)
    try:
        run(argv, env=env, timeout=DIB_TIMEOUT)
    except CommandError as e:
        raise CommandError(e.argv[:1], e.returncode, _log_tail(log_path)) from e
    result = output.with_name(f"{output.name}.{image_type}")
    if not result.exists():
        raise CommandError(["disk-image-create"], 0, f"no image at {result}")
    return result


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    # The useful reason is usually just above DIB's own cleanup trace.
    interesting = [
        ln for ln in text if "error" in ln.lower() or ln.lstrip(" 0123456789-:.|").startswith("E:")
    ]
    return "\n".join((interesting or text)[-lines:])
